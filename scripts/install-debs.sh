#!/bin/sh
# Install the Debian packages the tests and the demo drive for real, when missing.
set -eu
missing=""
command -v iptables-restore >/dev/null 2>&1 || missing="$missing iptables"
command -v ip >/dev/null 2>&1 || missing="$missing iproute2"
command -v unshare >/dev/null 2>&1 || missing="$missing util-linux"
# Debian's own Go (1.19): only its `go env GOPROXY` is used; scripts/go_toolchain.py
# fetches the Go that builds CoreDNS.
[ -x /usr/bin/go ] || missing="$missing golang-go"
command -v python3 >/dev/null 2>&1 || missing="$missing python3"
command -v node >/dev/null 2>&1 || missing="$missing nodejs"   # the JS SDK consumer (e2e)
command -v npm >/dev/null 2>&1 || missing="$missing npm"
command -v strace >/dev/null 2>&1 || missing="$missing strace"   # make bench counts processes
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "statekit: missing Debian packages:$missing (run as root, or install them)" >&2
    exit 1
fi
echo "installing Debian packages:$missing"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
