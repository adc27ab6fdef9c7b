#!/usr/bin/env python3
"""dicomtrace vs tshark benchmark on the C-STORE capture(s) (issue #2).

For each capture scale (store-1g.pcap, store-2g.pcap, ...) and each benchmark pair
in PAIRS, runs the dicomtrace command and the tshark command with stdout to
/dev/null and measures, per run:

  wall s   elapsed time (time.perf_counter around fork..wait)
  cpu s    user + system CPU time of the child and everything it waited for
  peak MB  peak resident set size (ru_maxrss from wait4, i.e. the largest single
           process in the child's tree), in MiB

and prints a table with the ratios tshark/dicomtrace and dicomtrace's microseconds
per packet. Entry point: `bash bench/run.sh [options]` (see --help).

To add a pair, append a Pair(...) to PAIRS. Argument lists may use the
placeholders {cap} (the capture file) and {out} (a fresh empty temp directory,
removed after the run, for commands that write files).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DATA = HERE / "data"


@dataclass
class Pair:
    name: str
    dicomtrace: list[str]  # arguments after the dicomtrace command itself
    tshark: list[str]  # arguments after the tshark executable
    note: str = ""


# tshark decoding DICOM and listing every PDU: the reference for analyze (and report)
TSHARK_PDUS = ["-r", "{cap}", "-d", "tcp.port==11112,dicom", "-T", "fields",
               "-e", "frame.number", "-e", "dicom.pdu.type"]

PAIRS: list[Pair] = [
    Pair(
        "conversations",
        ["conversations", "{cap}", "--format", "json"],
        ["-q", "-n", "-r", "{cap}", "-z", "conv,tcp"],
        "TCP conversation table",
    ),
    Pair(
        "export",
        ["export", "{cap}", "-o", "{out}"],
        ["-q", "-n", "-r", "{cap}", "-d", "tcp.port==11112,dicom", "--export-objects", "dicom,{out}"],
        "C-STORE data sets written as Part 10 files (each run into its own fresh temp dir)",
    ),
    Pair(
        "analyze",
        ["analyze", "{cap}", "--format", "json"],
        TSHARK_PDUS,
        "full analysis (reassembly, decoding, pairing, findings) vs tshark listing DICOM PDUs",
    ),
    Pair(
        "report",
        ["report", "{cap}", "-o", "{out}/report.html"],
        TSHARK_PDUS,
        "the HTML report (analysis + graphs) vs the same tshark listing as analyze",
    ),
]
CAT = ["cat", "{cap}"]  # reading the file, the physical limit (page cache warm)
GB = 1 << 30


@dataclass
class Result:
    tool: str
    argv: list[str]
    rc: int = 0
    wall: float = 0.0
    cpu: float = 0.0
    peak_mb: float = 0.0
    runs: list[dict] = field(default_factory=list)
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.rc == 0 and not self.error


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def dicomtrace_cmd(override: str | None) -> list[str]:
    """The dicomtrace command: --dicomtrace / $DICOMTRACE, else the installed console
    script, else `python -m dicomtrace`."""
    if override:
        return shlex.split(override)
    exe = shutil.which("dicomtrace")
    if exe:
        if "/shims/" in exe and shutil.which("pyenv"):
            # a pyenv shim is a shell script that re-execs through pyenv: measure the real one
            real = subprocess.run(["pyenv", "which", "dicomtrace"], capture_output=True, text=True)
            if real.returncode == 0 and real.stdout.strip():
                return [real.stdout.strip()]
        return [exe]
    return [sys.executable, "-m", "dicomtrace"]


def subst(args: list[str], cap: Path, out: str) -> list[str]:
    return [a.replace("{cap}", str(cap)).replace("{out}", out) for a in args]


def measure_once(argv: list[str], cap: Path, timeout: float | None) -> dict:
    with tempfile.TemporaryDirectory(prefix="dtbench-out-") as out, tempfile.TemporaryFile() as err:
        cmd = subst(argv, cap, out)
        t0 = time.perf_counter()
        try:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, cwd=REPO)
        except OSError as e:
            return {"rc": 127, "error": f"cannot run {cmd[0]}: {e}"}
        deadline = None if timeout is None else t0 + timeout
        while True:
            pid, status, ru = os.wait4(proc.pid, os.WNOHANG if deadline else 0)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                pid, status, ru = os.wait4(proc.pid, 0)
                proc.returncode = -9
                return {"rc": -9, "error": f"timed out after {timeout:.0f} s"}
            time.sleep(0.01)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        run = {
            "rc": proc.returncode,
            "wall": wall,
            "cpu": ru.ru_utime + ru.ru_stime,
            "user": ru.ru_utime,
            "sys": ru.ru_stime,
            "peak_mb": ru.ru_maxrss / 1024.0,  # Linux: KiB
        }
        if proc.returncode != 0:
            err.seek(0)
            tail = err.read().decode(errors="replace").strip().splitlines()[-5:]
            run["error"] = f"exit {proc.returncode}: " + " | ".join(tail)
        return run


def measure(tool: str, argv: list[str], cap: Path, repeat: int, timeout: float | None, agg=statistics.median) -> Result:
    res = Result(tool, argv)
    log(f"{tool}: {shlex.join(subst(argv, cap, '{out}'))}  (x{repeat})")
    for _ in range(repeat):
        run = measure_once(argv, cap, timeout)
        res.runs.append(run)
        if run.get("error"):
            res.rc, res.error = run["rc"], run["error"]
            log(f"{tool} FAILED: {run['error']}")
            return res
    res.wall = agg(r["wall"] for r in res.runs)
    res.cpu = agg(r["cpu"] for r in res.runs)
    res.peak_mb = agg(r["peak_mb"] for r in res.runs)
    return res


def packet_count(cap: Path) -> int:
    """Packets in the capture, from capinfos (this also pulls the file into the page
    cache, so the first measured tool does not pay for disk reads)."""
    out = subprocess.run(["capinfos", "-T", "-r", "-c", str(cap)], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().split("\t")[-1])


def ensure_capture(scale: int, build: bool) -> Path | None:
    """The capture of that size, built if missing; None (with a message) when it is missing
    and building it would not fit on the disk (the capture, plus as much again of objects
    generated in the temp directory while it is made, plus 2 GB to spare)."""
    cap = DATA / f"store-{scale}g.pcap"
    if cap.is_file() and cap.stat().st_size > 0:
        return cap
    if not build:
        sys.exit(f"bench: {cap} is missing (run bash bench/build_capture.sh --scale {scale})")
    DATA.mkdir(parents=True, exist_ok=True)
    need = scale * 1.1 * GB
    free = min(shutil.disk_usage(DATA).free, shutil.disk_usage(tempfile.gettempdir()).free)
    if free < 2 * need + 2 * GB:
        log(f"{cap.name} skipped: building it needs ~{2 * need / GB:.0f} GB of disk, "
            f"{free / GB:.1f} GB free (df -h {DATA})")
        return None
    log(f"{cap.name} missing: building it (bench/build_capture.sh --scale {scale})")
    cmd = ["bash", str(HERE / "build_capture.sh"), "--scale", str(scale)]
    if os.geteuid() != 0 and shutil.which("sudo"):
        cmd = ["sudo", *cmd]
    subprocess.run(cmd, check=True)
    return cap


def fmt(x: float, nd: int = 2) -> str:
    return f"{x:.{nd}f}"


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b > 0 else "n/a"


def available_mb() -> float:
    """MemAvailable from /proc/meminfo, in MiB (inf when unknown)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("inf")


def tshark_skip(pair: Pair, scale: int, peaks: dict, ts_cmd: list[str]) -> Result | None:
    """A skipped tshark result when its memory, which grows with the capture, projected
    from a smaller size, would not fit in 80 % of the available memory (tshark would be
    killed or push the machine into swap); else None (run it)."""
    seen = peaks.get(pair.name)
    if seen is None:
        return None
    projected = seen[1] * scale / seen[0]
    avail = available_mb()
    if projected <= 0.8 * avail:
        return None
    res = Result("tshark", ts_cmd + pair.tshark, rc=0)
    res.error = (f"skipped: tshark would need ~{projected:,.0f} MB at {scale}x "
                 f"({seen[1]:,.0f} MB at {seen[0]}x), {avail:,.0f} MB available")
    log(res.error)
    return res


def summary_table(rows) -> str:
    """All figures in one Markdown table (for docs/performance.md)."""
    out = ["| size | command | dicomtrace wall / CPU / peak | tshark wall / CPU / peak | tshark / dicomtrace "
           "| dicomtrace / cat | us per packet |",
           "|---|---|---|---|---|---|---|"]
    for scale, packets, name, dt, ts, cat in rows:
        d = f"{dt.wall:.2f} s / {dt.cpu:.2f} s / {dt.peak_mb:.0f} MB" if dt.ok else "FAILED"
        t = (f"{ts.wall:.2f} s / {ts.cpu:.2f} s / {ts.peak_mb:.0f} MB" if ts.ok
             else ("skipped (memory)" if ts.error.startswith("skipped") else "FAILED"))
        r = f"{ts.wall / dt.wall:.1f}x" if dt.ok and ts.ok and dt.wall else "-"
        c = f"{dt.wall / cat.wall:.0f}x" if dt.ok and cat.ok and cat.wall else "-"
        us = f"{dt.wall / packets * 1e6:.2f}" if dt.ok and packets else "-"
        out.append(f"| {scale}x ({packets:,} pkts) | {name} | {d} | {t} | {r} | {c} | {us} |")
    return "\n".join(out)


def report(cap: Path, packets: int, pair: Pair, dt: Result, ts: Result, cat: Result | None = None) -> str:
    lines = [f"{pair.name}" + (f" ({pair.note})" if pair.note else "")]
    hdr = f"  {'tool':<12}{'wall s':>9}{'cpu s':>9}{'peak MB':>10}{'us/pkt':>9}   command"
    lines.append(hdr)
    for r in (dt, ts):
        cmd = shlex.join(subst(r.argv, cap, "{out}"))
        if r.ok:
            us = r.wall / packets * 1e6 if packets else 0.0
            lines.append(f"  {r.tool:<12}{fmt(r.wall):>9}{fmt(r.cpu):>9}{fmt(r.peak_mb, 1):>10}{fmt(us, 2):>9}   {cmd}")
        else:
            lines.append(f"  {r.tool:<12}{'SKIPPED' if r.error.startswith('skipped') else 'FAILED':>9}"
                         f"{'':>9}{'':>10}{'':>9}   {cmd}")
            lines.append(f"  {'':<12}{r.error}")
    if dt.ok and ts.ok:
        lines.append(
            f"  tshark/dicomtrace: wall {ratio(ts.wall, dt.wall)}, cpu {ratio(ts.cpu, dt.cpu)}, "
            f"memory {ratio(ts.peak_mb, dt.peak_mb)}   (>1: dicomtrace is faster / smaller)"
        )
    if dt.ok and packets:
        extra = f", {dt.wall / cat.wall:.0f}x the time of cat" if cat is not None and cat.ok and cat.wall else ""
        lines.append(f"  dicomtrace: {dt.wall / packets * 1e6:.2f} us per packet{extra}")
    return "\n".join(lines)


def parse_scales(s: str) -> list[int]:
    try:
        scales = [int(x) for x in s.replace(" ", "").split(",") if x]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of integers: {s!r}")
    if not scales or any(x < 1 for x in scales):
        raise argparse.ArgumentTypeError("scales must be positive integers")
    return scales


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description="dicomtrace vs tshark: wall time, CPU time and peak RSS on bench/data/store-<N>g.pcap",
        epilog="pairs: " + ", ".join(p.name for p in PAIRS),
    )
    ap.add_argument("--scale", type=parse_scales, default=[1, 2, 4], metavar="N[,N...]",
                    help="capture sizes to run on: 1 = store-1g.pcap, 2 = store-2g.pcap, ... "
                         "(default 1,2,4; a size whose capture is missing and does not fit on the "
                         "disk is skipped with a message)")
    ap.add_argument("--pairs", default="", help="comma-separated pair names to run (default: all)")
    ap.add_argument("--repeat", type=int, default=1, help="runs per command (default 1)")
    ap.add_argument("--stat", choices=["median", "min"], default="median",
                    help="how repeated runs are summarised, per figure (default median; min suits a busy machine)")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds before a run is killed (default 1800)")
    ap.add_argument("--dicomtrace", default=os.environ.get("DICOMTRACE"),
                    help="dicomtrace command (default: $DICOMTRACE, else the installed `dicomtrace`, "
                         "else `python -m dicomtrace`); e.g. a stand-in to test the harness")
    ap.add_argument("--tshark", default=os.environ.get("TSHARK", "tshark"), help="tshark executable")
    ap.add_argument("--no-build", action="store_true", help="fail instead of building a missing capture")
    ap.add_argument("--json", type=Path, help="also write all measurements to this JSON file")
    args = ap.parse_args(argv)

    pairs = PAIRS
    if args.pairs:
        wanted = [p.strip() for p in args.pairs.split(",") if p.strip()]
        unknown = set(wanted) - {p.name for p in PAIRS}
        if unknown:
            ap.error(f"unknown pair(s): {', '.join(sorted(unknown))}")
        pairs = [p for p in PAIRS if p.name in wanted]

    agg = min if args.stat == "min" else statistics.median
    if args.repeat < 1:
        ap.error("--repeat must be at least 1")
    dt_cmd = dicomtrace_cmd(args.dicomtrace)
    ts_cmd = shlex.split(args.tshark)
    if not shutil.which(ts_cmd[0]):
        sys.exit("bench: tshark not found (apt-get install tshark)")

    failed = False
    blocks, records, summary = [], [], []
    tshark_peak: dict[str, tuple[int, float]] = {}  # pair -> (scale, peak MB) of a run made
    for scale in args.scale:
        cap = ensure_capture(scale, not args.no_build)
        if cap is None:
            blocks.append(f"scale {scale}x: skipped (not enough disk to build the capture)")
            continue
        packets = packet_count(cap)
        size_mb = cap.stat().st_size / 1e6
        head = f"capture {cap.relative_to(REPO) if cap.is_relative_to(REPO) else cap}: {size_mb:.1f} MB, {packets:,} packets"
        load = os.getloadavg()[0]
        head += f"   (load average {load:.2f} on {os.cpu_count()} CPUs"
        head += ": machine busy, times are inflated)" if load > 0.5 else ")"
        log(head)
        if args.repeat > 1:
            head += f"\n{args.stat} of {args.repeat} runs per figure"
        cat = measure("cat", CAT, cap, args.repeat, args.timeout, agg)
        head += f"\ncat of the file: {cat.wall:.2f} s wall, {cat.cpu:.2f} s CPU"
        out = [head]
        tshark_runs: dict[tuple, Result] = {}
        for pair in pairs:
            dt = measure("dicomtrace", dt_cmd + pair.dicomtrace, cap, args.repeat, args.timeout, agg)
            key = tuple(pair.tshark)
            ts = tshark_runs.get(key)
            if ts is None:
                ts = tshark_skip(pair, scale, tshark_peak, ts_cmd)
                if ts is None:
                    ts = measure("tshark", ts_cmd + pair.tshark, cap, args.repeat, args.timeout, agg)
                    if ts.ok:
                        tshark_peak.setdefault(pair.name, (scale, ts.peak_mb))
                tshark_runs[key] = ts
            failed |= not dt.ok or not (ts.ok or ts.error.startswith("skipped"))
            out.append(report(cap, packets, pair, dt, ts, cat))
            summary.append((scale, packets, pair.name, dt, ts, cat))
            for r in (dt, ts):
                records.append({"load_average_1m": load,
                    "capture": cap.name, "bytes": cap.stat().st_size, "packets": packets, "pair": pair.name,
                    "tool": r.tool, "argv": subst(r.argv, cap, "{out}"), "ok": r.ok, "error": r.error,
                    "wall_s": r.wall, "cpu_s": r.cpu, "peak_mb": r.peak_mb, "cat_wall_s": cat.wall,
                    "us_per_packet": r.wall / packets * 1e6 if r.ok and packets else None, "runs": r.runs,
                })
        blocks.append("\n\n".join(out))
        print(blocks[-1] + "\n\n" + summary_table(summary) + "\n", flush=True)  # as each size ends
    blocks.append(summary_table(summary))

    print("all sizes:\n" + blocks[-1])
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        meta = {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "host_cpus": os.cpu_count(), "repeat": args.repeat, "stat": args.stat}
        args.json.write_text(json.dumps({"meta": meta, "results": records}, indent=2) + "\n")
        log(f"wrote {args.json}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
