#!/bin/sh
# Build embed-app: embed_app.c linked with the interpreter's static
# libpython, whose deepfreeze.o and frozen.o are replaced by one pyfreeze-obj
# object freezing hello_app (this folder), click and rich (from the
# interpreter's venv) and the stdlib modules they import.
#
#   build.sh PYTHON OUTDIR
#
# PYTHON: the interpreter of the application's venv (CPython 3.11, 3.12 or
# 3.13 with its static archive, e.g. a pyenv build); pyfreeze-obj is
# $PYFREEZE_OBJ or the one on PATH. Writes OUTDIR/embed-app (and the object,
# the archive it is linked from and the flags its link needs).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
py=$1
out=$2
tool=${PYFREEZE_OBJ:-pyfreeze-obj}

eval "$("$py" -S -c '
import shlex, sys, sysconfig as s
v = lambda k: s.get_config_var(k) or ""
flags = " ".join(v(k) for k in ("LDFLAGS", "LINKFORSHARED", "LIBS", "SYSLIBS", "LOCALMODLIBS"))
for k, x in (("XY", "%d.%d" % sys.version_info[:2]), ("ARCHIVE", v("LIBPL") + "/" + v("LIBRARY")),
             ("INCLUDE", v("INCLUDEPY")), ("CC", v("LINKCC") or "cc"), ("HOST", v("HOST_GNU_TYPE")),
             ("FLAGS", flags)):
    print("%s=%s" % (k, shlex.quote(x)))
')"

# 1. the object: the archive's stock modules and the application's, lazily
#    initialized, with the module tables (it replaces frozen.o too), and the
#    flags the program's link needs for it (3.13: the --wrap options; an
#    empty line for 3.11/3.12)
"$tool" emit --python "$XY" --target "$HOST" --modules-from "$ARCHIVE" \
    --compile-with "$py" --lazy --frozen-tables \
    --path "$here" --freeze hello_app,click,rich -o "$out/app-frozen.o" \
    --link-flags "$out/link-flags"
# 2. the relinked static libpython (3.13's archive has no deepfreeze.o; ar
#    deletes what is there)
cp "$ARCHIVE" "$out/libpython-app.a"
chmod u+w "$out/libpython-app.a"
ar d "$out/libpython-app.a" deepfreeze.o frozen.o
ar rs "$out/libpython-app.a" "$out/app-frozen.o"
# 3. the program
$CC -c -O1 -Wall -I"$INCLUDE" "$here/embed_app.c" -o "$out/embed_app.o"
WRAP=$(cat "$out/link-flags")
# shellcheck disable=SC2086 # the build's flags, split as make would
$CC -o "$out/embed-app" "$out/embed_app.o" "$out/libpython-app.a" $FLAGS $WRAP
