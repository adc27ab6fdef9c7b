"""``dicomtrace live``: analyse while capturing (parsing and wiring only)."""

from __future__ import annotations

import json
import signal

from rich.text import Text

LIVE_EXIT_HELP = ("exit codes: 0 captured and analysed (findings do not change it); 1 analysed, "
                  "but packets were dropped or parts could not be read; 2 the capture could not "
                  "start (no such interface, no permission, bad filter) or a wrong command line")


def add_commands(sub, add_port_arg) -> None:
    p = sub.add_parser("live", help="capture from an interface and analyse while packets arrive",
                       description="Capture with tcpdump and analyse as packets arrive: each "
                                   "association is printed when it ends, with its findings; at "
                                   "the end the whole analysis as `analyze` gives it.",
                       epilog=LIVE_EXIT_HELP)
    p.add_argument("-i", "--interface", required=True, metavar="IFACE",
                   help="interface to capture on (e.g. eth0, lo, any)")
    p.add_argument("-f", "--filter", default="", metavar="BPF",
                   help="capture filter, e.g. 'host 10.1.2.3 and port 104'")
    p.add_argument("-w", "--write", metavar="FILE", help="also write the raw packets to FILE (pcap)")
    p.add_argument("--ring", metavar="SIZE_MB,FILES",
                   help="with -w: rotate like tcpdump -C/-W: files FILE0, FILE1, ... of SIZE_MB "
                        "each, reusing the oldest after FILES")
    p.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    p.add_argument("--count", type=int, metavar="N", help="stop after N packets")
    p.add_argument("--dashboard", action="store_true",
                   help="a terminal dashboard (open associations, operations, findings, drops)")
    p.add_argument("--format", choices=("text", "json"), default="text",
                   help="json: the analysis document of `analyze --format json` at the end")
    add_port_arg(p)
    p.add_argument("--no-heuristic", action="store_true",
                   help="only look for DICOM on the --port list, not on every TCP port")
    p.set_defaults(func=cmd_live)


def parse_ring(text: str) -> tuple[int, int]:
    size, sep, files = text.partition(",")
    try:
        mb, n = float(size), int(files)
    except ValueError:
        mb, n = 0, 0
    if not sep or mb <= 0 or n < 1:
        raise ValueError(f"--ring {text!r}: give SIZE_MB,FILES, e.g. 100,10")
    return int(mb * 1_000_000), n


def association_line(a) -> str:
    from collections import Counter

    from dicomtrace.output.terminal import clock, size

    ops = Counter(f"{op.service} {op.final.info.category if op.final else 'unanswered'}"
                  for op in a.operations)
    what = ", ".join(f"{n} {k}" for k, n in ops.items()) or "no operation"
    moved = sum(a.pdata_bytes.values())
    return (f"{clock(a.end_time)} association {a.id} {a.requestor} → {a.acceptor} "
            f"“{a.calling_ae or '?'}” → “{a.called_ae or '?'}”: {a.outcome}; {what}; "
            f"{size(moved)} of PDVs")


def cmd_live(args, out, err) -> int:
    from dicomtrace.capture import CaptureError
    from dicomtrace.capture.live import LiveCapture, RingWriter
    from dicomtrace.cli import EXIT_FATAL, EXIT_OK, EXIT_PROBLEMS
    from dicomtrace.findings import evaluate
    from dicomtrace.live import LiveAnalysis, Tap
    from dicomtrace.model.builder import AnalysisConfig
    from dicomtrace.output.json_report import analysis_json
    from dicomtrace.output.terminal import SEVERITY_STYLE, print_analysis

    writer = None
    if args.ring and not args.write:
        err.print("dicomtrace: error: --ring needs -w FILE", markup=False)
        return EXIT_FATAL
    if args.write:
        ring = (None, None)
        if args.ring:
            try:
                ring = parse_ring(args.ring)
            except ValueError as e:
                err.print(f"dicomtrace: error: {e}", markup=False)
                return EXIT_FATAL
        try:
            writer = RingWriter(args.write, *ring)
            open(writer.name(0), "wb").close()
        except OSError as e:
            err.print(f"dicomtrace: error: cannot write {args.write}: {e.strerror}", markup=False)
            return EXIT_FATAL
    config = AnalysisConfig(ports=args.port, heuristic=not args.no_heuristic)
    capture = LiveCapture(args.interface, args.filter, count=args.count, duration=args.duration,
                          write=writer)
    text = args.format == "text" and not args.dashboard

    def on_association(a):
        out.print(Text(association_line(a)))

    def on_finding(f):
        where = f" [association {f.association}]" if f.association is not None else ""
        out.print(Text(f"  {f.severity.upper():8}", style=SEVERITY_STYLE.get(f.severity, ""))
                  + Text(f"{f.code}{where}: {f.message}"))

    live = LiveAnalysis(config, [Tap(on_association, on_finding)] if text else [])
    previous = {s: signal.signal(s, lambda *_: capture.stop()) for s in (signal.SIGINT, signal.SIGTERM)}
    dashboard = None
    try:
        with capture as reader:
            if not args.dashboard:
                err.print(f"dicomtrace: capturing on {args.interface}"
                          + (f" ({args.filter})" if args.filter else "")
                          + "; Ctrl-C to stop", markup=False)
            if args.dashboard:
                from dicomtrace.live.dashboard import run_dashboard

                analysis, dashboard = run_dashboard(live, reader, capture)
            else:
                analysis = live.run(reader)
    except CaptureError as e:
        err.print(f"dicomtrace: error: {e}", markup=False)
        return EXIT_FATAL
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    findings = evaluate(analysis)
    stats = capture.stats
    drops = capture_drops(stats)
    if drops is not None:
        findings.insert(0, drops)
    if args.format == "json":
        doc = analysis_json(analysis, [f.to_json() for f in findings])
        doc["capture"]["drops"] = stats.to_json()
        if writer is not None:
            doc["capture"]["written"] = writer.written
        print(json.dumps(doc, indent=1))
    else:
        still = [a for a in analysis.associations if a.outcome == "incomplete"]
        if still:
            out.rule("Open when the capture stopped")
            for a in still:
                out.print(Text(association_line(a)))
        print_analysis(analysis, findings, out)
        out.print(Text(f"Capture: {stats.captured if stats.captured is not None else '?'} packets "
                       f"captured, {stats.dropped_kernel or 0} dropped by the kernel, "
                       f"{stats.dropped_interface or 0} by the interface"
                       + (f"; written to {', '.join(writer.written)}" if writer else "")))
    problems = analysis.capture.problems
    for p in problems:
        err.print(f"dicomtrace: {p.severity}: {p}", markup=False, highlight=False)
    return EXIT_PROBLEMS if problems or drops is not None else EXIT_OK


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
