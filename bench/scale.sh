#!/usr/bin/env bash
# Issues #12, #16: throughput against the number of workers, and the cost of stitching.
#
#   bash bench/scale.sh [--files N | --per-file P] [--repeat R] [--no-dask] [CAPTURE]
#
# CAPTURE (default bench/data/scale-200m.pcap, built if missing with
# DTBENCH_PER_RUN=8 bash bench/build_capture.sh: 5 associations of 8 x 5 MB CT objects over a
# veth at MTU 1500; docs/performance.md quotes bench/data/store-1g.pcap) is cut into N files
# (default 20) or files of P packets (editcap -c P, as a tcpdump ring would be) in /tmp, and
# the same folder copied as a second sensor.  Then, best of R runs (default 3) each:
#
#   one file             analyze CAPTURE --jobs 1
#   one file, 2 procs    analyze CAPTURE --jobs 2           (the file cut at a record start)
#   count pass           the records counted up to the cut (what the frame numbers cost)
#   ring, stitched       analyze RING --jobs 1
#   ring, 2 procs        analyze RING --jobs 2              (whole files per part)
#   dask 1 / 2           analyze RING --scheduler ... --jobs K  (K tasks on a loopback cluster of K
#                        workers, --nthreads 1)
#   2 sensors x ...      the same over two sensors (the ring twice), 1 and 2 processes
#
# and prints wall seconds, CPU seconds (the command and its children), MB/s and packets/s
# of the capture data.  The JSON of every variant is checked equal to the one-process run.
# Needs dask (pip install '.[scale]') unless --no-dask.  Only loopback traffic.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
FILES=20
PER_FILE=""
REPEAT=3
DASK_TOO=1
CAP=""
while [ $# -gt 0 ]; do
    case "$1" in
        --files) FILES="$2"; shift 2 ;;
        --per-file) PER_FILE="$2"; shift 2 ;;
        --repeat) REPEAT="$2"; shift 2 ;;
        --no-dask) DASK_TOO=""; shift ;;
        -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
        *) CAP="$1"; shift ;;
    esac
done
PY="${PYTHON:-$ROOT/.venv/bin/python}"
[ -x "$PY" ] || PY=python3
DT=("$PY" -m dicomtrace)
DASK="$(dirname "$PY")/dask"
if [ -z "$CAP" ]; then
    CAP="$HERE/data/scale-200m.pcap"
    if [ ! -f "$CAP" ]; then
        mkdir -p "$HERE/data"
        DTBENCH_PER_RUN=8 PYTHON="$PY" bash "$HERE/build_capture.sh" --out "$CAP"
    fi
fi

WORK="$(mktemp -d /tmp/dicomtrace-scale.XXXXXX)"
PIDS=()
cleanup() {
    stop_cluster
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

PACKETS=$(capinfos -c -M "$CAP" | awk -F: '/Number of packets/ {gsub(/ /,"",$2); print $2}')
BYTES=$(stat -c %s "$CAP")
mkdir -p "$WORK/ring/ward" "$WORK/ring/core"
editcap -F pcap -c "${PER_FILE:-$(( (PACKETS + FILES - 1) / FILES ))}" "$CAP" "$WORK/ring/ward/ring.pcap"
cp "$WORK/ring/ward/"* "$WORK/ring/core/"
echo "capture: $CAP, $PACKETS packets, $((BYTES / 1000000)) MB; ring: $(ls "$WORK/ring/ward" | wc -l) files;" \
     "load $(cut -d' ' -f1 /proc/loadavg), $(nproc) cores"

start_cluster() {  # start_cluster K -> $ADDR
    local port
    port=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    ADDR="tcp://127.0.0.1:$port"
    "$DASK" scheduler --host 127.0.0.1 --port "$port" --no-dashboard >"$WORK/sched.log" 2>&1 &
    PIDS+=($!)
    for i in $(seq 1 "$1"); do
        "$DASK" worker "$ADDR" --nthreads 1 --no-nanny --host 127.0.0.1 --no-dashboard \
            --memory-limit 0 --death-timeout 60 >"$WORK/worker$i.log" 2>&1 &
        PIDS+=($!)
    done
    "$PY" - "$ADDR" "$1" <<'EOF'
import sys
from distributed import Client
with Client(sys.argv[1], timeout=60) as c:
    c.wait_for_workers(int(sys.argv[2]), timeout=120)
EOF
}

stop_cluster() {  # SIGTERM, then SIGKILL after 10 s (a worker can hang while closing)
    local pid i
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        for i in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    PIDS=()
}

best() {  # best NAME SENSORS ARGS... : best wall time of REPEAT runs; JSON kept in $WORK/NAME.json
    local name="$1" sensors="$2"; shift 2
    local t best=""
    for _ in $(seq 1 "$REPEAT"); do
        read -r t c < <("$PY" - "$WORK/$name.json" "${DT[@]}" "$@" <<'EOF'
import os, subprocess, sys, time
t = time.perf_counter()
with open(sys.argv[1], "wb") as out:
    subprocess.run(sys.argv[2:] + ["--format", "json"], stdout=out, check=True)
r = os.times()
print(f"{time.perf_counter() - t:.3f} {r.children_user + r.children_system:.3f}")
EOF
)
        if [ -z "$best" ] || awk "BEGIN{exit !($t < $best)}"; then best=$t; cpu=$c; fi
    done
    awk -v n="$name" -v t="$best" -v c="$cpu" -v b="$BYTES" -v p="$PACKETS" -v s="$sensors" \
        'BEGIN{printf "%-22s %8.2f s %8.2f s %9.1f MB/s %11.0f packets/s\n", n, t, c, s*b/t/1e6, s*p/t}'
}

count_pass() {  # the count pass alone: the records before the cut of CAPTURE into 2 parts
    local t best=""
    for _ in $(seq 1 "$REPEAT"); do
        t=$("$PY" - "$CAP" <<'EOF'
import sys, time
from dicomtrace.parallel import plan_parts, pool_map
t = time.perf_counter()
[plan] = plan_parts([sys.argv[1]], 2, lambda tasks: pool_map(tasks, 2))
assert len(plan.parts) == 2, plan
print(f"{time.perf_counter() - t:.3f}")
EOF
)
        if [ -z "$best" ] || awk "BEGIN{exit !($t < $best)}"; then best=$t; fi
    done
    awk -v t="$best" -v b="$BYTES" 'BEGIN{printf "%-22s %8.2f s   (cut, and count the first %.0f MB)\n", "count-pass", t, b/2e6}'
}

same() {  # the analyses agree (the ring's JSON names its files and sensor: compare the rest)
    "$PY" - "$WORK/$1.json" "$WORK/$2.json" <<'EOF'
import json, sys
def core(path):
    d = json.load(open(path))
    for a in d["associations"]:
        a.pop("sensor", None)
    return d["associations"], d["findings"], d["objects"]
assert core(sys.argv[1]) == core(sys.argv[2]), f"{sys.argv[1]} differs from {sys.argv[2]}"
EOF
}

printf "%-22s %10s %10s %14s %21s\n" variant wall cpu throughput packets
best "one-file" 1 analyze "$CAP" --jobs 1
best "one-file-2-procs" 1 analyze "$CAP" --jobs 2
cmp -s "$WORK/one-file.json" "$WORK/one-file-2-procs.json" || { echo "one file: 1 and 2 processes differ" >&2; exit 1; }
count_pass
best "ring-stitched" 1 analyze "$WORK/ring/ward" --jobs 1
same one-file ring-stitched
best "ring-2-procs" 1 analyze "$WORK/ring/ward" --jobs 2
same one-file ring-2-procs
cmp -s "$WORK/ring-stitched.json" "$WORK/ring-2-procs.json" || { echo "ring: 1 and 2 processes differ" >&2; exit 1; }
for k in ${DASK_TOO:+1 2}; do
    start_cluster "$k"
    best "ring-dask-$k" 1 analyze "$WORK/ring/ward" --scheduler "$ADDR" --jobs "$k"
    same one-file "ring-dask-$k"
    stop_cluster
done
best "2-sensors-1-proc" 2 analyze "$WORK/ring/ward" "$WORK/ring/core" --jobs 1
best "2-sensors-2-procs" 2 analyze "$WORK/ring/ward" "$WORK/ring/core" --jobs 2
cmp -s "$WORK/2-sensors-1-proc.json" "$WORK/2-sensors-2-procs.json" || { echo "2 sensors: 1 and 2 processes differ" >&2; exit 1; }
