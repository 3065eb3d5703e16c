#!/bin/sh
# Prepares a Debian 12 machine (root) for the Linux-host testbed: adds the bookworm-backports
# suite (same URIs and keyring as the main Debian source) so that the build can
# `apt-get download` the 6.12 kernel, then installs the packages in apt-packages.txt.
# Idempotent. Usage: sh testbeds/linux_host/install-host-deps.sh
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
MAIN_SOURCES=/etc/apt/sources.list.d/debian.sources
BACKPORTS_SOURCES=/etc/apt/sources.list.d/dpu-emu-bookworm-backports.sources
SUITE=bookworm-backports

if ! grep -rqs "$SUITE" /etc/apt/sources.list /etc/apt/sources.list.d/; then
    uris=$(awk '/^URIs:/ && /debian\/?$/ && !/security/ {print $2; exit}' "$MAIN_SOURCES" 2>/dev/null || true)
    keyring=$(awk '/^Signed-By:/ {print $2; exit}' "$MAIN_SOURCES" 2>/dev/null || true)
    : "${uris:=http://deb.debian.org/debian}"
    : "${keyring:=/usr/share/keyrings/debian-archive-keyring.gpg}"
    cat > "$BACKPORTS_SOURCES" <<SOURCES
Types: deb
URIs: $uris
Suites: $SUITE
Components: main
Signed-By: $keyring
SOURCES
    echo "added $BACKPORTS_SOURCES ($uris)"
fi
apt-get update -q
grep -v '^[[:space:]]*#' "$HERE/apt-packages.txt" | grep -v '^[[:space:]]*$' |
    xargs env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends
