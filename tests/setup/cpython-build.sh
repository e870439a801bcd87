#!/usr/bin/env bash
# Prepare what tests/makefrag.rs and tests/bench/makefrag_step.py need to
# build CPython 3.11.2 from Debian's source package with a plain
# `./configure && make`, natively and cross for aarch64:
#
#   - the libraries a plain build uses for its extension modules (not the
#     whole `apt-get build-dep python3.11`): build-essential, libssl-dev,
#     zlib1g-dev, libffi-dev, libbz2-dev, liblzma-dev, libsqlite3-dev,
#     libreadline-dev, uuid-dev, libgdbm-dev, libgdbm-compat-dev,
#     libncurses-dev, libexpat1-dev, pkg-config, tk-dev (optional: tkinter)
#     and dpkg-dev (for `apt-get source`);
#   - the cross tools: tests/setup/arm64.sh when present (it also fetches
#     Debian's arm64 CPython for other tests), else gcc-aarch64-linux-gnu,
#     libc6-dev-arm64-cross and qemu-user;
#   - Debian's python3.11 (/usr/bin/python3.11, CPython 3.11.2): the cross
#     build's --with-build-python;
#   - the source tree itself, through source_tree() of
#     tests/bench/deepfreeze_vs_cpython.py (apt-get source python3.11 with a
#     deb-src line for bookworm, cached under
#     ${PYFREEZE_CACHE:-$HOME/.cache/pyfreeze-obj}/cpython-src).
#
# Idempotent: when everything is present it makes no apt call. Prints the
# source tree's path as its last line of stdout.
#
# Usage: tests/setup/cpython-build.sh [--no-cross]
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
log() { printf 'tests/setup/cpython-build.sh: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

cross=1
[ "${1:-}" = "--no-cross" ] && cross=0

sudo=()
[ "$(id -u)" -eq 0 ] || sudo=(sudo)
export DEBIAN_FRONTEND=noninteractive

installed() { # PKG -> 0 when dpkg has it installed
    dpkg-query -W -f='${Status}\n' "$1" 2>/dev/null | grep -q '^install ok installed$'
}

want=(build-essential pkg-config dpkg-dev python3.11
    libssl-dev zlib1g-dev libffi-dev libbz2-dev liblzma-dev libsqlite3-dev
    libreadline-dev uuid-dev libgdbm-dev libgdbm-compat-dev libncurses-dev
    libexpat1-dev tk-dev)
if [ "$cross" -eq 1 ] && [ ! -x "$here/arm64.sh" ]; then
    want+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user)
fi
missing=()
for p in "${want[@]}"; do
    installed "$p" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    log "installing ${missing[*]}"
    if ! "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2; then
        "${sudo[@]}" apt-get update -qq >&2
        "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
    fi
else
    log "build dependencies present"
fi
[ -x /usr/bin/python3.11 ] || die "/usr/bin/python3.11 (Debian's CPython 3.11.2) is missing"

if [ "$cross" -eq 1 ]; then
    if [ -x "$here/arm64.sh" ]; then
        "$here/arm64.sh" >/dev/null
    fi
    for t in aarch64-linux-gnu-gcc qemu-aarch64; do
        command -v "$t" >/dev/null 2>&1 || die "$t is missing after setup"
    done
    [ -e /usr/aarch64-linux-gnu/lib/ld-linux-aarch64.so.1 ] || die "the arm64 libc (/usr/aarch64-linux-gnu) is missing"
fi

# The source tree, as the benchmark gets it (one implementation).
src="$(cd "$root/tests/bench" && /usr/bin/python3.11 -c \
    'import deepfreeze_vs_cpython as b; print(b.source_tree())')"
[ -f "$src/Makefile.pre.in" ] || die "no CPython source tree at '$src'"
echo "$src"
