#!/usr/bin/env bash
# Style and static analysis, as CI runs them: clang-format (repo .clang-format), cppcheck,
# clang-tidy's static analyzer (repo .clang-tidy) over src/ with the release build's
# compile_commands.json (configured here when there is none), and shellcheck.
# cppcheck's varFuncNullUB is off: our variadic functions end with NULL, which glibc defines
# as ((void *)0), and the compiler checks each call through __attribute__((sentinel)).
set -euo pipefail
cd "$(dirname "$0")/.."
git ls-files -z '*.c' '*.h' | xargs -0 clang-format --dry-run --Werror
echo "clang-format: clean"
cppcheck --quiet --error-exitcode=1 --enable=warning,performance,portability --inline-suppr \
    --suppress=varFuncNullUB --suppress=missingIncludeSystem -I src src
echo "cppcheck: clean"
if [ ! -f build/compile_commands.json ]; then
    cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMS_TESTS=ON >/dev/null
fi
git ls-files 'src/*.c' | xargs -P"$(nproc)" -n4 clang-tidy -p build --quiet 2>/dev/null
echo "clang-tidy: clean"
# Every shell script, at warning level (style notes are left to taste).
git ls-files -z '*.sh' .ci/run | xargs -0 shellcheck -S warning
echo "shellcheck: clean"
