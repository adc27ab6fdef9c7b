"""`dicomtrace listen PORT`: a test SCP that mimics a PACS in chosen good or bad ways."""

from __future__ import annotations

import json
import sys
import threading

from rich.text import Text

from dicomtrace.cli.checks import restore, stop_on_signals
from dicomtrace.cli.common import fail, positive_float, positive_int, tcp_port


def add_arguments(p) -> None:
    p.description = ("A test SCP (Verification, Storage, Query/Retrieve C-FIND and C-MOVE): prints "
                     "what arrives and, when an association ends, what happened on it. Runs until "
                     "Ctrl-C/SIGTERM, --count or --duration.")
    p.epilog = "exit codes: 0 served (whatever the peers did); 2 wrong command line or the port cannot be opened"
    p.add_argument("port", type=tcp_port, help="TCP port to listen on")
    p.add_argument("--bind", default="0.0.0.0", metavar="ADDR",
                   help="address to listen on (default 0.0.0.0: all IPv4 addresses)")
    p.add_argument("--ae", metavar="AE", help="our AE title; when given, requests calling another "
                   "title are rejected (called-AE-title-not-recognized); default ANY-SCP, any "
                   "called title accepted")
    p.add_argument("--accept", default="all", metavar="CLASSES",
                   help="comma list of verification, storage, find, move, all, or SOP classes "
                        "(CT, MRImageStorage, UIDs); others are rejected (default all)")
    p.add_argument("--reject-calling", action="append", default=[], metavar="AE[,AE]",
                   help="reject associations from these calling AE titles "
                        "(calling-AE-title-not-recognized)")
    p.add_argument("--status", metavar="CODE",
                   help="answer requests with this status, e.g. 0xA700 (out of resources)")
    p.add_argument("--every", type=positive_int, metavar="N",
                   help="with --status: only every Nth request (default every one)")
    p.add_argument("--delay", type=positive_float, metavar="S",
                   help="wait S seconds before each answer")
    p.add_argument("--abort-after", type=positive_int, metavar="N",
                   help="abort (A-ABORT) instead of answering every Nth request")
    p.add_argument("--move-destination", action="append", default=[], metavar="AE=HOST:PORT",
                   help="where C-MOVE may send objects (repeatable); others get 0xA801")
    p.add_argument("--output", metavar="DIR", help="keep received objects in DIR")
    p.add_argument("--count", type=positive_int, metavar="N", help="stop after N associations")
    p.add_argument("--duration", type=positive_float, metavar="S", help="stop after S seconds")
    p.add_argument("--format", choices=("text", "json"), default="text",
                   help="json: one JSON object per association as it ends (JSON Lines)")
    p.add_argument("--capture", metavar="FILE",
                   help="capture the SCP's traffic to FILE; its analysis is printed at the end")


def behaviour_from(args):
    from dicomtrace.probe.listen import Behaviour, parse_accept, parse_destination

    status = None
    if args.status is not None:
        try:
            status = int(args.status, 0)
        except ValueError:
            status = -1
        if not 0 <= status <= 0xFFFF:
            fail(args, f"--status {args.status!r}: give a status code such as 0xA700")
    elif args.every is not None:
        fail(args, "--every applies to --status: give the status to answer with")
    try:
        accept = parse_accept(args.accept)
        dests = dict(parse_destination(d) for d in args.move_destination)
    except ValueError as e:
        fail(args, str(e))
    reject = frozenset(a.strip() for v in args.reject_calling for a in v.split(",") if a.strip())
    return Behaviour(ae_title=args.ae or "ANY-SCP", require_called=bool(args.ae), accept=accept,
                     reject_calling=reject, status=status, every=args.every or 1,
                     delay=args.delay or 0.0, abort_after=args.abort_after,
                     move_destinations=dests)


def describe(b, args) -> str:
    return (f"listening on {args.bind}:{args.port} as “{b.ae_title}”, accepting "
            f"{len(b.accept)} SOP classes"
            + (f", answering 0x{b.status:04X} every {b.every}" if b.status is not None else "")
            + (f", delay {b.delay:g} s" if b.delay else "")
            + (f", abort every {b.abort_after}" if b.abort_after else "")
            + (f", rejecting {', '.join(sorted(b.reject_calling))}" if b.reject_calling else ""))


def run(args, out, err) -> int:
    from dicomtrace.probe.listen import TestSCP

    b = behaviour_from(args)
    if args.output:
        from dicomtrace.cli.common import check_output_dir

        check_output_dir(args, args.output)
    if args.capture:
        from dicomtrace.cli.common import check_output_file

        check_output_file(args, args.capture)
    stop = threading.Event()
    served = []

    def line(text):
        if args.format == "text":
            out.print(Text(text), soft_wrap=True)

    def ended(s):
        served.append(s)
        if args.format == "json":
            sys.stdout.write(json.dumps(s.to_json()) + "\n")
            sys.stdout.flush()
        if args.count and len(served) >= args.count:
            stop.set()

    scp = TestSCP(b, line, ended, storage_dir=args.output)
    capture = None
    if args.capture:
        from dicomtrace.probe.capture import SelfCapture

        capture = SelfCapture(args.capture, None, args.port)
        capture.__enter__()
    previous = stop_on_signals(stop)
    try:
        try:
            scp.start(args.bind, args.port)
        except OSError as e:
            fail(args, f"cannot listen on {args.bind}:{args.port}: {e.strerror or e}")
        line(describe(b, args))
        sys.stdout.flush()
        stop.wait(args.duration)
    finally:
        scp.stop()
        restore(previous)
        if capture is not None:
            capture.__exit__(None, None, None)
    if capture is not None:
        doc = capture.analysis()
        if args.format == "json":
            sys.stdout.write(json.dumps({"capture": doc["file"], "analysis": doc["analysis"]}) + "\n")
        else:
            from dicomtrace.probe.render import print_capture

            print_capture(doc, out)
    line(f"served {len(served)} association(s)")
    return 0
