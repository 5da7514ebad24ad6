#!/usr/bin/env bash
# Prints the path of a usable Consul binary. Order: $CONSUL_BIN, `consul` on PATH, an earlier
# project-local install, then Debian's consul 1.8.7 from the mirror apt is configured with.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LOCAL_DIR="$ROOT/.consul"
LOCAL_BIN="$LOCAL_DIR/usr/bin/consul"
DEB_POOL_PATH="pool/main/c/consul/consul_1.8.7+dfsg1-2+b3_amd64.deb"
DEB_SHA256="e4e888bba104daba1d9161f49bfc52649a7e4efd45b1a7ead5bc54f2cb9c89d9"

fail() {
  echo "consul.sh: $*" >&2
  echo "consul.sh: install Consul your usual way and set CONSUL_BIN=/path/to/consul (or put it on PATH)." >&2
  exit 1
}

usable() { [ -x "$1" ] && "$1" version >/dev/null 2>&1; }

if [ -n "${CONSUL_BIN:-}" ]; then
  usable "$CONSUL_BIN" || fail "CONSUL_BIN=$CONSUL_BIN is not an executable Consul binary"
  echo "$CONSUL_BIN"
  exit 0
fi
if command -v consul >/dev/null 2>&1 && usable "$(command -v consul)"; then
  command -v consul
  exit 0
fi
if usable "$LOCAL_BIN"; then
  echo "$LOCAL_BIN"
  exit 0
fi

[ "$(uname -m)" = "x86_64" ] || fail "no Consul found and the Debian package is only fetched for amd64"
command -v dpkg >/dev/null 2>&1 || fail "no Consul found and dpkg is missing to unpack the Debian package"

# The mirror comes from the machine's apt sources, never from this repository.
mirror=""
for f in /etc/apt/sources.list.d/*.sources; do
  [ -f "$f" ] || continue
  mirror="$(awk '/^URIs:/ { for (i = 2; i <= NF; i++) if ($i !~ /security/) { print $i; exit } }' "$f")"
  [ -n "$mirror" ] && break
done
if [ -z "$mirror" ] && [ -f /etc/apt/sources.list ]; then
  mirror="$(awk '$1 == "deb" && $0 !~ /security/ { for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) { print $i; exit } }' /etc/apt/sources.list)"
fi
[ -n "$mirror" ] || fail "no Consul found and no Debian mirror in the apt sources"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
deb="$tmp/consul.deb"
fetch() {
  if command -v curl >/dev/null 2>&1; then curl -fsSL --retry 3 -o "$deb" "$1"
  elif command -v wget >/dev/null 2>&1; then wget -q -O "$deb" "$1"
  else return 1; fi
}

# Without curl/wget: apt-get download with a private APT_CONFIG, so the system's apt state and
# its apt.conf.d hooks are left alone.
apt_download() {
  command -v apt-get >/dev/null 2>&1 || return 1
  local a="$tmp/apt"
  mkdir -p "$a/etc/preferences.d" "$a/etc/apt.conf.d" "$a/state/lists/partial" "$a/cache/archives/partial"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] ${mirror%/} bullseye main" >"$a/etc/sources.list"
  cat >"$a/apt.conf" <<CONF
Dir::Etc "$a/etc";
Dir::Etc::sourcelist "$a/etc/sources.list";
Dir::Etc::sourceparts "-";
Dir::State "$a/state";
Dir::Cache "$a/cache";
CONF
  APT_CONFIG="$a/apt.conf" apt-get -qq update >/dev/null 2>&1 &&
    (cd "$tmp" && APT_CONFIG="$a/apt.conf" apt-get -qq download "consul=1.8.7+dfsg1-2+b3" >/dev/null 2>&1) &&
    mv "$tmp"/consul_*.deb "$deb"
}

fetch "${mirror%/}/$DEB_POOL_PATH" || apt_download ||
  fail "could not download $DEB_POOL_PATH from the configured Debian mirror (bullseye may no longer be served)"
echo "$DEB_SHA256  $deb" | sha256sum -c --status - || fail "checksum mismatch for the downloaded Consul package"

rm -rf "$LOCAL_DIR"
mkdir -p "$LOCAL_DIR"
dpkg -x "$deb" "$LOCAL_DIR"
usable "$LOCAL_BIN" || fail "the unpacked Consul binary does not run"
echo "$LOCAL_BIN"
