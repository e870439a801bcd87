#!/usr/bin/env bash
# Prepare the Debian sid chroot that holds CPython 3.14 and 3.15
# (REFERENCE-3.13-3.15.md section 1): their static archives need glibc
# >= 2.38, so tests link and run them inside the chroot, never on the host.
#
#   1. debootstrap --variant=minbase sid, from the Debian mirror the host's
#      apt uses (debootstrap is apt-get installed on the host when missing);
#   2. apt-get install of PACKAGES (below) inside the chroot.
#
# Idempotent: when the stamp file ($root/.pyfreeze-obj-packages) holds
# exactly PACKAGES, it makes no apt call and returns at once. A changed
# list re-runs step 2 (apt-get update + install into the existing chroot:
# packages are added, never removed, and the chroot is never deleted, since
# other test binaries may be running inside it). Parallel callers are
# serialized by flock on $cache/sid.lock.
#
# No mount outlives the script: every command inside the chroot runs in its
# own mount namespace (unshare --mount) with a private /proc; /dev is never
# bind-mounted (debootstrap creates the device nodes apt needs).
#
# Prints the chroot's path as its last line of stdout; progress goes to
# stderr. Any failure exits non-zero with a message.
#
# Folder: ${PYFREEZE_CACHE:-$HOME/.cache/pyfreeze-obj}/sid
set -euo pipefail

log() { printf 'tests/setup/sid.sh: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

cache="${PYFREEZE_CACHE:-$HOME/.cache/pyfreeze-obj}"
root="$cache/sid"
stamp="$root/.pyfreeze-obj-packages"
lock="$cache/sid.lock"

# What the tests use: the two interpreters, their static archives and
# python.o (-dev), their test suites (regrtest runs inside), the debug
# builds (-dbg), a linker, valgrind for the start-up benchmark, and zstd
# (3.15's _zstd is built in).
PACKAGES="binutils gcc libc6-dev libzstd-dev valgrind
python3.14 libpython3.14-dev libpython3.14-testsuite libpython3.14-dbg
python3.15 libpython3.15-dev libpython3.15-testsuite libpython3.15-dbg"
want="$(printf '%s\n' $PACKAGES | sort -u)"

# Files whose absence means the chroot is not usable even with a stamp.
want_files=(
    usr/bin/python3.14
    usr/bin/python3.15
    usr/bin/gcc
    usr/bin/valgrind
    usr/lib/python3.14/config-3.14-x86_64-linux-gnu/libpython3.14.a
    usr/lib/python3.14/config-3.14-x86_64-linux-gnu/python.o
    usr/lib/python3.15/config-3.15-x86_64-linux-gnu/libpython3.15.a
    usr/lib/python3.15/config-3.15-x86_64-linux-gnu/python.o
    usr/lib/python3.14/test/test_frozen.py
    usr/lib/python3.15/test/test_frozen.py
    usr/lib/python3.14/test/libregrtest/main.py
    usr/lib/python3.15/test/libregrtest/main.py
)

ready() {
    local f
    [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] || return 1
    for f in "${want_files[@]}"; do
        [ -e "$root/$f" ] || return 1
    done
}

[ "$(uname -m)" = x86_64 ] || die "the sid chroot is x86_64 only (this machine is $(uname -m))"

if ready; then
    log "already set up ($root)"
    echo "$root"
    exit 0
fi

[ "$(id -u)" -eq 0 ] || die "building the chroot needs root (debootstrap, chroot, unshare); run as root once"
command -v unshare >/dev/null 2>&1 || die "unshare (util-linux) is missing"
command -v flock >/dev/null 2>&1 || die "flock (util-linux) is missing"

mkdir -p "$cache"
exec 9>"$lock"
log "waiting for $lock"
flock 9
# Another caller may have finished while we waited.
if ready; then
    log "already set up ($root)"
    echo "$root"
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive

# `in_chroot DIR CMD...`: CMD inside DIR, with a private /proc that goes
# away with the namespace, and an environment of its own.
in_chroot() {
    local dir="$1"
    shift
    unshare --mount --fork -- sh -c '
        d="$1"; shift
        mount -t proc proc "$d/proc" || exit 111
        # a private pty instance for apt-get/dpkg (not a bind of /dev)
        mount -t devpts -o newinstance,ptmxmode=0666 devpts "$d/dev/pts" 2>/dev/null || :
        exec chroot "$d" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
            DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 "$@"
    ' sh "$dir" "$@"
}

# -- 1. the base system ------------------------------------------------------------
if [ ! -x "$root/usr/bin/apt-get" ] || [ ! -x "$root/usr/bin/dpkg" ]; then
    [ ! -e "$root" ] || [ -z "$(ls -A "$root" 2>/dev/null)" ] ||
        die "$root exists but holds no base system (no usr/bin/apt-get); move it away and re-run (it is not deleted automatically)"
    if ! command -v debootstrap >/dev/null 2>&1; then
        log "installing debootstrap on the host"
        apt-get install -y -qq --no-install-recommends debootstrap >&2 || {
            apt-get update -qq >&2
            apt-get install -y -qq --no-install-recommends debootstrap >&2
        }
        command -v debootstrap >/dev/null 2>&1 || die "debootstrap is still missing after apt-get install"
    fi
    mirror=""
    if [ -f /etc/apt/sources.list.d/debian.sources ]; then
        mirror="$(awk '/^URIs:/ { print $2; exit }' /etc/apt/sources.list.d/debian.sources)"
    fi
    if [ -z "$mirror" ] && [ -f /etc/apt/sources.list ]; then
        mirror="$(awk '$1 == "deb" && $2 ~ /^http/ { print $2; exit }' /etc/apt/sources.list)"
    fi
    mirror="${mirror:-http://deb.debian.org/debian}"
    # Into a fresh folder, moved into place only when complete: a half-done
    # debootstrap never looks like a chroot. Its own mounts (proc, sys) die
    # with the mount namespace, so removing the folder on failure is safe.
    new="$(mktemp -d "$cache/sid-new.XXXXXX")"
    chmod 755 "$new"
    trap 'rm -rf --one-file-system "$new"' EXIT
    log "debootstrap --variant=minbase sid $new $mirror (about 1.5 min)"
    t0=$(date +%s)
    unshare --mount --fork -- debootstrap --variant=minbase sid "$new" "$mirror" >"$new.log" 2>&1 || {
        tail -n 30 "$new.log" >&2
        rm -f "$new.log"
        die "debootstrap failed (log above)"
    }
    rm -f "$new.log"
    log "debootstrap done in $(($(date +%s) - t0)) s"
    # sid's Release file can look expired to this machine's clock.
    echo 'Acquire::Check-Valid-Until "false";' >"$new/etc/apt/apt.conf.d/99no-check-valid-until"
    [ ! -e "$root" ] || rmdir "$root"
    mv "$new" "$root"
    trap - EXIT
fi
[ -e "$root/dev/null" ] || die "$root/dev/null is missing (debootstrap creates it; /dev is never bind-mounted)"

# -- 2. the packages ---------------------------------------------------------------
t0=$(date +%s)
log "apt-get update + install inside the chroot: $(echo $want)"
aptlog="$cache/sid-apt.log"
# shellcheck disable=SC2086
in_chroot "$root" sh -c 'apt-get update -qq && apt-get install -y -qq --no-install-recommends "$@"' \
    sh $want >"$aptlog" 2>&1 || {
    tail -n 40 "$aptlog" >&2
    die "apt-get inside $root failed (the end of $aptlog above)"
}
log "packages done in $(($(date +%s) - t0)) s"
for f in "${want_files[@]}"; do
    [ -e "$root/$f" ] || die "after installing the packages, $root/$f is missing"
done
# Written last, atomically: a stamp means the list is installed.
printf '%s\n' "$want" >"$stamp.tmp"
mv -f "$stamp.tmp" "$stamp"
in_chroot "$root" dpkg-query -W -f '  ${Package} ${Version}\n' $want >&2 || true
echo "$root"
