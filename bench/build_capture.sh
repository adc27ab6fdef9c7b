#!/usr/bin/env bash
# Build the benchmark capture bench/data/store-<N>g.pcap (issue #2, reused by #7).
#
#   bash bench/build_capture.sh [--scale N] [--force] [--rate RATE] [--out FILE]
#
# What it does (needs root; does nothing if the output already exists, unless --force):
#   1. generates 200*N synthetic CT objects of ~5 MB (bench/make_dicom.py, pydicom)
#      in a temp dir: 5*N sub-directories of 40 objects, one per association;
#   2. creates two network namespaces, dtbench-a (10.99.0.1) and dtbench-b (10.99.0.2),
#      joined by a veth pair with MTU 1500 and TSO/GSO off, so every frame on the
#      wire (and in the capture) is at most 1514 bytes;
#   3. starts dcmtk storescp (port 11112, writing to a temp dir) in dtbench-b and
#      tcpdump (-s 0 -B 65536, pcap format, filter "tcp port 11112") on the veth in
#      dtbench-a (the sending side);
#   4. runs dcmtk storescu 5*N times, sequentially, 40 files each, from dtbench-a;
#      after each run checks storescp received all 40 objects, then deletes them;
#   5. stops tcpdump (SIGINT after its ring timeout, so everything is flushed) and
#      accepts the capture only if tcpdump captured every packet the filter received,
#      the kernel dropped none, and TCP retransmitted no segment; otherwise it captures
#      again with the sender paced by tc tbf at 2gbit, 1gbit, 500mbit (--rate RATE:
#      only that rate; "unlimited" = unpaced, the first try by default);
#   6. checks the packet count with capinfos and, with tcpdump, that the capture holds
#      5*N SYNs and both FINs of every connection; renames the file into place and
#      writes a JSON sidecar (<out>.json) with the build figures.
# Namespaces, processes and temp files are removed on exit, also on failure or ^C.
# No traffic leaves the two namespaces. DCMTK_BIN (default /usr/bin) and PYTHON
# select the dcmtk binaries and the Python with pydicom.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SCALE=1
FORCE=0
RATE=""
OUT=""
PER_RUN="${DTBENCH_PER_RUN:-40}"  # objects per association (override only for quick tests)
RUNS_PER_SCALE=5
PYTHON="${PYTHON:-python3}"
# dcmtk's binaries; pynetdicom installs its own `storescu`/`storescp` scripts that may
# come first on PATH, so use absolute paths.
DCMTK_BIN="${DCMTK_BIN:-/usr/bin}"
NS_A=dtbench-a
NS_B=dtbench-b
IF_A=dtb-a
IF_B=dtb-b
IP_A=10.99.0.1
IP_B=10.99.0.2
PORT=11112
MAX_RETRANS="${DTBENCH_MAX_RETRANS:-0}"  # TCP retransmissions tolerated in the capture

usage() { sed -n '2,27p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        --scale) SCALE="$2"; shift 2 ;;
        --scale=*) SCALE="${1#*=}"; shift ;;
        --force) FORCE=1; shift ;;
        --rate) RATE="$2"; shift 2 ;;
        --rate=*) RATE="${1#*=}"; shift ;;
        --out) OUT="$2"; shift 2 ;;
        --out=*) OUT="${1#*=}"; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "build_capture: unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
done
[[ "$SCALE" =~ ^[1-9][0-9]*$ ]] || { echo "build_capture: --scale must be a positive integer" >&2; exit 2; }
OUT="${OUT:-$HERE/data/store-${SCALE}g.pcap}"
RUNS=$((RUNS_PER_SCALE * SCALE))
NOBJ=$((RUNS * PER_RUN))

log() { printf '[build_capture %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

if [[ -s "$OUT" && $FORCE -eq 0 ]]; then
    log "$OUT already exists ($(stat -c %s "$OUT") bytes); use --force to rebuild"
    exit 0
fi
[[ $EUID -eq 0 ]] || die "must run as root (network namespaces, tcpdump)"

# ---- tools -------------------------------------------------------------------------
need_pkgs=()
[[ -x "$DCMTK_BIN/storescu" && -x "$DCMTK_BIN/storescp" ]] || need_pkgs+=(dcmtk)
command -v tcpdump >/dev/null || need_pkgs+=(tcpdump)
command -v capinfos >/dev/null || need_pkgs+=(tshark)
command -v ethtool >/dev/null || need_pkgs+=(ethtool)
{ command -v ip && command -v tc; } >/dev/null || need_pkgs+=(iproute2)
if [[ ${#need_pkgs[@]} -gt 0 ]]; then
    log "installing missing Debian packages: ${need_pkgs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq "${need_pkgs[@]}" >&2
fi
if ! "$PYTHON" -c 'import pydicom, numpy' 2>/dev/null; then
    log "installing pydicom and numpy with pip"
    "$PYTHON" -m pip install -q 'pydicom>=3.0' numpy >&2
fi

# ---- one build at a time (namespace names are fixed) --------------------------------
mkdir -p "$(dirname "$OUT")"
exec 9>"$(dirname "$OUT")/.build_capture.lock"
if ! flock -n 9; then
    log "another build is running; waiting for it"
    flock 9
    if [[ -s "$OUT" && $FORCE -eq 0 ]]; then log "$OUT was built meanwhile"; exit 0; fi
fi

# ---- cleanup -----------------------------------------------------------------------
TMP=""
SCP_PID=""
DUMP_PID=""
PARTIAL="$OUT.partial"
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    for pid in $DUMP_PID $SCP_PID; do
        if kill -0 "$pid" 2>/dev/null; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    done
    ip netns del "$NS_A" 2>/dev/null || true
    ip netns del "$NS_B" 2>/dev/null || true
    [[ -n "$TMP" ]] && rm -rf "$TMP"
    rm -f "$PARTIAL"
    if [[ $rc -ne 0 ]]; then log "failed (exit $rc); namespaces and temp files removed"; fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

T0=$(date +%s.%N)
TMP="$(mktemp -d "${TMPDIR:-/tmp}/dtbench.XXXXXX")"
mkdir -p "$TMP/src" "$TMP/recv"

# ---- 1. objects ----------------------------------------------------------------------
log "generating $NOBJ objects ($RUNS runs x $PER_RUN) in $TMP/src"
"$PYTHON" "$HERE/make_dicom.py" --out "$TMP/src" --runs "$RUNS" --per-run "$PER_RUN"
T_GEN=$(date +%s.%N)

# ---- 2. namespaces -------------------------------------------------------------------
setup_net() {
    ip netns del "$NS_A" 2>/dev/null || true
    ip netns del "$NS_B" 2>/dev/null || true
    ip netns add "$NS_A"
    ip netns add "$NS_B"
    ip link add "$IF_A" netns "$NS_A" type veth peer name "$IF_B" netns "$NS_B"
    local ns ifc ip
    for ns in "$NS_A:$IF_A:$IP_A" "$NS_B:$IF_B:$IP_B"; do
        IFS=: read -r ns ifc ip <<<"$ns"
        ip -n "$ns" link set lo up
        # no tail loss probes: when the sender is paced (--rate), a probe fired while
        # frames wait in the token bucket is a spurious retransmission
        ip netns exec "$ns" sysctl -qw net.ipv4.tcp_early_retrans=0
        # no IPv6 on the veth: keeps router solicitations / ND out of the capture
        ip netns exec "$ns" sysctl -qw "net.ipv6.conf.$ifc.disable_ipv6=1" 2>/dev/null || true
        ip -n "$ns" link set "$ifc" mtu 1500
        ip -n "$ns" addr add "$ip/24" dev "$ifc"
        # no segmentation offloads: every frame on the veth is a real <=1514-byte frame
        ip netns exec "$ns" ethtool -K "$ifc" tso off gso off gro off >/dev/null \
            || die "ethtool -K $ifc failed"
        ip -n "$ns" link set "$ifc" up
    done
    # GRO on the receiving end switches veth to its NAPI receive path, which delivers in
    # order; without it, frames sent from different CPUs can overtake each other in the
    # per-CPU backlogs, and the resulting dup ACKs cause spurious fast retransmissions.
    # The capture runs on the sending end (dtb-a), where frames are still <= 1514 bytes.
    ip netns exec "$NS_B" ethtool -K "$IF_B" gro on >/dev/null || die "ethtool -K $IF_B gro on failed"
}

set_rate() {  # pace the sender (data direction a -> b) with a token bucket
    ip netns exec "$NS_A" tc qdisc del dev "$IF_A" root 2>/dev/null || true
    if [[ -n "$1" && "$1" != unlimited ]]; then
        ip netns exec "$NS_A" tc qdisc add dev "$IF_A" root tbf rate "$1" burst 256kb latency 100ms \
            || die "tc tbf rate $1 failed"
    else
        # a queue instead of veth's default noqueue: lets (recent) veth push back when its
        # receive ring is full instead of dropping frames
        ip netns exec "$NS_A" tc qdisc add dev "$IF_A" root pfifo limit 10000 || die "tc pfifo failed"
    fi
}

start_scp() {
    ip netns exec "$NS_B" "$DCMTK_BIN/storescp" -aet DTBENCH-SCP -od "$TMP/recv" "$PORT" \
        >"$TMP/storescp.log" 2>&1 &
    SCP_PID=$!
    local i
    for i in $(seq 1 100); do
        if ip netns exec "$NS_B" ss -Hltn "sport = :$PORT" | grep -q .; then return 0; fi
        kill -0 "$SCP_PID" 2>/dev/null || { cat "$TMP/storescp.log" >&2; die "storescp exited"; }
        sleep 0.1
    done
    die "storescp is not listening on $IP_B:$PORT"
}

start_dump() {
    rm -f "$PARTIAL"
    ip netns exec "$NS_A" tcpdump -i "$IF_A" -s 0 -B 65536 -n -w "$PARTIAL" "tcp port $PORT" \
        2>"$TMP/tcpdump.log" &
    DUMP_PID=$!
    local i
    for i in $(seq 1 100); do
        if grep -q "listening on" "$TMP/tcpdump.log" 2>/dev/null; then return 0; fi
        kill -0 "$DUMP_PID" 2>/dev/null || { cat "$TMP/tcpdump.log" >&2; die "tcpdump exited"; }
        sleep 0.1
    done
    die "tcpdump did not start"
}

stop_dump() {  # SIGINT makes tcpdump flush its buffer, print its statistics and exit
    # libpcap's TPACKET_V3 ring hands a block to tcpdump only when it is full or its
    # timeout (tcpdump: 1 s) expires; a block still open at SIGINT is never written.
    # Wait past the timeout so the last packets (release, FIN) are in the file.
    sleep 2.5
    kill -INT "$DUMP_PID"
    wait "$DUMP_PID" || true
    DUMP_PID=""
}

# number from a tcpdump statistics line, e.g. "123 packets dropped by kernel"; 0 if absent
dump_stat() { sed -n "s/^\([0-9][0-9]*\) packets $1.*/\1/p" "$TMP/tcpdump.log" | tail -1 | grep . || echo 0; }

# TCP segments retransmitted so far in namespace $1 (kernel counter, per namespace)
retrans() { ip netns exec "$1" nstat -asz TcpRetransSegs | awk '$1 == "TcpRetransSegs" {print $2}'; }

capture_once() {  # $1 = rate ("" = unpaced); returns 0 if the capture is complete and clean
    set_rate "$1"
    local re0 re1
    re0=$(( $(retrans "$NS_A") + $(retrans "$NS_B") ))
    start_dump
    local run files n
    for run in $(seq 1 "$RUNS"); do
        files=("$TMP/src/run$(printf %02d "$run")"/*.dcm)
        ip netns exec "$NS_A" "$DCMTK_BIN/storescu" -aet DTBENCH-SCU -aec DTBENCH-SCP \
            "$IP_B" "$PORT" "${files[@]}" >"$TMP/storescu.log" 2>&1 \
            || { cat "$TMP/storescu.log" >&2; die "storescu run $run failed"; }
        n=$(find "$TMP/recv" -type f | wc -l)
        [[ "$n" -eq "${#files[@]}" ]] || { cat "$TMP/storescp.log" >&2; die "run $run: storescp stored $n of ${#files[@]} objects"; }
        rm -rf "${TMP:?}/recv"/*
        log "association $run/$RUNS: ${#files[@]} objects stored"
    done
    stop_dump
    CAPTURED=$(dump_stat captured)
    RECEIVED=$(dump_stat "received by filter")
    DROPPED_K=$(dump_stat "dropped by kernel")
    DROPPED_I=$(dump_stat "dropped by interface")
    re1=$(( $(retrans "$NS_A") + $(retrans "$NS_B") ))
    RETRANS=$((re1 - re0))
    log "tcpdump: $CAPTURED captured, $RECEIVED received by filter, $DROPPED_K dropped by kernel, $DROPPED_I dropped by interface; TCP retransmissions: $RETRANS"
    [[ "$DROPPED_K" -eq 0 && "$DROPPED_I" -eq 0 && "$CAPTURED" -eq "$RECEIVED" && "$CAPTURED" -gt 0 ]] || return 1
    # a loss on the veth (receiver backlog overflow) shows up as retransmissions: the
    # capture would be valid but not the clean transfer the benchmark wants
    if [[ "$RETRANS" -gt "$MAX_RETRANS" ]]; then
        local ns
        for ns in "$NS_A" "$NS_B"; do
            log "$ns: $(ip netns exec "$ns" nstat -as | awk '/Retrans|Drop|Timeout|LossProbe|Spurious|Prune|Collapse/ {printf "%s=%s ", $1, $2}')"
            log "$ns: $(ip -n "$ns" -s -o link show | awk '{print $2}' | tr '\n' ' ')"
        done
        ip netns exec "$NS_A" tc -s qdisc show dev "$IF_A" >&2
        ip netns exec "$NS_B" ethtool -S "$IF_B" | grep -E 'drop|full|xdp_tx_err' | grep -v ': 0$' >&2 || true
        return 1
    fi
}

# ---- 3./4./5. capture ----------------------------------------------------------------
setup_net
start_scp
if [[ -n "$RATE" ]]; then rates=("$RATE"); else rates=(unlimited 2gbit 1gbit 500mbit); fi
T_CAP0=$(date +%s.%N)
ok=0
for r in "${rates[@]}"; do
    log "capturing $RUNS associations, sender rate: $r"
    T_CAP0=$(date +%s.%N)
    if capture_once "$r"; then ok=1; USED_RATE="$r"; break; fi
    log "capture at rate $r was not clean (tcpdump drops or TCP retransmissions); retrying slower"
done
[[ $ok -eq 1 ]] || die "no clean capture at any rate tried (${rates[*]})"
T_CAP1=$(date +%s.%N)

kill "$SCP_PID" 2>/dev/null || true
wait "$SCP_PID" 2>/dev/null || true
SCP_PID=""

# ---- verify --------------------------------------------------------------------------
PKTS=$(capinfos -T -r -c "$PARTIAL" | awk -F'\t' '{print $2}')
[[ "$PKTS" -eq "$CAPTURED" ]] || die "capinfos counts $PKTS packets, tcpdump said $CAPTURED"
# every connection opened (SYN) and closed by both sides (FIN) inside the capture
tcpdump -n -r "$PARTIAL" 'tcp[tcpflags] & (tcp-syn|tcp-fin) != 0' 2>/dev/null >"$TMP/synfin.txt"
SYNS=$(grep -c 'Flags \[S\]' "$TMP/synfin.txt" || true)
FINS=$(grep -c 'Flags \[F' "$TMP/synfin.txt" || true)
[[ "$SYNS" -eq "$RUNS" ]] || die "expected $RUNS connections (SYNs) in the capture, found $SYNS"
[[ "$FINS" -ge $((2 * RUNS)) ]] || die "expected >= $((2 * RUNS)) FINs (both sides of $RUNS connections), found $FINS"
BYTES=$(stat -c %s "$PARTIAL")
mv -f "$PARTIAL" "$OUT"
T_END=$(date +%s.%N)

secs() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.1f", b-a}'; }
cat >"$OUT.json" <<EOF
{
  "file": "$(basename "$OUT")",
  "bytes": $BYTES,
  "packets": $PKTS,
  "associations": $RUNS,
  "objects": $NOBJ,
  "object_bytes": $(stat -c %s "$TMP/src/run01/ct000.dcm"),
  "sender_rate": "$USED_RATE",
  "tcpdump_dropped": 0,
  "tcp_retransmissions": $RETRANS,
  "seconds_generate": $(secs "$T0" "$T_GEN"),
  "seconds_capture": $(secs "$T_CAP0" "$T_CAP1"),
  "seconds_total": $(secs "$T0" "$T_END"),
  "built": "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
}
EOF
log "done: $OUT, $BYTES bytes, $PKTS packets, $RUNS associations, $NOBJ objects, $(secs "$T0" "$T_END") s"
