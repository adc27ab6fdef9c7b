#!/usr/bin/env bash
# Benchmark entry point (issue #2): builds bench/data/store-1g.pcap if missing, then
# times dicomtrace against tshark on it. Options are passed to bench/bench.py, e.g.
#   bash bench/run.sh                    # store-1g.pcap, all pairs
#   bash bench/run.sh --scale 1,2        # also the 2x capture (built if missing)
#   bash bench/run.sh --repeat 3 --json bench/out/results.json
#   bash bench/run.sh --help
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYTHON="${PYTHON:-python3}"
command -v capinfos >/dev/null && command -v tshark >/dev/null || {
    echo "run.sh: installing tshark (capinfos, tshark)" >&2
    DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tshark >&2
}
# The package byte-compiled, as an installed copy is: an editable checkout on a machine that sets
# PYTHONDONTWRITEBYTECODE would otherwise compile dicomtrace's modules again at every timed
# start (~0.1 s, docs/performance.md "Start-up").
"$PYTHON" -m compileall -q "$HERE/../dicomtrace" >/dev/null || true
exec "$PYTHON" "$HERE/bench.py" "$@"
