#!/usr/bin/env bash
# Prepare what tests/aarch64.rs's 3.14/3.15 checks need: Debian sid's arm64
# CPython 3.14 and 3.15 static archives (libpython3.1X-dev:arm64, which
# also holds python.o and the arm64 pyconfig.h), downloaded and unpacked
# with `dpkg-deb -x`, never installed.
#
# Neither the host's nor the sid chroot's dpkg/apt state is touched: apt
# runs on the host with a private configuration (sources list, lists,
# cache, status) for `deb.debian.org/debian sid main`, arm64 only, under
# the cache folder. The archives are not runnable here (no arm64 sid root);
# the tests read them statically.
#
# Idempotent: when everything is in place it makes no apt call and returns
# at once. Prints the unpacked folder's path as its last line of stdout;
# progress goes to stderr.
#
# Folder: ${PYFREEZE_CACHE:-$HOME/.cache/pyfreeze-obj}/arm64-sid (apt's
# private state in arm64-sid-apt/, the .debs in arm64-sid-apt/debs/).
set -euo pipefail

log() { printf 'tests/setup/arm64-sid.sh: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

cache="${PYFREEZE_CACHE:-$HOME/.cache/pyfreeze-obj}"
root="$cache/arm64-sid"
state="$cache/arm64-sid-apt"
stamp="$root/.complete"
versions=(3.14 3.15)

want_files=()
for v in "${versions[@]}"; do
    want_files+=(
        "usr/lib/python$v/config-$v-aarch64-linux-gnu/libpython$v.a"
        "usr/lib/python$v/config-$v-aarch64-linux-gnu/python.o"
        "usr/include/aarch64-linux-gnu/python$v/pyconfig.h"
    )
done

files_ok() {
    local f
    [ -e "$stamp" ] || return 1
    for f in "${want_files[@]}"; do
        [ -e "$root/$f" ] || return 1
    done
}

if files_ok; then
    log "already set up ($root)"
    echo "$root"
    exit 0
fi

for t in apt-get dpkg-deb; do
    command -v "$t" >/dev/null 2>&1 || die "$t is missing (a Debian host is assumed)"
done
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
[ -e "$keyring" ] || die "no $keyring: install the Debian package debian-archive-keyring"

# apt's private state: nothing outside $state is read or written (no
# /etc/apt config parts, no /var/lib/dpkg status).
mkdir -p "$state"/{lists/partial,archives/partial,etc/apt.conf.d,etc/preferences.d,etc/trusted.gpg.d,debs}
: >"$state/status"
echo "deb [arch=arm64 signed-by=$keyring] http://deb.debian.org/debian sid main" >"$state/etc/sources.list"
apt_opts=(
    -o "Dir::Etc::sourcelist=$state/etc/sources.list"
    -o "Dir::Etc::sourceparts=-"
    -o "Dir::Etc::parts=$state/etc/apt.conf.d"
    -o "Dir::Etc::preferencesparts=$state/etc/preferences.d"
    -o "Dir::Etc::trustedparts=$state/etc/trusted.gpg.d"
    -o "Dir::State=$state"
    -o "Dir::State::lists=$state/lists"
    -o "Dir::State::status=$state/status"
    -o "Dir::Cache=$state"
    -o "Dir::Cache::archives=$state/archives"
    -o "APT::Architecture=arm64"
    -o "APT::Architectures=arm64"
    -o "Acquire::Check-Valid-Until=false"
    -o "Acquire::Languages=none"
    -o "Debug::NoLocking=1"
    -o "APT::Sandbox::User=root"
)
log "apt-get update (private state in $state)"
apt-get "${apt_opts[@]}" update -qq >&2

downloads=()
for v in "${versions[@]}"; do
    downloads+=("libpython$v-dev:arm64")
done
tmp="$(mktemp -d "$cache/arm64-sid-dl.XXXXXX")"
new=""
trap 'rm -rf "$tmp" ${new:+"$new"}' EXIT
log "apt-get download ${downloads[*]}"
(cd "$tmp" && apt-get "${apt_opts[@]}" download -qq "${downloads[@]}") >&2
mv -f "$tmp"/*.deb "$state/debs/"

# Unpack into a fresh folder, then swap it in: a half-unpacked folder
# never looks complete.
new="$(mktemp -d "$cache/arm64-sid-new.XXXXXX")"
chmod 755 "$new"
for d in "${downloads[@]}"; do
    name="${d%%:*}"
    ver="$(apt-get "${apt_opts[@]}" -qq --print-uris download "$d" | awk '{ print $2 }')"
    deb="$state/debs/$ver"
    [ -e "$deb" ] || die "no downloaded $deb for $d"
    [ "$(dpkg-deb -f "$deb" Architecture)" = arm64 ] || die "$deb is not arm64"
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
echo "$root"
