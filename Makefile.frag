# Makefile.frag -- deep-frozen modules in a CPython 3.11, 3.12 or 3.13
# source build, written by pyfreeze-obj instead of compiled.
#
# 3.11/3.12: CPython's own route runs Tools/scripts/deepfreeze.py (3.12:
# Tools/build/deepfreeze.py), which writes a 5.5 MB deepfreeze.c, and then
# compiles that file with the build's C compiler. With this fragment
# Python/deepfreeze/deepfreeze.o comes from one `pyfreeze-obj emit`,
# straight from the frozen headers: no deepfreeze.c is written and no
# deep-freeze C is compiled, in native and cross builds alike.
#
# 3.13: CPython removed deep-freezing; every frozen module is unmarshalled
# from frozen.o's bytes at each start. With this fragment the interpreter
# (`python`, and nothing else) is linked with an object that replaces
# Python/frozen.o: the same module tables, plus static code objects that
# the runtime's loads of those bytes return (through the link flag
# --wrap=PyMarshal_ReadObjectFromString, and --wrap=_PyCode_Fini for the
# teardown). See "CPython 3.13" below.
#
# Use: in a configured CPython 3.11, 3.12 or 3.13 build directory, one step:
#
#     echo 'include /path/to/pyfreeze-obj/Makefile.frag' >> Makefile
#     make -j2
#
# (or, without touching the Makefile, `make -f Makefile -f /path/Makefile.frag`
# -- but then every make call, including `make test` and `make install`,
# needs both -f options, and CPython's recursive makes (PGO builds) do not
# get them). The include has to come after CPython's own Makefile: the
# fragment reads its variables. Re-running configure, or anything that
# regenerates the Makefile (an edit of Modules/Setup*), drops the line.
#
# CPython 3.11 and 3.12
# ---------------------
# What it changes: it gives Python/deepfreeze/deepfreeze.o an explicit rule.
# CPython builds that object with its generic .c.o suffix rule from
# deepfreeze.c, so an explicit rule takes precedence without redefining any
# recipe (GNU make prints no "overriding recipe" warning); CPython's rule
# for deepfreeze.c stays in the Makefile but nothing asks for it any more.
#
# The module list is derived from CPython's own FROZEN_FILES_OUT: CPython's
# Tools/*/freeze_modules.py writes that list and the deepfreeze.c recipe's
# FILE:MODNAME arguments from the same module set, with the header of
# module M named Python/frozen_modules/M.h. The target triple is the
# build's own host (configure's $(HOST_GNU_TYPE), e.g. x86_64-pc-linux-gnu,
# or aarch64-unknown-linux-gnu for --host=aarch64-linux-gnu), so a cross
# build needs nothing extra.
#
# Rebuilds: the object depends on the frozen headers, on the pyfreeze-obj
# binary, and on the emit command line (recorded in
# Python/deepfreeze/deepfreeze.args, rewritten only when it changes), and
# `pyfreeze-obj emit --depfile` writes Python/deepfreeze/deepfreeze.d, which
# is included below: make re-runs the emit exactly when one of them changes
# (or one of CPython's $(PYTHON_HEADERS), which CPython's Makefile makes a
# prerequisite of every library object).
#
# CPython 3.13
# ------------
# What it changes: only the link of $(BUILDPYTHON). The fragment adds an
# object, Python/frozen-pyfreeze.o, emitted from the build's own static
# library ($(LIBRARY), libpython3.13.a: its frozen.o holds the module
# tables and every module's marshal bytes, which the frozen headers do not
# say in table form), and, for that one link only (GNU make's target-
# specific `private` variables, not inherited by prerequisites):
#   - LINK_PYTHON_OBJS is $(LIBRARY_OBJS) with Python/frozen.o replaced by
#     Python/frozen-pyfreeze.o;
#   - LDFLAGS_NODIST gets the link flags the object needs, as the emit
#     writes them to Python/frozen-pyfreeze.ldflags (`pyfreeze-obj emit
#     -v` prints them too): -Wl,--wrap=PyMarshal_ReadObjectFromString,
#     --wrap=_PyCode_Fini.
# Nothing else sees them: not the LDFLAGS, LDSHARED or PY_CORE_LDFLAGS that
# sysconfig records from the Makefile (extension modules, built here or
# later, link as they always do; one that called the runtime's
# PyMarshal_ReadObjectFromString through a wrapped link would need the
# interpreter's hidden __wrap_ symbol), not _bootstrap_python,
# Programs/_freeze_module or Programs/_testembed (which keeps the stock
# frozen.o), and not libpython3.13.a, which stays CPython's (installed as
# built: embedders link it as usual).
#
# The layout: the tool's 3.13 table comes from one release (3.13.0). The
# emit checks the build against it, and where another release lays the
# runtime out otherwise (3.13.5 does), reads the layout from the library's
# own debug info -- CPython compiles with -g unless told otherwise -- with
# ./pyfreeze-probe-python for the probes (this build's interpreter, linked
# as CPython links python but stock; ./_bootstrap_python cannot serve: it
# runs script files only and has no _opcode module) and $(srcdir)/Include
# for the headers. A build without -g whose layout is not the table's is
# refused, saying so.
#
# Rebuilds: the object depends on $(LIBRARY) (which CPython rebuilds when
# frozen.o does, i.e. when a frozen header does, i.e. when its Lib/*.py
# does), on the probe interpreter, on the pyfreeze-obj binary and on the
# emit command line (Python/frozen-pyfreeze.args), and on what its depfile
# lists;
# $(BUILDPYTHON) depends on it. So an edit of Lib/os.py re-freezes os.h,
# rebuilds frozen.o and the library, re-runs the emit and relinks python.
#
# Shared-library builds (--enable-shared) are refused: there the runtime's
# calls of PyMarshal_ReadObjectFromString are resolved inside
# libpython3.13.so, which python's link cannot wrap, and the object would
# have to go into the shared library itself (whose every embedder would then
# need the flags). Configure without --enable-shared, or drop the include.
#
# Cross builds: the target is $(HOST_GNU_TYPE) as above; no probe
# interpreter by default (the target's cannot run here), which is enough
# when the tool's table fits the release; otherwise set PYFREEZE_INTERP to
# an interpreter of the very release being built (the --with-build-python,
# if it is). Untested.
#
# Variables (set them on make's command line or in the Makefile before the
# include line):
#
#   PYFREEZE_OBJ      the tool. Default: `pyfreeze-obj` found on PATH, else
#                     target/release/pyfreeze-obj next to this fragment
#                     (`cargo build --release` in the pyfreeze-obj checkout).
#   PYFREEZE_FLAGS    extra `pyfreeze-obj emit` options and FILE:MODNAME
#                     inputs, appended to the command line. Empty by default.
#   PYFREEZE_TARGET   --target; default $(HOST_GNU_TYPE).
#   PYFREEZE_PYTHON   --python; default $(VERSION) (3.11, 3.12 or 3.13).
#   PYFREEZE_MODULES  3.11/3.12: the FILE:MODNAME list; default derived from
#                     $(FROZEN_FILES_OUT) as described above.
#   PYFREEZE_INTERP   3.13: --compile-with, the interpreter whose probes read
#                     the layout; default ./pyfreeze-probe-python (linked by
#                     the fragment; none in cross builds).
#   PYFREEZE_INCLUDE  3.13: --include, the build's headers; default
#                     $(srcdir)/Include.
#
# `make pyfreeze-obj-info` prints the effective settings and command.
#
# Needs GNU make (3.82 or later: `private` target-specific variables).

# Where this fragment lives (before any other makefile is read).
PYFREEZE_OBJ_HOME := $(patsubst %/,%,$(dir $(abspath $(lastword $(MAKEFILE_LIST)))))

ifeq ($(strip $(VERSION)$(FROZEN_FILES_OUT)),)
$(error pyfreeze-obj: Makefile.frag must be read after CPython's configured Makefile (append the include line to the Makefile, or use make -f Makefile -f Makefile.frag))
endif

ifneq ($(filter 3.11 3.12 3.13,$(VERSION)),)

# -- settings (all versions) -----------------------------------------------------
ifeq ($(origin PYFREEZE_OBJ),undefined)
PYFREEZE_OBJ := $(shell command -v pyfreeze-obj 2>/dev/null)
ifeq ($(PYFREEZE_OBJ),)
PYFREEZE_OBJ := $(PYFREEZE_OBJ_HOME)/target/release/pyfreeze-obj
endif
endif
PYFREEZE_FLAGS ?=
PYFREEZE_TARGET ?= $(HOST_GNU_TYPE)
PYFREEZE_PYTHON ?= $(VERSION)

# The tool as a file (a bare name is looked up on PATH), when it exists.
PYFREEZE_OBJ_EXE := $(firstword $(wildcard $(shell command -v '$(PYFREEZE_OBJ)' 2>/dev/null)))

ifneq ($(filter 3.11 3.12,$(VERSION)),)

ifneq ($(strip $(DEEPFREEZE_OBJS)),Python/deepfreeze/deepfreeze.o)
$(error pyfreeze-obj: this Makefile's DEEPFREEZE_OBJS is '$(DEEPFREEZE_OBJS)', expected Python/deepfreeze/deepfreeze.o; Makefile.frag does not know this CPython layout)
endif

PYFREEZE_MODULES ?= $(foreach h,$(FROZEN_FILES_OUT),$(h):$(basename $(notdir $(h))))

PYFREEZE_OUT := Python/deepfreeze/deepfreeze.o
PYFREEZE_DEPFILE := Python/deepfreeze/deepfreeze.d
PYFREEZE_ARGSFILE := Python/deepfreeze/deepfreeze.args

PYFREEZE_CMD = $(PYFREEZE_OBJ) emit --python $(PYFREEZE_PYTHON) \
	--target $(PYFREEZE_TARGET) --depfile $(PYFREEZE_DEPFILE) \
	-o $(PYFREEZE_OUT) $(PYFREEZE_MODULES) $(PYFREEZE_FLAGS)

# What the object is made from (besides the depfile's list).
PYFREEZE_INPUTS = $(FROZEN_FILES_OUT)

else # 3.13

ifneq ($(strip $(PY_ENABLE_SHARED)),0)
$(error pyfreeze-obj: this CPython 3.13 build is configured with --enable-shared: the runtime loads its frozen modules inside libpython$(VERSION).so, which the interpreter's link cannot wrap; Makefile.frag supports static builds only (configure without --enable-shared, or remove the include line))
endif
ifeq ($(filter Python/frozen.o,$(LIBRARY_OBJS)),)
$(error pyfreeze-obj: this Makefile's LIBRARY_OBJS has no Python/frozen.o; Makefile.frag does not know this CPython layout)
endif
ifneq ($(strip $(LINK_PYTHON_OBJS)),$(strip $(LIBRARY_OBJS)))
$(error pyfreeze-obj: this Makefile links $(BUILDPYTHON) from '$(LINK_PYTHON_OBJS)', not from $$(LIBRARY_OBJS); Makefile.frag does not know this CPython layout)
endif

PYFREEZE_INCLUDE ?= $(srcdir)/Include

# The interpreter for the probes that read the layout: this build's own,
# linked as CPython links $(BUILDPYTHON) (stock frozen.o, no flags), as
# ./pyfreeze-probe-python. In a first build nothing has run `python -m
# sysconfig --generate-posix-vars` or linked the shared _opcode module into
# the build's lib folder yet (both come after $(BUILDPYTHON)), and the
# probes need them (sysconfig, opcode): the recipe does what CPython's
# pybuilddir.txt and sharedmods recipes will do again after the link (same
# command, same files), when they are missing. A cross build cannot run
# the target's interpreter: no probe interpreter unless PYFREEZE_INTERP is
# set (the --with-build-python, if it is the very release being built).
ifeq ($(origin PYFREEZE_INTERP),undefined)
ifeq ($(strip $(PYTHON_FOR_BUILD_DEPS)),$(BUILDPYTHON))
PYFREEZE_INTERP := ./pyfreeze-probe-python
PYFREEZE_PROBE := pyfreeze-probe-python
endif
endif
# _opcode, where it is a shared module (not built in).
PYFREEZE_OPCODE := $(filter Modules/_opcode$(EXT_SUFFIX),$(SHAREDMODS))

ifneq ($(PYFREEZE_PROBE),)
$(PYFREEZE_PROBE): Programs/python.o $(LINK_PYTHON_DEPS) $(PYFREEZE_OPCODE)
	$(LINKCC) $(PY_CORE_LDFLAGS) $(LINKFORSHARED) -o $@ Programs/python.o $(LIBRARY_OBJS) $(LIBS) $(MODLIBS) $(SYSLIBS)
	@test -s pybuilddir.txt || { \
		echo "none" > pybuilddir.txt && \
		$(RUNSHARED) ./$@ -E -S -m sysconfig --generate-posix-vars || \
		{ rm -f pybuilddir.txt; exit 1; }; }
	$(if $(PYFREEZE_OPCODE),@target=`cat pybuilddir.txt` && $(MKDIR_P) $$target && \
		{ test -e $$target/`basename $(PYFREEZE_OPCODE)` || \
		  $(LN) -sf ../../$(PYFREEZE_OPCODE) $$target/`basename $(PYFREEZE_OPCODE)`; })
endif

PYFREEZE_OUT := Python/frozen-pyfreeze.o
PYFREEZE_DEPFILE := Python/frozen-pyfreeze.d
PYFREEZE_ARGSFILE := Python/frozen-pyfreeze.args
PYFREEZE_LDFLAGSFILE := Python/frozen-pyfreeze.ldflags

PYFREEZE_CMD = $(PYFREEZE_OBJ) emit --python $(PYFREEZE_PYTHON) \
	--target $(PYFREEZE_TARGET) --modules-from $(LIBRARY) \
	$(if $(strip $(PYFREEZE_INTERP)),--compile-with $(PYFREEZE_INTERP)) \
	--include $(PYFREEZE_INCLUDE) --depfile $(PYFREEZE_DEPFILE) \
	--link-flags $(PYFREEZE_LDFLAGSFILE) -o $(PYFREEZE_OUT) $(PYFREEZE_FLAGS)

PYFREEZE_INPUTS = $(LIBRARY) $(PYFREEZE_PROBE)

# The interpreter's link, and only it: our object instead of frozen.o, and
# the flags it needs (read when the link runs, after the emit wrote them).
# `private`: not inherited by the prerequisites make builds for it.
$(BUILDPYTHON): $(PYFREEZE_OUT)
$(BUILDPYTHON): private LINK_PYTHON_OBJS = $(filter-out Python/frozen.o,$(LIBRARY_OBJS)) $(PYFREEZE_OUT)
$(BUILDPYTHON): private LDFLAGS_NODIST += $(shell cat $(PYFREEZE_LDFLAGSFILE) 2>/dev/null)

endif # 3.13

# Record the command line; rewrite the file only when it changed, so that a
# new flag, target or module list re-runs the emit and nothing else does.
pyfreeze_quote = '$(subst ','\'',$(1))'
pyfreeze_args_status := $(shell mkdir -p $(dir $(PYFREEZE_ARGSFILE)) && \
	printf '%s\n' $(call pyfreeze_quote,$(strip $(PYFREEZE_CMD))) > $(PYFREEZE_ARGSFILE).tmp && \
	{ cmp -s $(PYFREEZE_ARGSFILE).tmp $(PYFREEZE_ARGSFILE) && rm -f $(PYFREEZE_ARGSFILE).tmp || \
	  mv -f $(PYFREEZE_ARGSFILE).tmp $(PYFREEZE_ARGSFILE); } && echo ok)
ifneq ($(pyfreeze_args_status),ok)
$(warning pyfreeze-obj: could not write $(PYFREEZE_ARGSFILE))
endif

# -- the rule --------------------------------------------------------------------
# 3.11/3.12: an explicit rule takes precedence over CPython's .c.o suffix
# rule, so deepfreeze.c is never needed. 3.13: a new object of our own.
$(PYFREEZE_OUT): $(PYFREEZE_INPUTS) $(PYFREEZE_OBJ_EXE) $(PYFREEZE_ARGSFILE)
	$(if $(PYFREEZE_OBJ_EXE),,$(error pyfreeze-obj: tool '$(PYFREEZE_OBJ)' not found: put pyfreeze-obj on PATH, run `cargo build --release` in $(PYFREEZE_OBJ_HOME), or set PYFREEZE_OBJ=/path/to/pyfreeze-obj))
	@mkdir -p $(@D)
	$(PYFREEZE_CMD)

# Written by the emit above (like gcc -MD -MP): the inputs it read and the
# tool binary, with an empty rule for each.
-include $(PYFREEZE_DEPFILE)

$(PYFREEZE_ARGSFILE):
	@:

.PHONY: pyfreeze-obj-info pyfreeze-obj-clean
pyfreeze-obj-info:
	@echo 'PYFREEZE_OBJ     = $(PYFREEZE_OBJ)'
	@echo 'tool file        = $(or $(PYFREEZE_OBJ_EXE),(not found))'
	@echo 'PYFREEZE_TARGET  = $(PYFREEZE_TARGET)'
	@echo 'PYFREEZE_PYTHON  = $(PYFREEZE_PYTHON)'
	@echo 'PYFREEZE_FLAGS   = $(PYFREEZE_FLAGS)'
	@echo 'PYFREEZE_MODULES = $(PYFREEZE_MODULES)'
	@echo 'PYFREEZE_INTERP  = $(PYFREEZE_INTERP)'
	@echo 'PYFREEZE_INCLUDE = $(PYFREEZE_INCLUDE)'
	@echo 'command          = $(strip $(PYFREEZE_CMD))'

pyfreeze-obj-clean:
	-rm -f $(PYFREEZE_OUT) $(PYFREEZE_DEPFILE) $(PYFREEZE_ARGSFILE) $(PYFREEZE_ARGSFILE).tmp $(PYFREEZE_LDFLAGSFILE) $(PYFREEZE_PROBE)

# CPython's clean removes the objects; drop our files with it.
clean: pyfreeze-obj-clean

else
$(warning pyfreeze-obj: CPython $(VERSION) is not one Makefile.frag knows (3.11, 3.12 and 3.13 only); Makefile.frag changes nothing)
endif
