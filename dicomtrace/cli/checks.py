"""What the active checks' commands (echo, store, listen, monitor) share: the peer and AE
options, the exit codes, --capture, and printing a report.  Parsing and wiring only."""

from __future__ import annotations

import signal
import threading

from dicomtrace.cli.common import fail, positive_float, tcp_port
from dicomtrace.probe import (
    EXIT_DICOM_FAILURE, EXIT_INTERRUPTED, EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE,
)
from dicomtrace.probe.session import DEFAULT_CALLED, DEFAULT_CALLING, Target

CHECK_EXIT_HELP = (f"exit codes: {EXIT_OK} the check succeeded; {EXIT_DICOM_FAILURE} the peer "
                   "answered but refused: association rejected or aborted, presentation context "
                   f"rejected, a failure status; {EXIT_USAGE} wrong command line or unreadable "
                   f"file; {EXIT_UNREACHABLE} no association: connection refused or unanswered, "
                   f"or no answer to the A-ASSOCIATE-RQ; {EXIT_INTERRUPTED} interrupted")


def add_check_args(p, peer: bool = True) -> None:
    """HOST PORT --calling --called --timeout --format --capture."""
    if peer:
        p.add_argument("host", help="the peer's host name or address")
        p.add_argument("port", type=tcp_port, help="the peer's DICOM port")
        p.add_argument("--calling", default=DEFAULT_CALLING, metavar="AE",
                       help=f"our (calling) AE title (default {DEFAULT_CALLING})")
        p.add_argument("--called", default=DEFAULT_CALLED, metavar="AE",
                       help=f"the peer's (called) AE title (default {DEFAULT_CALLED})")
    p.add_argument("--timeout", type=positive_float, default=10.0, metavar="S",
                   help="seconds to wait for the connection, the association and each response "
                        "(default 10)")
    p.add_argument("--format", choices=("text", "json"), default="text", help="output format")
    p.add_argument("--capture", metavar="FILE",
                   help="capture our own traffic with the peer (tcpdump) to FILE; when the "
                        "check fails, the wire-level analysis of it follows")


def target(args) -> Target:
    return Target(args.host, args.port, args.calling, args.called, args.timeout)


def check_peer(args) -> None:
    from dicomtrace.probe.session import resolve

    problem = resolve(args.host)
    if problem:
        fail(args, problem)
    if args.capture:
        from dicomtrace.cli.common import check_output_file

        check_output_file(args, args.capture)


def emit(report, args, out) -> int:
    from dicomtrace.output import write_json
    from dicomtrace.probe.render import print_report

    if args.format == "json":
        write_json(report.to_json(), out)
    else:
        print_report(report, out)
    return report.exit_code


def checked(args, run):
    """Run a check (under --capture when asked): its report, with the wire-level analysis
    of the capture when the check failed."""
    check_peer(args)
    if not args.capture:
        return run()
    from dicomtrace.probe.capture import SelfCapture

    cap = SelfCapture(args.capture, args.host, args.port)
    with cap:
        report = run()
    if report.exit_code != EXIT_OK:
        report.capture = cap.analysis()
    return report


def stop_on_signals(stop: threading.Event) -> dict:
    """SIGINT/SIGTERM set ``stop`` (the loop ends and says what it saw); returns the old
    handlers for :func:`restore`."""
    return {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}


def restore(previous: dict) -> None:
    for s, h in previous.items():
        signal.signal(s, h)
