"""`dicomtrace live -i IFACE`: the analysis of `analyze` while packets arrive (tcpdump)."""

from __future__ import annotations

import signal

from rich.text import Text

from dicomtrace.cli.common import (EXIT_OK, EXIT_PROBLEMS, check_output_file, config_from, fail,
                                   positive_float, positive_int, ports_type, warn_problems)
from dicomtrace.ports import DEFAULT_PORTS, parse_ports


def add_arguments(p) -> None:
    p.description = ("Capture with tcpdump and analyse as packets arrive: each association is "
                     "printed when it ends, with its findings; at the end, the whole analysis as "
                     "`analyze` gives it, with the capture's drop counters.")
    p.epilog = ("exit codes: 0 captured and analysed (findings do not change it); 1 analysed, but "
                "packets were dropped or parts could not be read; 2 the capture could not start "
                "(no such interface, no permission, bad filter) or a wrong command line")
    p.add_argument("-i", "--interface", required=True, metavar="IFACE",
                   help="interface to capture on (e.g. eth0, lo, any)")
    p.add_argument("-f", "--filter", default="", metavar="BPF",
                   help="capture filter, e.g. 'host 10.1.2.3 and port 104'")
    p.add_argument("-w", "--write", metavar="FILE", help="also write the raw packets to FILE (pcap)")
    p.add_argument("--ring", metavar="SIZE_MB,FILES",
                   help="with -w: rotate like tcpdump -C/-W: FILE0, FILE1, ... of SIZE_MB each, "
                        "reusing the oldest after FILES")
    p.add_argument("--duration", type=positive_float, metavar="S", help="stop after S seconds")
    p.add_argument("--count", type=positive_int, metavar="N", help="stop after N packets")
    p.add_argument("--dashboard", action="store_true",
                   help="a terminal dashboard: open associations, operations, findings, drops")
    p.add_argument("--format", choices=("text", "json"), default="text",
                   help="json: the document of `analyze --format json`, at the end")
    p.add_argument("--port", type=ports_type, default=parse_ports(DEFAULT_PORTS), metavar="LIST",
                   help=f"DICOM ports and ranges (default {DEFAULT_PORTS})")
    p.add_argument("--no-heuristic", action="store_true",
                   help="only look for DICOM on the --port list, not on every TCP port")


def parse_ring(text: str) -> tuple[int, int]:
    size, sep, files = text.partition(",")
    try:
        mb, n = float(size), int(files)
    except ValueError:
        mb, n = 0, 0
    if not sep or not mb > 0 or n < 1:
        raise ValueError(f"--ring {text!r}: give SIZE_MB,FILES, e.g. 100,10")
    return int(mb * 1_000_000), n


def association_line(a) -> str:
    from collections import Counter

    from dicomtrace.output.text import clock, size

    ops = Counter(f"{op.service} {op.final.info.category if op.final else 'unanswered'}"
                  for op in a.operations)
    what = ", ".join(f"{n} {k}" for k, n in ops.items()) or "no operation"
    return (f"{clock(a.end_time)} association {a.id} {a.requestor} → {a.acceptor} "
            f"“{a.calling_ae or '?'}” → “{a.called_ae or '?'}”: {a.outcome}; {what}; "
            f"{size(sum(a.pdata_bytes.values()))} of PDVs")


def finding_line(f) -> Text:
    from dicomtrace.output.terminal import SEVERITY_STYLE

    where = f" [association {f.association}]" if f.association is not None else ""
    return (Text(f"  {f.severity.upper():8}", style=SEVERITY_STYLE.get(f.severity, ""))
            + Text(f"{f.code}{where}: {f.message}"))


def capture_drops(stats):
    """capture-drops, when the kernel or the interface dropped packets (pcap_stats)."""
    from dicomtrace.findings.base import Finding
    from dicomtrace.findings.codes import advice

    if not stats.dropped:
        return None
    return Finding("capture-drops", "warning",
                   f"The capture lost packets: {stats.dropped_kernel or 0} dropped by the kernel, "
                   f"{stats.dropped_interface or 0} by the interface, of "
                   f"{stats.received if stats.received is not None else '?'} that matched the "
                   "filter. Missing bytes in the analysis may be the capture's, not the network's.",
                   advice("capture-drops"), details=stats.to_json())


def writer_from(args):
    from dicomtrace.capture.live import RingWriter

    if args.ring and not args.write:
        fail(args, "--ring needs -w FILE")
    if not args.write:
        return None
    ring = (None, None)
    if args.ring:
        try:
            ring = parse_ring(args.ring)
        except ValueError as e:
            fail(args, str(e))
    w = RingWriter(args.write, *ring)
    check_output_file(args, w.name(0))
    return w


def run(args, out, err) -> int:
    from dicomtrace.capture.live import LiveCapture
    from dicomtrace.findings import evaluate
    from dicomtrace.live import LiveAnalysis, Tap
    from dicomtrace.output import AnalysisResult, Section, render

    writer = writer_from(args)
    capture = LiveCapture(args.interface, args.filter, count=args.count, duration=args.duration,
                          write=writer)
    text = args.format == "text" and not args.dashboard
    taps = [Tap(lambda a: out.print(Text(association_line(a)), soft_wrap=True),
                lambda f: out.print(finding_line(f), soft_wrap=True))] if text else []
    live = LiveAnalysis(config_from(args), taps)
    # Ctrl-C, a kill, and a terminal that goes away (SIGHUP: its window closed, its tmux or
    # ssh session ended) all stop tcpdump and end the analysis: tcpdump runs in its own
    # session, so without this a hang-up would leave it capturing on its own
    previous = {s: signal.signal(s, lambda *_: capture.stop())
                for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        with capture as reader:
            if args.dashboard:
                from dicomtrace.live.dashboard import run_dashboard

                analysis = run_dashboard(live, reader, capture)
            else:
                err.print(f"dicomtrace: capturing on {args.interface}"
                          + (f" ({args.filter})" if args.filter else "") + "; Ctrl-C to stop",
                          markup=False, highlight=False)
                analysis = live.run(reader)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    findings = evaluate(analysis)
    stats = capture.stats
    drops = capture_drops(stats)
    if drops is not None:
        findings.insert(0, drops)
    live_doc = {"drops": stats.to_json(), "written": writer.written if writer else []}

    def print_live(console):
        still = [a for a in analysis.associations if a.outcome == "incomplete"]
        if still:
            console.rule("Open when the capture stopped")
            for a in still:
                console.print(Text(association_line(a)), soft_wrap=True)
        console.print(Text(
            f"Capture: {stats.captured if stats.captured is not None else '?'} packets captured, "
            f"{stats.dropped_kernel or 0} dropped by the kernel, {stats.dropped_interface or 0} "
            "by the interface" + (f"; written to {', '.join(writer.written)}" if writer else "")), soft_wrap=True)

    result = AnalysisResult(analysis, findings, associations_in_capture=len(analysis.associations),
                            sections=[Section("live", live_doc, print_live)])
    render("analysis", args.format, result, out)
    code = warn_problems(analysis.capture, err)
    return EXIT_PROBLEMS if drops is not None else code if code else EXIT_OK
