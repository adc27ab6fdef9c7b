"""`dicomtrace conversations`: the TCP connections with health counters (like tshark -z conv,tcp)."""

from __future__ import annotations

import os

from dicomtrace.cli.common import (add_capture_args, add_parallel_args, check_capture_args,
                                   check_output_dir, config_from, fail, open_input, plan_input,
                                   progress_bar, progress_wanted, warn_problems)


def add_arguments(p) -> None:
    add_capture_args(p)
    add_parallel_args(p)
    p.add_argument("--dump-streams", metavar="DIR",
                   help="write each direction's reassembled bytes to DIR/conn-N-client.bin and "
                        "-server.bin (in one process)")


def _stream_dumper(directory: str, files: dict, offset: list):
    """An event observer writing each direction's reassembled bytes to its own file
    (connection ids run on by ``offset[0]`` across capture points)."""
    from dicomtrace.tcp import StreamData

    def dump(events):
        for ev in events:
            if type(ev) is StreamData:
                key = (offset[0] + ev.conn.id, ev.direction)
                f = files.get(key)
                if f is None:
                    # direction 0 is what the client sent, as oriented when it opened
                    side = "client" if ev.direction == 0 else "server"
                    f = files[key] = open(os.path.join(directory, f"conn-{key[0]}-{side}.bin"),
                                          "wb")
                for piece in ev.pieces:
                    f.write(piece)
    return dump


def run(args, out, err) -> int:
    from types import SimpleNamespace

    from dicomtrace.engine import Engine
    from dicomtrace.output import render
    from dicomtrace.scale.run import combine_summaries

    check_capture_args(args, err)
    files: dict = {}
    taps = []
    offset = [0]  # connections of the capture points read before
    if args.dump_streams:
        if (args.jobs or 1) > 1 or args.scheduler:
            fail(args, "--dump-streams writes the streams from one process: leave out "
                       + ("--scheduler" if args.scheduler else "--jobs"))
        check_output_dir(args, args.dump_streams)
        taps.append(SimpleNamespace(tcp_events=_stream_dumper(args.dump_streams, files, offset)))
    sensors = plan_input(args)
    split = sensors is not None and not taps  # files: cut into parts as analyze does
    if split:
        from dicomtrace.capture.multi import open_sources
        from dicomtrace.parallel import auto_jobs
        from dicomtrace.scale.run import analyze_sensors

        for s in sensors:  # one-line errors for unreadable input, before any work
            open_sources(s).close()
        jobs = args.jobs or auto_jobs([f for s in sensors for f in s.files])
    conns, summaries, names = [], [], []
    try:
        for sensor in sensors or [None]:  # each capture point by its own reassembly
            if split:
                tcp_only, _ = analyze_sensors([sensor], config_from(args), jobs=jobs,
                                              scheduler=args.scheduler, dicom=False,
                                              progress=progress_wanted(args, sensor.files))
            else:
                with open_input(args, sensor) as reader:
                    tcp_only = Engine(config_from(args), taps, dicom=False,
                                      progress=progress_bar(args, "connections", sensor)).run(reader)
            found, summary = tcp_only.connections, tcp_only.capture
            for c in found:
                c.id += offset[0]
            conns += found
            names += [sensor.name if sensor is not None else None] * len(found)
            summaries.append(summary)
            offset[0] = len(conns)
    finally:
        for f in files.values():
            f.close()
    summary = combine_summaries(sensors or [], summaries)
    # the sensor of each connection, as analyze names it on associations (not for one file)
    one_file = sensors is None or (len(sensors) == 1 and len(sensors[0].files) == 1)
    render("conversations", args.format, (conns, summary, None if one_file else names), out)
    return warn_problems(summary, err)
