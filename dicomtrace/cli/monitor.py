"""`dicomtrace monitor HOST PORT`: periodic C-ECHO (and C-STORE), success rate, latency
percentiles, changes of state, Prometheus metrics; --fail-on exit codes for cron."""

from __future__ import annotations

import threading
import time

from rich.text import Text

from dicomtrace.cli.checks import add_check_args, check_peer, restore, stop_on_signals, target
from dicomtrace.cli.common import fail, positive_float, positive_int, tcp_port
from dicomtrace.probe import EXIT_OK


def add_arguments(p) -> None:
    p.epilog = ("exit codes: 0 no failure that --fail-on counts; 1 failures (DICOM: rejected, "
                "aborted, failure status); 3 every failure was a connection or association that "
                "could not be made; 2 wrong command line; 130 interrupted")
    add_check_args(p)
    p.add_argument("--every", default="30s", metavar="INTERVAL",
                   help="time between checks: 30s, 500ms, 2m (default 30s)")
    p.add_argument("--store", action="store_true", help="also C-STORE a small test image each time")
    p.add_argument("--count", type=positive_int, metavar="N", help="stop after N rounds")
    p.add_argument("--duration", type=positive_float, metavar="S", help="stop after S seconds")
    p.add_argument("--fail-on", default="any", metavar="WHEN",
                   help="when the exit code says failure: any (default), all, never, or a "
                        "failure rate such as 10%%")
    p.add_argument("--metrics-port", type=tcp_port, metavar="PORT",
                   help="serve Prometheus text metrics on this port while monitoring")
    p.add_argument("--metrics-address", metavar="ADDR",
                   help="address of the metrics endpoint (default 127.0.0.1)")


def run(args, out, err) -> int:
    from dicomtrace.probe import monitor

    try:
        every = monitor.parse_interval(args.every)
        fail_on = monitor.parse_fail_on(args.fail_on)
    except ValueError as e:
        fail(args, str(e))
    if args.metrics_address and not args.metrics_port:
        fail(args, "--metrics-address needs --metrics-port")
    check_peer(args)
    metrics = None
    if args.metrics_port:
        address = args.metrics_address or "127.0.0.1"
        try:
            metrics = monitor.Metrics(args.metrics_port, address)
        except OSError as e:
            fail(args, f"cannot serve metrics on {address}:{args.metrics_port}: {e.strerror or e}")
    peer = target(args)
    stop = threading.Event()
    text = args.format == "text"

    def stamp(r) -> str:
        return time.strftime("%H:%M:%S", time.localtime(r.time))

    def on_round(r):
        if text:
            lat = f"{r.latency * 1000:.1f} ms" if r.latency is not None else "-"
            state = "ok" if r.ok else f"FAILED {r.code}: {r.message}"
            out.print(Text(f"{stamp(r)} {r.check} {lat} {state}"), soft_wrap=True)

    def on_change(ch, r):
        if text and ch["from"] != "unknown":
            out.print(Text(f"{stamp(r)} {r.check}: {ch['from'].upper()} → {ch['to'].upper()}"
                           + (f" ({ch['reason']})" if ch["reason"] else ""), style="bold"), soft_wrap=True)

    if text:
        out.print(Text(f"monitoring {peer.label()} “{peer.calling}” → “{peer.called}” every "
                       f"{args.every}" + (" (echo and store)" if args.store else " (echo)")
                       + (f"; metrics on http://{args.metrics_address or '127.0.0.1'}:"
                          f"{args.metrics_port}/metrics" if metrics else "")), soft_wrap=True)
    previous = stop_on_signals(stop)
    capture = None
    try:
        if args.capture:
            from dicomtrace.probe.capture import SelfCapture

            capture = SelfCapture(args.capture, args.host, args.port)
            capture.__enter__()
        state = monitor.run(peer, every, count=args.count, duration=args.duration,
                            with_store=args.store, metrics=metrics, on_round=on_round,
                            on_change=on_change, stop=stop)
    finally:
        restore(previous)
        if capture is not None:
            capture.__exit__(None, None, None)
        if metrics is not None:
            metrics.close()
    code = state.exit_code(fail_on)
    summary = state.summary()
    wire = capture.analysis() if capture is not None and code != EXIT_OK else None
    if not text:
        doc = {"command": "monitor", "peer": {"host": peer.host, "port": peer.port,
                                              "calling_ae": peer.calling, "called_ae": peer.called},
               "summary": summary, "changes": state.changes, "exit_code": code,
               "rounds": [{"time": r.time, "check": r.check, "ok": r.ok,
                           "latency_ms": None if r.latency is None else round(r.latency * 1000, 3),
                           "code": r.code, "message": r.message} for r in state.rounds]}
        if wire is not None:
            doc["capture"] = {"file": wire["file"], "analysis": wire["analysis"]}
        from dicomtrace.output import write_json

        write_json(doc, out)
        return code
    for check, s in summary.items():
        out.print(Text(f"{check}: {s['succeeded']}/{s['checks']} succeeded "
                       f"({s['success_rate']:.0%}); latency p50 {s['latency_p50_ms']} ms, "
                       f"p90 {s['latency_p90_ms']} ms, p99 {s['latency_p99_ms']} ms, max "
                       f"{s['latency_max_ms']} ms"), soft_wrap=True)
    if wire is not None:
        from dicomtrace.probe.render import print_capture

        print_capture(wire, out)
    return code
