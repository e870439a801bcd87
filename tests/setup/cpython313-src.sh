#!/usr/bin/env bash
# Prepare what tests/makefrag.rs needs to build CPython 3.13.5 with a plain
# `./configure && make`: the build dependencies (tests/setup/cpython-build.sh
# --no-cross installs them) and the source tree.
#
# The tree is upstream's, pristine: the orig tarball of Debian trixie's
# source package python3.13 3.13.5-2+deb13u5 (`apt-get source` with a
# trixie deb-src line, download only), checked against the .dsc's SHA-256,
# unpacked without Debian's patches. Why not the patched tree: the patches
# serve Debian's own build (debian/rules, its configure flags, multiarch
# sysconfig names, dist-packages); a plain ./configure && make of the
# patched tree is neither what Debian ships nor what a user building
# CPython from source has, and the runtime layout and frozen module set the
# fragment depends on come from upstream's sources either way.
#
# Cached under ${PYFREEZE_CACHE:-$HOME/.cache/pyfreeze-obj}/src313: the
# download beside the tree, the tree in upstream/Python-3.13.5.
# Idempotent: when the tree is there it makes no apt call. Prints the
# tree's path as its last line of stdout.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
log() { printf 'tests/setup/cpython313-src.sh: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

PKG=python3.13
VER=3.13.5-2+deb13u5
UP=3.13.5
cache="${PYFREEZE_CACHE:-$HOME/.cache/pyfreeze-obj}/src313"
tree="$cache/upstream/Python-$UP"
orig="$cache/${PKG}_$UP.orig.tar.xz"
dsc="$cache/${PKG}_${VER#*:}.dsc"

"$here/cpython-build.sh" --no-cross >/dev/null

if [ -f "$tree/.pyfreeze-complete" ]; then
    echo "$tree"
    exit 0
fi

mkdir -p "$cache"
if [ ! -f "$orig" ] || [ ! -f "$dsc" ]; then
    log "downloading $PKG=$VER (apt-get source --download-only, trixie deb-src)"
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    mkdir -p "$tmp/lists/partial"
    echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main" \
        >"$tmp/sources.list"
    apt_opts=(-o "Dir::Etc::sourcelist=$tmp/sources.list" -o "Dir::Etc::sourceparts=-"
        -o "Dir::State::Lists=$tmp/lists")
    apt-get "${apt_opts[@]}" update -qq >&2
    (cd "$cache" && apt-get "${apt_opts[@]}" source --download-only -qq "$PKG=$VER" >&2)
fi
[ -f "$orig" ] && [ -f "$dsc" ] || die "no $orig or $dsc after apt-get source"

# The .dsc's Checksums-Sha256 line for the orig tarball.
want="$(awk -v f="$(basename "$orig")" '/^Checksums-Sha256:/ {s=1; next} /^[^ ]/ {s=0} s && $3 == f {print $1}' "$dsc")"
got="$(sha256sum "$orig" | cut -d' ' -f1)"
[ -n "$want" ] || die "$dsc lists no SHA-256 for $(basename "$orig")"
[ "$want" = "$got" ] || die "$orig: SHA-256 $got, the .dsc says $want"

log "unpacking $(basename "$orig") (pristine upstream) into $cache/upstream"
rm -rf "$cache/upstream"
mkdir -p "$cache/upstream"
tar -xJf "$orig" -C "$cache/upstream"
[ -f "$tree/Makefile.pre.in" ] || die "no CPython tree at $tree after unpacking"
touch "$tree/.pyfreeze-complete"
echo "$tree"
