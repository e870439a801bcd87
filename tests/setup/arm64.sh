#!/usr/bin/env bash
# Prepare what tests/aarch64.rs needs (REFERENCE.md section 4, "aarch64
# Linux"): the cross toolchain, qemu-user, llvm-objdump, and Debian's arm64
# CPython 3.11 (static libpython3.11.a, python.o, stdlib, test suite) plus
# static expat and zlib and the libffi that ctypes needs, unpacked into a
# cache folder.
#
# The arm64 Python packages are only *downloaded* and unpacked with
# `dpkg-deb -x`, never installed: `apt-get install libpython3.11-dev:arm64`
# would upgrade the host's python3.11, which other tests use as a
# reference. The script checks that the host's python3.11 is unchanged.
#
# Idempotent: when everything is in place it makes no apt call at all and
# returns at once. Prints the unpacked folder's path as its last line of
# stdout; progress goes to stderr.
#
# Folder: ${PYFREEZE_CACHE:-$HOME/.cache/pyfreeze-obj}/arm64 (the .debs are
# kept next to it, in arm64-debs/).
set -euo pipefail

log() { printf 'tests/setup/arm64.sh: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

cache="${PYFREEZE_CACHE:-$HOME/.cache/pyfreeze-obj}"
root="$cache/arm64"
debs="$cache/arm64-debs"
stamp="$root/.complete"

# Files the tests use; all present (and the stamp written after a complete
# unpack) = nothing to do.
want_files=(
    "usr/lib/python3.11/config-3.11-aarch64-linux-gnu/libpython3.11.a"
    "usr/lib/python3.11/config-3.11-aarch64-linux-gnu/python.o"
    "usr/lib/aarch64-linux-gnu/libexpat.a"
    "usr/lib/aarch64-linux-gnu/libz.a"
    "usr/lib/aarch64-linux-gnu/libffi.so.8"
    "usr/lib/python3.11/os.py"
    "usr/lib/python3.11/encodings/__init__.py"
    "usr/lib/python3.11/test/test_frozen.py"
    "usr/lib/python3.11/test/test_code.py"
    "usr/lib/python3.11/test/libregrtest/main.py"
)
# Commands the tests call (binutils-aarch64-linux-gnu comes with the gcc).
want_tools=(aarch64-linux-gnu-gcc aarch64-linux-gnu-ar qemu-aarch64 llvm-objdump ar dpkg-deb)

tools_ok() {
    local t
    for t in "${want_tools[@]}"; do
        command -v "$t" >/dev/null 2>&1 || return 1
    done
    [ -e /usr/aarch64-linux-gnu/lib/ld-linux-aarch64.so.1 ] || return 1
    [ -e /usr/aarch64-linux-gnu/include/stdio.h ] || return 1
}

files_ok() {
    local f
    [ -e "$stamp" ] || return 1
    for f in "${want_files[@]}"; do
        [ -e "$root/$f" ] || return 1
    done
}

if tools_ok && files_ok; then
    log "already set up ($root)"
    echo "$root"
    exit 0
fi

host_python() { dpkg-query -W -f '${Version}' python3.11 2>/dev/null || echo none; }
host_before="$(host_python)"

sudo=()
[ "$(id -u)" -eq 0 ] || sudo=(sudo)
export DEBIAN_FRONTEND=noninteractive
updated=0
apt_update() {
    if [ "$updated" -eq 0 ]; then
        log "apt-get update"
        "${sudo[@]}" apt-get update -qq
        updated=1
    fi
}

# -- host packages ---------------------------------------------------------------
if ! tools_ok; then
    pkgs=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user llvm)
    log "installing ${pkgs[*]}"
    if ! "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${pkgs[@]}"; then
        apt_update
        "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${pkgs[@]}"
    fi
    tools_ok || die "still missing one of: ${want_tools[*]} or the arm64 libc (/usr/aarch64-linux-gnu)"
fi

# -- Debian's arm64 CPython, downloaded and unpacked ------------------------------
# The newest downloaded .deb of package NAME for arm64 (or all), at version
# VERSION when given.
pick_deb() {
    local f v a best="" best_v=""
    for f in "$debs/${1}_"*.deb; do
        [ -e "$f" ] || continue
        a="$(dpkg-deb -f "$f" Architecture)"
        [ "$a" = arm64 ] || [ "$a" = all ] || continue
        v="$(dpkg-deb -f "$f" Version)"
        if [ -n "$2" ] && [ "$v" != "$2" ]; then
            continue
        fi
        if [ -z "$best" ] || dpkg --compare-versions "$v" gt "$best_v"; then
            best="$f"
            best_v="$v"
        fi
    done
    printf '%s\n' "$best"
}

if ! files_ok; then
    if ! dpkg --print-foreign-architectures | grep -qx arm64; then
        log "dpkg --add-architecture arm64"
        "${sudo[@]}" dpkg --add-architecture arm64
        updated=0
    fi
    candidate() { # PKG -> candidate version, or nothing
        apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ { if ($2 != "(none)") print $2 }'
    }
    if [ -z "$(candidate libpython3.11-dev:arm64)" ]; then
        apt_update
    fi
    pyver="$(candidate libpython3.11-dev:arm64)"
    [ -n "$pyver" ] || die "apt knows no libpython3.11-dev:arm64 even after apt-get update"

    # All CPython packages at one version (the arm64 -dev package's
    # candidate); the test suite (test_frozen, test_code) is not in -stdlib.
    downloads=(
        "libpython3.11-dev:arm64=$pyver"
        "libpython3.11-stdlib:arm64=$pyver"
        "libpython3.11-minimal:arm64=$pyver"
        "libpython3.11-testsuite=$pyver"
        libexpat1-dev:arm64
        zlib1g-dev:arm64
        libexpat1:arm64
        zlib1g:arm64
        # ctypes (_ctypes in lib-dynload) needs libffi; without it
        # test_code's ctypes tests would be skipped.
        libffi8:arm64
    )
    mkdir -p "$debs"
    tmp="$(mktemp -d "$cache/arm64-dl.XXXXXX")"
    new=""
    trap 'rm -rf "$tmp" ${new:+"$new"}' EXIT
    log "apt-get download ${downloads[*]}"
    (cd "$tmp" && apt-get download -qq "${downloads[@]}") || {
        apt_update
        (cd "$tmp" && apt-get download -qq "${downloads[@]}")
    }
    mv -f "$tmp"/*.deb "$debs"/

    # Unpack into a fresh folder, then swap it in: a half-unpacked folder
    # never looks complete.
    new="$(mktemp -d "$cache/arm64-new.XXXXXX")"
    chmod 755 "$new"
    for d in "${downloads[@]}"; do
        name="${d%%=*}"
        name="${name%%:*}"
        ver=""
        case "$d" in *=*) ver="${d#*=}" ;; esac
        deb="$(pick_deb "$name" "$ver")"
        [ -n "$deb" ] || die "no downloaded .deb for $d in $debs"
        dpkg-deb -x "$deb" "$new"
        printf '%s %s\n' "$(dpkg-deb -f "$deb" Package)" "$(dpkg-deb -f "$deb" Version)" >>"$new/.packages"
    done
    rm -rf "$root"
    mv "$new" "$root"
    new=""
    for f in "${want_files[@]}"; do
        [ -e "$root/$f" ] || die "the unpacked packages lack $f"
    done
    cp "$root/.packages" "$stamp"
    log "unpacked into $root:"
    sed 's/^/  /' "$stamp" >&2
fi

host_after="$(host_python)"
[ "$host_before" = "$host_after" ] ||
    die "the host's python3.11 changed from $host_before to $host_after (it must not be upgraded)"
echo "$root"
