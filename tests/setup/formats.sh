#!/usr/bin/env bash
# Install what tests/formats.rs calls (REFERENCE.md section 4, "Windows COFF
# x86_64", "COFF aarch64", "Mach-O"):
#
#   ld64.lld-19 (or ld64.lld)      lld-19   links the Mach-O objects into dylibs
#   lld-link-19 (or lld-link)      lld-19   links the ARM64 COFF object into a DLL
#   llvm-objdump llvm-nm llvm-readobj  llvm
#   x86_64-w64-mingw32-gcc         gcc-mingw-w64-x86-64-win32  builds the harness
#   wine64                         wine64   runs it (~650 MB)
#
# Idempotent: when every tool is there it makes no apt call at all and
# finishes in well under a second; otherwise it installs the packages
# (`apt-get update` only if the install fails without it). Nothing already
# installed is upgraded.
set -euo pipefail

log() { printf 'tests/setup/formats.sh: %s\n' "$*" >&2; }

have() { command -v "$1" >/dev/null 2>&1; }
have_one() {
    local t
    for t in "$@"; do
        if [ "${t#/}" != "$t" ]; then
            [ -x "$t" ] && return 0
        else
            have "$t" && return 0
        fi
    done
    return 1
}

tools_ok() {
    have_one ld64.lld-19 ld64.lld &&
        have_one lld-link-19 lld-link &&
        have llvm-objdump && have llvm-nm && have llvm-readobj &&
        have x86_64-w64-mingw32-gcc &&
        have_one /usr/lib/wine/wine64 wine64 &&
        have_one /usr/lib/wine/wineserver wineserver
}

if tools_ok; then
    log "all tools present"
    exit 0
fi

pkgs=(lld lld-19 llvm gcc-mingw-w64-x86-64-win32 wine64)
sudo=()
[ "$(id -u)" -eq 0 ] || sudo=(sudo)
export DEBIAN_FRONTEND=noninteractive
log "installing ${pkgs[*]}"
if ! "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${pkgs[@]}"; then
    log "apt-get update"
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${pkgs[@]}"
fi
tools_ok || {
    log "error: still missing a tool after installing ${pkgs[*]}"
    exit 1
}
log "done"
