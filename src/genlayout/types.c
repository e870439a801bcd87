/* The types object for `pyfreeze-obj gen-layout --types-from` (a release
 * build's archive has no DWARF): compiled with -g from the headers
 * installed with the archive and the core's own flags, it describes the
 * structs gen-layout reads, and names the archive's variables it reads
 * (their definitions below only carry the headers' types into the DWARF;
 * the object is never linked). gen-layout checks each name against the
 * archive's symbols and the runtime's size against `_PyRuntime`'s.
 *
 *   V=3.14; CF=$(python$V -c "import sysconfig; print(sysconfig.get_config_var('PY_CORE_CFLAGS'))")
 *   gcc $CF -g -fno-eliminate-unused-debug-types -I/usr/include/python$V \
 *       -I/usr/include/python$V/internal -c types.c -o types$V.o
 *
 * PY_CORE_CFLAGS carries the build's configuration defines (Debian's
 * --enable-experimental-jit=yes-off: -D_Py_TIER2=3 -D_Py_JIT, which change
 * the interpreter's structs). */
#define Py_BUILD_CORE 1
#include "Python.h"
#include "internal/pycore_runtime.h"
#include "internal/pycore_interp.h"
#include "internal/pycore_code.h"
#include "internal/pycore_frame.h"
#include "internal/pycore_tuple.h"
#include "internal/pycore_long.h"
#include "internal/pycore_unicodeobject.h"
#include "internal/pycore_import.h"
#if __has_include("internal/pycore_interpframe.h")
#include "internal/pycore_interpframe.h"
#endif
#if __has_include("internal/pycore_optimizer.h")
#include "internal/pycore_optimizer.h"
#endif

/* pylifecycle.o: the runtime. */
_PyRuntimeState _PyRuntime;

/* frozen.o: the module tables in the order the layout lists them
 * (bootstrap, stdlib, test), the embedder's table, the aliases. */
const struct _frozen *_PyImport_FrozenBootstrap;
const struct _frozen *_PyImport_FrozenStdlib;
const struct _frozen *_PyImport_FrozenTest;
const struct _frozen *PyImport_FrozenModules;
const struct _module_alias *_PyImport_FrozenAliases;
