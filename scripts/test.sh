#!/usr/bin/env bash
# Set up everything the test suite needs on a fresh Debian machine (as root), then run it.
# Installs: dcmtk, tcpdump, tshark, nftables, iproute2, tmux (apt-get); a virtualenv in .venv with
# dicomtrace and its test dependencies (pip).  Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for cmd in storescu:dcmtk tcpdump:tcpdump tshark:tshark editcap:wireshark-common \
           nft:nftables ip:iproute2 ethtool:ethtool chromium:chromium tmux:tmux; do
    command -v "/usr/bin/${cmd%%:*}" >/dev/null 2>&1 || command -v "/usr/sbin/${cmd%%:*}" >/dev/null 2>&1 \
        || need+=("${cmd#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "scripts/test.sh: please install (as root): ${need[*]}" >&2
        exit 2
    fi
    export DEBIAN_FRONTEND=noninteractive
    echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
    apt-get update -qq
    apt-get install -y -qq "${need[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
export PATH="$PWD/.venv/bin:$PATH"
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
