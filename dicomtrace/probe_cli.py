"""``echo``, ``store``, ``listen``, ``monitor``: the active checks (parsing and wiring only)."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time

from rich.text import Text

from dicomtrace.probe import (
    EXIT_DICOM_FAILURE, EXIT_INTERRUPTED, EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE,
)
from dicomtrace.probe.session import DEFAULT_CALLED, DEFAULT_CALLING, Target

CHECK_EXIT_HELP = (f"exit codes: {EXIT_OK} the check succeeded; {EXIT_DICOM_FAILURE} the peer "
                   "answered but refused: association rejected or aborted, presentation context "
                   f"rejected, a failure status; {EXIT_USAGE} wrong command line or unreadable "
                   f"file; {EXIT_UNREACHABLE} no association: connection refused or unanswered, "
                   f"or no answer to the A-ASSOCIATE-RQ; {EXIT_INTERRUPTED} interrupted")


def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port (1-65535)")
    return int(text)


def _positive(kind):
    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            v = None
        if v is None or v <= 0:
            raise argparse.ArgumentTypeError(f"{text!r} is not a positive number")
        return v
    return parse


def _add_common(p, peer: bool = True) -> None:
    if peer:
        p.add_argument("host", help="the peer's host name or address")
        p.add_argument("port", type=_port, help="the peer's DICOM port")
        p.add_argument("--calling", default=DEFAULT_CALLING, metavar="AE",
                       help=f"our (calling) AE title (default {DEFAULT_CALLING})")
        p.add_argument("--called", default=DEFAULT_CALLED, metavar="AE",
                       help=f"the peer's (called) AE title (default {DEFAULT_CALLED})")
    p.add_argument("--timeout", type=_positive(float), default=10.0, metavar="S",
                   help="seconds to wait for the connection, the association and each response "
                        "(default 10)")
    p.add_argument("--format", choices=("text", "json"), default="text", help="output format")
    p.add_argument("--capture", metavar="FILE",
                   help="capture our own traffic with the peer (tcpdump) to FILE; when the "
                        "check fails, the wire-level analysis of it follows")


def add_commands(sub) -> None:
    p = sub.add_parser("echo", help="C-ECHO a peer: connect, association and round-trip times",
                       epilog=CHECK_EXIT_HELP)
    _add_common(p)
    p.add_argument("--count", type=_positive(int), default=1, metavar="N",
                   help="C-ECHOs to send on the association (default 1)")
    p.set_defaults(func=cmd_echo)

    p = sub.add_parser("store", help="C-STORE files or generated test images; a size sweep",
                       epilog=CHECK_EXIT_HELP + ". Generated images: pixel data of --size MB, "
                       "any SOP class; transfer syntaxes: Implicit/Explicit VR Little Endian, "
                       "Deflated, RLE Lossless; JPEG-LS and JPEG 2000 when pydicom's encoder "
                       "plugins (pyjpegls, pylibjpeg-openjpeg) are installed.")
    _add_common(p)
    p.add_argument("files", nargs="*", metavar="FILE", help="DICOM Part 10 files to send")
    p.add_argument("--generate", type=_positive(int), metavar="N",
                   help="send N generated test images instead of files")
    p.add_argument("--size", type=_positive(float), default=0.5, metavar="MB",
                   help="pixel data size of each generated image (default 0.5)")
    p.add_argument("--transfer-syntax", default="1.2.840.10008.1.2.1", metavar="UID",
                   help="transfer syntax of generated images, UID or keyword (default Explicit "
                        "VR Little Endian; e.g. RLELossless)")
    p.add_argument("--sop-class", default="CT", metavar="CLASS",
                   help="SOP class of generated images: CT, MR, SC, CR, US, a keyword such as "
                        "MRImageStorage, or a UID (default CT)")
    p.add_argument("--sizes", metavar="MB,MB,...",
                   help="threshold sweep: one association per size (e.g. 1,10,100); says the "
                        "first size that fails and the sizes that slow down")
    p.set_defaults(func=cmd_store)

    p = sub.add_parser("listen", help="a test SCP that mimics a PACS in good or bad ways",
                       description="A test SCP (Verification, Storage, Query/Retrieve C-FIND and "
                                   "C-MOVE): prints what arrives and, when an association ends, "
                                   "what happened on it. Runs until Ctrl-C/SIGTERM, --count or "
                                   "--duration.",
                       epilog="exit codes: 0 served (whatever the peers did); 2 wrong command "
                              "line or the port cannot be opened")
    p.add_argument("port", type=_port, help="TCP port to listen on")
    p.add_argument("--bind", default="0.0.0.0", metavar="ADDR",
                   help="address to listen on (default 0.0.0.0: all IPv4 addresses)")
    p.add_argument("--ae", metavar="AE", help="our AE title; when given, requests calling another "
                   "title are rejected (called-AE-title-not-recognized)")
    p.add_argument("--accept", default="all", metavar="CLASSES",
                   help="comma list of verification, storage, find, move, all, or SOP classes "
                        "(CT, MRImageStorage, UIDs); others are rejected (default all)")
    p.add_argument("--reject-calling", action="append", default=[], metavar="AE[,AE]",
                   help="reject associations from these calling AE titles "
                        "(calling-AE-title-not-recognized)")
    p.add_argument("--status", metavar="CODE",
                   help="answer requests with this status, e.g. 0xA700 (out of resources)")
    p.add_argument("--every", type=_positive(int), default=1, metavar="N",
                   help="with --status: only every Nth request (default every one)")
    p.add_argument("--delay", type=float, default=0.0, metavar="S",
                   help="wait S seconds before each answer")
    p.add_argument("--abort-after", type=_positive(int), metavar="N",
                   help="abort (A-ABORT) instead of answering every Nth request")
    p.add_argument("--move-destination", action="append", default=[], metavar="AE=HOST:PORT",
                   help="where C-MOVE may send objects (repeatable); others get 0xA801")
    p.add_argument("--output", metavar="DIR", help="keep received objects in DIR")
    p.add_argument("--count", type=_positive(int), metavar="N", help="stop after N associations")
    p.add_argument("--duration", type=_positive(float), metavar="S", help="stop after S seconds")
    p.add_argument("--format", choices=("text", "json"), default="text",
                   help="json: one JSON object per association as it ends (JSON Lines)")
    p.add_argument("--capture", metavar="FILE",
                   help="capture the SCP's traffic to FILE; its analysis is printed at the end")
    p.set_defaults(func=cmd_listen)

    p = sub.add_parser("monitor", help="periodic C-ECHO (and C-STORE): success rate, latency, "
                       "state changes, Prometheus metrics",
                       epilog="exit codes: 0 no failure that --fail-on counts; 1 failures "
                              "(DICOM: rejected, aborted, failure status); 3 every failure was "
                              "a connection or association that could not be made; 2 wrong "
                              "command line; 130 interrupted")
    _add_common(p)
    p.add_argument("--every", default="30s", metavar="INTERVAL",
                   help="time between checks: 30s, 500ms, 2m (default 30s)")
    p.add_argument("--store", action="store_true", help="also C-STORE a small test image each time")
    p.add_argument("--count", type=_positive(int), metavar="N", help="stop after N rounds")
    p.add_argument("--duration", type=_positive(float), metavar="S", help="stop after S seconds")
    p.add_argument("--fail-on", default="any", metavar="WHEN",
                   help="when the exit code says failure: any (default), all, never, or a "
                        "failure rate such as 10%%")
    p.add_argument("--metrics-port", type=_port, metavar="PORT",
                   help="serve Prometheus text metrics on this port")
    p.add_argument("--metrics-address", default="127.0.0.1", metavar="ADDR",
                   help="address of the metrics endpoint (default 127.0.0.1)")
    p.set_defaults(func=cmd_monitor)


def _target(args) -> Target:
    return Target(args.host, args.port, args.calling, args.called, args.timeout)


def _usage(err, message: str) -> int:
    err.print(f"dicomtrace: error: {message}", markup=False)
    return EXIT_USAGE


def _emit(report, args, out) -> int:
    from dicomtrace.probe.render import print_report

    if args.format == "json":
        print(json.dumps(report.to_json(), indent=1))
    else:
        print_report(report, out)
    return report.exit_code


def _checked(args, err, run):
    """Run a check (under --capture when asked); returns its report, or an exit code."""
    from dicomtrace.capture import CaptureError
    from dicomtrace.probe.session import resolve

    problem = resolve(args.host)
    if problem:
        return _usage(err, problem)
    if not args.capture:
        return run()
    from dicomtrace.probe.capture import SelfCapture

    cap = SelfCapture(args.capture, args.host, args.port)
    try:
        with cap:
            report = run()
    except CaptureError as e:
        return _usage(err, f"--capture: {e}")
    if report.exit_code != EXIT_OK:
        report.capture = cap.analysis()
    return report


def cmd_echo(args, out, err) -> int:
    from dicomtrace.probe.echo import echo

    report = _checked(args, err, lambda: echo(_target(args), args.count))
    return report if isinstance(report, int) else _emit(report, args, out)


def cmd_store(args, out, err) -> int:
    from dicomtrace.probe import images, store

    given = [n for n, v in (("FILE", args.files), ("--generate", args.generate),
                            ("--sizes", args.sizes)) if v]
    if len(given) != 1:
        return _usage(err, "store: give FILEs, --generate N or --sizes LIST (one of them)")
    try:
        ts = images.transfer_syntax_uid(args.transfer_syntax)
        sop = images.sop_class_uid(args.sop_class)
        sizes = [float(s) for s in args.sizes.split(",")] if args.sizes else []
        if any(s <= 0 for s in sizes):
            raise ValueError("--sizes: sizes must be positive")
        items = store.load_files(args.files) if args.files else None
    except ValueError as e:
        return _usage(err, str(e))
    target = _target(args)
    if sizes:
        report = _checked(args, err, lambda: store.sweep(target, sizes, sop, ts))
    else:
        report = _checked(args, err, lambda: store.store(
            target, items or store.generate(args.generate, args.size, sop, ts)))
    return report if isinstance(report, int) else _emit(report, args, out)


def _stop_on_signals(stop: threading.Event):
    return {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}


def cmd_listen(args, out, err) -> int:
    from dicomtrace.probe.listen import Behaviour, TestSCP, parse_accept, parse_destination

    try:
        status = int(args.status, 0) if args.status else None
        if status is not None and not 0 <= status <= 0xFFFF:
            raise ValueError
    except ValueError:
        return _usage(err, f"--status {args.status!r}: give a status code such as 0xA700")
    try:
        accept = parse_accept(args.accept)
        dests = dict(parse_destination(d) for d in args.move_destination)
    except ValueError as e:
        return _usage(err, str(e))
    if args.delay < 0:
        return _usage(err, "--delay must not be negative")
    reject = frozenset(a.strip() for v in args.reject_calling for a in v.split(",") if a.strip())
    b = Behaviour(ae_title=args.ae or "ANY-SCP", require_called=bool(args.ae), accept=accept,
                  reject_calling=reject, status=status, every=args.every, delay=args.delay,
                  abort_after=args.abort_after, move_destinations=dests)
    stop = threading.Event()
    served = []

    def line(text):
        if args.format == "text":
            out.print(Text(text))

    def ended(s):
        served.append(s)
        if args.format == "json":
            print(json.dumps(s.to_json()), flush=True)
        if args.count and len(served) >= args.count:
            stop.set()

    scp = TestSCP(b, line, ended, storage_dir=args.output)
    capture = None
    if args.capture:
        from dicomtrace.probe.capture import SelfCapture

        capture = SelfCapture(args.capture, None, args.port)
        try:
            capture.__enter__()
        except Exception as e:  # CaptureError: one line
            return _usage(err, f"--capture: {e}")
    previous = _stop_on_signals(stop)
    try:
        try:
            scp.start(args.bind, args.port)
        except OSError as e:
            return _usage(err, f"cannot listen on {args.bind}:{args.port}: {e.strerror or e}")
        if args.format == "text":
            classes = f"{len(accept)} SOP classes"
            out.print(Text(f"listening on {args.bind}:{args.port} as “{b.ae_title}”, accepting "
                           f"{classes}" + (f", answering {args.status} every {args.every}"
                                           if status is not None else "")
                           + (f", delay {args.delay:g} s" if args.delay else "")
                           + (f", abort every {args.abort_after}" if args.abort_after else "")
                           + (f", rejecting {', '.join(sorted(reject))}" if reject else "")))
        sys.stdout.flush()
        stop.wait(args.duration)
    finally:
        scp.stop()
        for s, h in previous.items():
            signal.signal(s, h)
        if capture is not None:
            capture.__exit__(None, None, None)
    if capture is not None:
        doc = capture.analysis()
        if args.format == "json":
            print(json.dumps({"capture": doc["file"], "analysis": doc["analysis"]}))
        else:
            from dicomtrace.probe.render import print_capture

            print_capture(doc, out)
    if args.format == "text":
        out.print(Text(f"served {len(served)} association(s)"))
    return EXIT_OK


def cmd_monitor(args, out, err) -> int:
    from dicomtrace.probe import monitor
    from dicomtrace.probe.session import resolve

    try:
        every = monitor.parse_interval(args.every)
        fail_on = monitor.parse_fail_on(args.fail_on)
    except ValueError as e:
        return _usage(err, str(e))
    problem = resolve(args.host)
    if problem:
        return _usage(err, problem)
    metrics = None
    if args.metrics_port:
        try:
            metrics = monitor.Metrics(args.metrics_port, args.metrics_address)
        except OSError as e:
            return _usage(err, f"cannot serve metrics on {args.metrics_address}:"
                               f"{args.metrics_port}: {e.strerror or e}")
    target = _target(args)
    stop = threading.Event()
    text = args.format == "text"

    def on_round(r):
        if text:
            lat = f"{r.latency * 1000:.1f} ms" if r.latency is not None else "-"
            state = "ok" if r.ok else f"FAILED {r.code}: {r.message}"
            out.print(Text(f"{time.strftime('%H:%M:%S', time.localtime(r.time))} {r.check} "
                           f"{lat} {state}"))

    def on_change(ch, r):
        if text and ch["from"] != "unknown":
            out.print(Text(f"{time.strftime('%H:%M:%S', time.localtime(r.time))} {r.check}: "
                           f"{ch['from'].upper()} → {ch['to'].upper()}"
                           + (f" ({ch['reason']})" if ch["reason"] else ""), style="bold"))

    if text:
        out.print(Text(f"monitoring {target.label()} “{target.calling}” → “{target.called}” every "
                       f"{args.every}" + (" (echo and store)" if args.store else " (echo)")
                       + (f"; metrics on http://{args.metrics_address}:{args.metrics_port}/metrics"
                          if metrics else "")))
    previous = _stop_on_signals(stop)
    capture = None
    try:
        if args.capture:
            from dicomtrace.probe.capture import SelfCapture

            capture = SelfCapture(args.capture, args.host, args.port)
            capture.__enter__()
        state = monitor.run(target, every, count=args.count, duration=args.duration,
                            with_store=args.store, metrics=metrics, on_round=on_round,
                            on_change=on_change, stop=stop)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        if capture is not None:
            capture.__exit__(None, None, None)
        if metrics is not None:
            metrics.close()
    code = state.exit_code(fail_on)
    summary = state.summary()
    analysis = capture.analysis() if capture is not None and code != EXIT_OK else None
    if args.format == "json":
        doc = {"command": "monitor", "peer": {"host": target.host, "port": target.port,
                                              "calling_ae": target.calling,
                                              "called_ae": target.called},
               "summary": summary, "changes": state.changes, "exit_code": code,
               "rounds": [{"time": r.time, "check": r.check, "ok": r.ok,
                           "latency_ms": None if r.latency is None else round(r.latency * 1000, 3),
                           "code": r.code, "message": r.message} for r in state.rounds]}
        if analysis is not None:
            doc["capture"] = {"file": analysis["file"], "analysis": analysis["analysis"]}
        print(json.dumps(doc, indent=1))
    else:
        for check, s in summary.items():
            out.print(Text(f"{check}: {s['succeeded']}/{s['checks']} succeeded "
                           f"({s['success_rate']:.0%}); latency p50 {s['latency_p50_ms']} ms, "
                           f"p90 {s['latency_p90_ms']} ms, p99 {s['latency_p99_ms']} ms, max "
                           f"{s['latency_max_ms']} ms"))
        if analysis is not None:
            from dicomtrace.probe.render import print_capture

            print_capture(analysis, out)
    return code
