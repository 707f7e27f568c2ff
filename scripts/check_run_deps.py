#!/usr/bin/env python3
"""Proves that `make run` needs nothing beyond bootstrap's build set, on a machine where the
test set is installed too (CI runs `make test` first, which installs more than `make run` does).

1. The closure: bootstrap's build packages and, recursively, what they depend on.
2. A scratch configure and build of the `microshop` target with pkg-config limited to the .pc
   files of that closure (cmocka and every other test package hidden, MS_TESTS left at its
   default): it must configure, build no unit test, and succeed.
3. Every header the compiler read (from the build's .d files) and every shared library the
   binary loads (ldd), plus libpq, which the PostgreSQL backend dlopen()s, must belong to a
   package of the closure.
Prints one line per check; exits 1 naming what is outside the set."""
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def sh(*cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw).stdout


def installed():
    """name -> (depends groups, provides) for every installed package."""
    out = sh("dpkg-query", "-W", "-f=${Package}\t${Status}\t${Depends}, ${Pre-Depends}\t${Provides}\n")
    pkgs = {}
    for line in out.splitlines():
        name, status, deps, provides = line.split("\t")
        if not status.endswith("installed") or "not-installed" in status:
            continue
        groups = [[re.split(r"[ (:]", alt.strip())[0] for alt in g.split("|")]
                  for g in deps.split(",") if g.strip()]
        pkgs[name] = (groups, [re.split(r"[ (]", p.strip())[0] for p in provides.split(",")
                               if p.strip()])
    return pkgs


def closure(roots, pkgs):
    providers = {}
    for name, (_, provides) in pkgs.items():
        for p in provides:
            providers.setdefault(p, []).append(name)
    seen, todo = set(), list(roots)
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        if p not in pkgs:
            sys.exit(f"check_run_deps: build package {p} is not installed")
        seen.add(p)
        for group in pkgs[p][0]:
            for alt in group:  # the first alternative present is the one apt would keep
                hit = [alt] if alt in pkgs else providers.get(alt, [])
                if hit:
                    todo.extend(hit[:1])
                    break
    return seen


def owners(paths):
    """path -> package, through dpkg -S on the real file (symlinks resolved both ways)."""
    result = {}
    for path in paths:
        for candidate in (path, os.path.realpath(path)):
            r = subprocess.run(["dpkg", "-S", candidate], capture_output=True, text=True)
            if r.returncode == 0:
                result[path] = [x.split(":")[0] for x in r.stdout.split(": ")[0].split(", ")]
                break
        else:
            result[path] = []
    return result


def main():
    build_set = sh("bash", os.path.join(ROOT, "scripts/bootstrap.sh"), "--list").split()
    pkgs = installed()
    allowed = closure(build_set, pkgs)
    print(f"build set: {len(build_set)} packages, {len(allowed)} with their dependencies")

    pc_dir = tempfile.mkdtemp(prefix="microshop-pc.")
    scratch = tempfile.mkdtemp(prefix="microshop-runbuild.")
    try:
        for p in allowed:
            for f in sh("dpkg", "-L", p).splitlines():
                if f.endswith(".pc") and os.path.isfile(f):
                    dst = os.path.join(pc_dir, os.path.basename(f))
                    if not os.path.exists(dst):
                        os.symlink(f, dst)
        env = dict(os.environ, PKG_CONFIG_LIBDIR=pc_dir, PKG_CONFIG_PATH="")
        r = subprocess.run(["cmake", "-S", ROOT, "-B", scratch, "-DCMAKE_BUILD_TYPE=RelWithDebInfo"],
                           env=env, capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit("check_run_deps: configure fails with only the build set:\n" + r.stdout + r.stderr)
        r = subprocess.run(["cmake", "--build", scratch, "--target", "microshop", "-j",
                            str(os.cpu_count() or 2)], env=env, capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit("check_run_deps: build fails with only the build set:\n" + r.stdout[-4000:] + r.stderr)
        tests = [t for t in sh("cmake", "--build", scratch, "--target", "help").split()
                 if t.startswith("test_")]
        if tests:
            sys.exit(f"check_run_deps: unit tests configured without cmocka: {tests[:3]}")
        print("configure and build with only the build set's pkg-config files: ok, no unit tests")

        headers = set()
        for d in glob.glob(os.path.join(scratch, "**", "*.o.d"), recursive=True):
            with open(d) as f:
                for tok in f.read().replace("\\\n", " ").split():
                    if tok.startswith("/") and not tok.startswith((ROOT, scratch)):
                        headers.add(os.path.normpath(tok))
        libs = set(re.findall(r"=> (/\S+)", sh("ldd", os.path.join(scratch, "microshop"))))
        libpq = sh("pkg-config", "--variable=libdir", "libpq", env=env).strip() + "/libpq.so.5"
        libs.add(libpq)
        outside = {path: who for path, who in owners(headers | libs).items()
                   if not set(who) & allowed}
        if outside:
            for path, who in sorted(outside.items()):
                print(f"  {path}: {', '.join(who) or 'no package'}")
            sys.exit(f"check_run_deps: {len(outside)} files the run build uses are outside "
                     "bootstrap's build set (add their packages to build_pkgs)")
        print(f"{len(headers)} headers and {len(libs)} shared libraries, all from the build set: ok")
    finally:
        shutil.rmtree(pc_dir, ignore_errors=True)
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
