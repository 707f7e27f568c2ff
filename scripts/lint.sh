#!/usr/bin/env bash
# Style and static analysis, as CI runs them: clang-format (repo .clang-format) and cppcheck.
# cppcheck's varFuncNullUB is off: our variadic functions end with NULL, which glibc defines
# as ((void *)0), and the compiler checks each call through __attribute__((sentinel)).
set -euo pipefail
cd "$(dirname "$0")/.."
clang-format --dry-run --Werror $(git ls-files '*.c' '*.h')
echo "clang-format: clean"
cppcheck --quiet --error-exitcode=1 --enable=warning,performance,portability --inline-suppr \
    --suppress=varFuncNullUB --suppress=missingIncludeSystem -I src src
echo "cppcheck: clean"
