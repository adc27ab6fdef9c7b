"""Command line: wires the stages together; no analysis logic of its own.

Exit codes: 0 the capture was read and analysed; 1 it was analysed but parts
of it could not be read (each problem printed as a warning); 2 it could not be
read at all, or the command line was wrong; 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys

from rich.console import Console

from dicomtrace import __version__
from dicomtrace.capture import CaptureError
from dicomtrace.ports import DEFAULT_PORTS, parse_ports

EXIT_OK, EXIT_PROBLEMS, EXIT_FATAL, EXIT_INTERRUPTED = 0, 1, 2, 130


def _ports(text: str) -> frozenset[int]:
    try:
        return parse_ports(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _add_capture_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("capture", nargs="?",
                   help="pcap or pcapng file, optionally gzip-compressed; - for standard input")
    live = p.add_argument_group("live capture (instead of CAPTURE; uses tcpdump, needs capture rights)")
    live.add_argument("--live", metavar="IFACE", help="capture from this interface until Ctrl-C")
    live.add_argument("--filter", metavar="BPF", default="",
                      help="capture filter, e.g. 'host 10.1.2.3 and port 104'")
    live.add_argument("--duration", type=float, metavar="S", help="stop the live capture after S seconds")
    live.add_argument("--count", type=int, metavar="N", help="stop the live capture after N packets")
    p.add_argument("--format", choices=("text", "json"), default="text", help="output format")
    p.add_argument("--port", type=_ports, default=parse_ports(DEFAULT_PORTS), metavar="LIST",
                   help=f"DICOM ports and ranges, e.g. 104,11112,50000-51000 (default {DEFAULT_PORTS})")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="dicomtrace", description="DICOM network analyzer")
    ap.add_argument("--version", action="version", version=f"dicomtrace {__version__}")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("conversations", help="list the TCP connections with health counters")
    _add_capture_args(p)
    p.add_argument("--dump-streams", metavar="DIR",
                   help="write each direction's reassembled bytes to DIR/conn-N-client.bin and -server.bin")
    p.set_defaults(func=cmd_conversations)

    from dicomtrace import analysis_cli  # noqa: PLC0415 (keeps `conversations` light)
    analysis_cli.add_commands(sub, _add_capture_args)
    return ap


def open_input(args):
    """A context manager giving the reader for CAPTURE or --live."""
    from contextlib import nullcontext

    from dicomtrace.capture import open_capture
    from dicomtrace.capture.live import LiveCapture

    if args.live:
        if args.capture:
            raise CaptureError("give either a CAPTURE file or --live, not both")
        return LiveCapture(args.live, args.filter, count=args.count, duration=args.duration)
    if not args.capture:
        raise CaptureError("no capture given: name a file, - for standard input, or --live IFACE")
    reader = open_capture(args.capture)

    class _Closing(nullcontext):
        def __exit__(self, *exc):
            reader.close()

    return _Closing(reader)


def warn_problems(summary, err: Console) -> int:
    for p in summary.problems:
        err.print(f"dicomtrace: {p.severity}: {p}", markup=False, highlight=False)
    return EXIT_PROBLEMS if summary.problems else EXIT_OK


def cmd_conversations(args, out: Console, err: Console) -> int:
    from dicomtrace.pipeline import read_connections
    from dicomtrace.output.conversations import conversations_json, print_conversations
    from dicomtrace.tcp import StreamData

    files = {}
    on_events = None
    if args.dump_streams:
        os.makedirs(args.dump_streams, exist_ok=True)

        def dump(events):
            for ev in events:
                if type(ev) is StreamData:
                    key = (ev.conn.id, ev.direction)
                    f = files.get(key)
                    if f is None:
                        # direction 0 is what the client sent, as oriented when it opened
                        side = "client" if ev.direction == 0 else "server"
                        f = files[key] = open(os.path.join(args.dump_streams,
                                                           f"conn-{ev.conn.id}-{side}.bin"), "wb")
                    for piece in ev.pieces:
                        f.write(piece)
        on_events = dump
    try:
        with open_input(args) as reader:
            conns, summary = read_connections(reader, args.port, on_events)
    finally:
        for f in files.values():
            f.close()
    if args.format == "json":
        print(json.dumps(conversations_json(conns, summary), indent=1))
    else:
        print_conversations(conns, summary, out)
    return warn_problems(summary, err)


def main(argv: list[str] | None = None) -> int:
    out = Console(highlight=False)
    if not out.is_terminal:
        out = Console(highlight=False, width=132)  # piped or redirected: do not squeeze to 80
    err = Console(stderr=True, highlight=False, width=10000)
    ap = build_parser()
    args = ap.parse_args(argv)
    debug = bool(os.environ.get("DICOMTRACE_DEBUG"))
    try:
        return args.func(args, out, err)
    except CaptureError as e:
        err.print(f"dicomtrace: error: {e}", markup=False)
        return EXIT_FATAL
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # the reader of our output went away (e.g. `| head`): not an error
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return EXIT_OK
    except Exception as e:  # never a traceback for the user; DICOMTRACE_DEBUG=1 shows it
        if debug:
            raise
        err.print(f"dicomtrace: internal error: {type(e).__name__}: {e} "
                  "(run with DICOMTRACE_DEBUG=1 for details, and please report it)", markup=False)
        return EXIT_FATAL


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    sys.exit(main())
