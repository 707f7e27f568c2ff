#!/bin/sh
# Runs in the image's build stage: gathers into OUT (default /out) the root filesystem of the
# final, FROM scratch stage: the stripped binary, the shared libraries it loads, both those
# ldd sees and those it dlopen()s at run time (libpq for PostgreSQL, libnats for the event
# bus; ldd on the binary misses them), the loader and its cache, the CA bundle (TLS clients),
# an /etc/passwd and /etc/group naming uid/gid 10001 microshop, and empty /data and /tmp owned
# by it. There is no shell, no package manager and no compiler in the result.
set -eu
bin=$1
out=${2:-/out}
ma=$(gcc -dumpmachine)
libdir=/usr/lib/$ma

mkdir -p "$out/usr/local/bin" "$out/etc/ssl/certs" "$out$libdir" "$out/data" "$out/tmp"
strip --strip-all -o "$out/usr/local/bin/microshop" "$bin"

# every library of the closures, once (by file name), resolved to the file, into one directory
for f in "$bin" "$libdir/libpq.so.5" "$libdir/libnats.so.3.4"; do
    ldd "$f"
    echo "$f" | grep -q '\.so' && echo "x => $f (0)"
done | awk '$2 == "=>" && $3 ~ /^\// { print "lib", $3 } $1 ~ /^\// { print "interp", $1 }' |
    sort -u | while read -r kind path; do
        if [ "$kind" = interp ]; then
            mkdir -p "$out$(dirname "$path")"
            cp -L "$path" "$out$path"
        else
            cp -L "$path" "$out$libdir/$(basename "$path")"
        fi
    done
# the loader finds the dlopen()ed names through its cache, as on the build host
echo "$libdir" >"$out/etc/ld.so.conf"
ldconfig -r "$out"
rm "$out/etc/ld.so.conf"

cp /etc/ssl/certs/ca-certificates.crt "$out/etc/ssl/certs/"
# names: files, then DNS (the compose and cluster DNS); libc's defaults put DNS first
echo "hosts: files dns" >"$out/etc/nsswitch.conf"
printf 'root:x:0:0:root:/:/nonexistent\nmicroshop:x:10001:10001:microshop:/data:/nonexistent\n' \
    >"$out/etc/passwd"
printf 'root:x:0:\nmicroshop:x:10001:\n' >"$out/etc/group"
chown 10001:10001 "$out/data" "$out/tmp"
chmod 1777 "$out/tmp"
chmod 0750 "$out/data"
