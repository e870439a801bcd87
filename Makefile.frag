# Makefile.frag -- build CPython 3.11/3.12's Python/deepfreeze/deepfreeze.o
# with pyfreeze-obj, straight from the frozen headers.
#
# CPython's own route runs Tools/scripts/deepfreeze.py (3.12:
# Tools/build/deepfreeze.py), which writes a 5.5 MB deepfreeze.c, and then
# compiles that file with the build's C compiler. With this fragment the
# object comes from one `pyfreeze-obj emit`: no deepfreeze.c is written and
# no deep-freeze C is compiled, in native and cross builds alike.
#
# Use: in a configured CPython 3.11 or 3.12 build directory, one step:
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
# Variables (set them on make's command line or in the Makefile before the
# include line):
#
#   PYFREEZE_OBJ      the tool. Default: `pyfreeze-obj` found on PATH, else
#                     target/release/pyfreeze-obj next to this fragment
#                     (`cargo build --release` in the pyfreeze-obj checkout).
#   PYFREEZE_FLAGS    extra `pyfreeze-obj emit` options and FILE:MODNAME
#                     inputs, appended to the command line. Empty by default.
#   PYFREEZE_TARGET   --target; default $(HOST_GNU_TYPE).
#   PYFREEZE_PYTHON   --python; default $(VERSION) (3.11 or 3.12).
#   PYFREEZE_MODULES  the FILE:MODNAME list; default derived from
#                     $(FROZEN_FILES_OUT) as described above.
#
# `make pyfreeze-obj-info` prints the effective settings and command.
#
# Needs GNU make (3.81 or later).

# Where this fragment lives (before any other makefile is read).
PYFREEZE_OBJ_HOME := $(patsubst %/,%,$(dir $(abspath $(lastword $(MAKEFILE_LIST)))))

ifeq ($(strip $(VERSION)$(FROZEN_FILES_OUT)),)
$(error pyfreeze-obj: Makefile.frag must be read after CPython's configured Makefile (append the include line to the Makefile, or use make -f Makefile -f Makefile.frag))
endif

ifneq ($(filter 3.11 3.12,$(VERSION)),)

ifneq ($(strip $(DEEPFREEZE_OBJS)),Python/deepfreeze/deepfreeze.o)
$(error pyfreeze-obj: this Makefile's DEEPFREEZE_OBJS is '$(DEEPFREEZE_OBJS)', expected Python/deepfreeze/deepfreeze.o; Makefile.frag does not know this CPython layout)
endif

# -- settings ------------------------------------------------------------------
ifeq ($(origin PYFREEZE_OBJ),undefined)
PYFREEZE_OBJ := $(shell command -v pyfreeze-obj 2>/dev/null)
ifeq ($(PYFREEZE_OBJ),)
PYFREEZE_OBJ := $(PYFREEZE_OBJ_HOME)/target/release/pyfreeze-obj
endif
endif
PYFREEZE_FLAGS ?=
PYFREEZE_TARGET ?= $(HOST_GNU_TYPE)
PYFREEZE_PYTHON ?= $(VERSION)
PYFREEZE_MODULES ?= $(foreach h,$(FROZEN_FILES_OUT),$(h):$(basename $(notdir $(h))))

PYFREEZE_OUT := Python/deepfreeze/deepfreeze.o
PYFREEZE_DEPFILE := Python/deepfreeze/deepfreeze.d
PYFREEZE_ARGSFILE := Python/deepfreeze/deepfreeze.args

# The tool as a file (a bare name is looked up on PATH), when it exists.
PYFREEZE_OBJ_EXE := $(firstword $(wildcard $(shell command -v '$(PYFREEZE_OBJ)' 2>/dev/null)))

PYFREEZE_CMD = $(PYFREEZE_OBJ) emit --python $(PYFREEZE_PYTHON) \
	--target $(PYFREEZE_TARGET) --depfile $(PYFREEZE_DEPFILE) \
	-o $(PYFREEZE_OUT) $(PYFREEZE_MODULES) $(PYFREEZE_FLAGS)

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
# An explicit rule: takes precedence over CPython's .c.o suffix rule, so
# deepfreeze.c is never needed.
$(PYFREEZE_OUT): $(FROZEN_FILES_OUT) $(PYFREEZE_OBJ_EXE) $(PYFREEZE_ARGSFILE)
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
	@echo 'command          = $(strip $(PYFREEZE_CMD))'

pyfreeze-obj-clean:
	-rm -f $(PYFREEZE_DEPFILE) $(PYFREEZE_ARGSFILE) $(PYFREEZE_ARGSFILE).tmp

# CPython's clean removes Python/deepfreeze/*.[co]; drop our files with it.
clean: pyfreeze-obj-clean

else
$(warning pyfreeze-obj: CPython $(VERSION) has no deep-freeze step (3.11 and 3.12 only); Makefile.frag changes nothing)
endif
