#!/bin/sh
# Run inside the Debian sid chroot by tests/py314.rs: link an interpreter (or
# an embedding program) from Debian's static libpython as CPython links its
# own (every member: extension modules such as _testinternalcapi and
# _interpreters need members nothing else references).
#
#   link.sh X.Y MAIN.o OUT [OBJ.o [LINK-FLAGS...]]
#
# With OBJ.o (our object): frozen.o is left out, OBJ.o and LINK-FLAGS (the
# contract's --wrap options) go in. Without: the stock link of the same
# archive. Debian's archive is not PIC (-no-pie), its LOCALMODLIBS carry
# backslashes (dropped), 3.15's needs -lzstd, and it lacks the HACL*
# objects its built-in _md5 _sha1 _sha2 _sha3 _blake2 _hmac modules call
# (Debian links them from its build tree): both links leave those modules
# out, with a config.c without them (hashlib uses OpenSSL's _hashlib).
set -eu
xy=$1 main=$2 out=$3
shift 3
obj=${1:-}
[ $# -gt 0 ] && shift
py=/usr/bin/python$xy
libpl=$($py -I -c 'import sysconfig; print(sysconfig.get_config_var("LIBPL"))')
lib=$($py -I -c 'import sysconfig; print(sysconfig.get_config_var("LIBRARY"))')
work=$(dirname "$out")/link-$(basename "$out")
rm -rf "$work"; mkdir -p "$work"
cp "$libpl/$lib" "$work/lib.a"
hacl="config.o md5module.o sha1module.o sha2module.o sha3module.o blake2module.o hmacmodule.o"
members=$(ar t "$work/lib.a")
drop=""
for m in $hacl ${obj:+frozen.o}; do
    if echo "$members" | grep -qx "$m"; then drop="$drop $m"; fi
done
ar d "$work/lib.a" $drop
grep -vE '(_blake2|_md5|_sha1|_sha2|_sha3|_hmac)\b' "$libpl/config.c" > "$work/config.c"
cflags=$($py -I -c 'import sysconfig; print(sysconfig.get_config_var("CFLAGS"))')
inc=$($py -I -c 'import sysconfig as s; print(s.get_path("include"), s.get_path("platinclude"))')
incs=""; for d in $inc; do incs="$incs -I$d"; done
gcc $cflags -DPy_BUILD_CORE $incs -c "$work/config.c" -o "$work/config.o"
flags=$($py -I -c 'import sysconfig as s; g = s.get_config_var
print(" ".join(g(k) or "" for k in ("LDFLAGS", "LINKFORSHARED")),
      " ".join((g(k) or "").replace(chr(92), " ") for k in ("LOCALMODLIBS", "LIBS", "SYSLIBS")))')
zstd=""
if nm "$work/lib.a" 2>/dev/null | grep -q ' U ZSTD_'; then zstd=-lzstd; fi
gcc -no-pie -o "$out" "$main" $obj "$work/config.o" \
    -Wl,--whole-archive "$work/lib.a" -Wl,--no-whole-archive "$@" $flags $zstd
