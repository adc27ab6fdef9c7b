"""`dicomtrace conversations`: the TCP connections with health counters (like tshark -z conv,tcp)."""

from __future__ import annotations

import os

from dicomtrace.cli.common import (add_capture_args, check_capture_args, check_output_dir,
                                   open_input, print_json, progress_bar, warn_problems)

HELP = "list the TCP connections with health counters"


def add_arguments(p) -> None:
    add_capture_args(p)
    p.add_argument("--dump-streams", metavar="DIR",
                   help="write each direction's reassembled bytes to DIR/conn-N-client.bin and -server.bin")


def _stream_dumper(directory: str, files: dict):
    """An event observer writing each direction's reassembled bytes to its own file."""
    from dicomtrace.tcp import StreamData

    def dump(events):
        for ev in events:
            if type(ev) is StreamData:
                key = (ev.conn.id, ev.direction)
                f = files.get(key)
                if f is None:
                    # direction 0 is what the client sent, as oriented when it opened
                    side = "client" if ev.direction == 0 else "server"
                    f = files[key] = open(os.path.join(directory, f"conn-{ev.conn.id}-{side}.bin"),
                                          "wb")
                for piece in ev.pieces:
                    f.write(piece)
    return dump


def run(args, out, err) -> int:
    from dicomtrace.output import render
    from dicomtrace.pipeline import read_connections

    check_capture_args(args, err)
    files: dict = {}
    on_events = None
    if args.dump_streams:
        check_output_dir(args, args.dump_streams)
        on_events = _stream_dumper(args.dump_streams, files)
    try:
        with open_input(args) as reader:
            conns, summary = read_connections(reader, args.port, on_events,
                                              progress_bar(args, "connections"))
    finally:
        for f in files.values():
            f.close()
    render("conversations", args.format, (conns, summary), out)
    return warn_problems(summary, err)
