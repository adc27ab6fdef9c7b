"""The options that bring in a second source (a second capture, the peers' logs),
and what they add to a command's output.  Parsing and wiring only."""

from __future__ import annotations


def add_same_traffic_args(p) -> None:
    """``analyze A B --same-traffic``: a second capture point of the same path (B is the
    second of the CAPTURE arguments)."""
    p.add_argument("--same-traffic", action="store_true",
                   help="the two CAPTUREs saw the same traffic at two points of one path: "
                        "report what was lost or altered between them, the delay added and the "
                        "clock offset")


def add_log_args(p) -> None:
    p.add_argument("--log", action="append", default=[], metavar="FILE",
                   help="a peer's own log (dcmtk -v/-d or default output, pynetdicom debug, "
                        "Orthanc): its lines are attached to the associations they belong to "
                        "(repeatable)")


def check_args(args) -> None:
    """One-line errors for combinations that cannot work (no option silently ignored)."""
    if getattr(args, "same_traffic", False):
        from dicomtrace.capture import CaptureError  # (numpy: not for building the parser)

        if len(args.capture) != 2 or args.sensor:
            raise CaptureError("--same-traffic needs two captures: analyze A B --same-traffic")
        if args.live or "-" in args.capture:
            raise CaptureError("--same-traffic reads two capture files (not --live or -)")
        # A is analysed as usual; B only for the correlation
        args.capture, args.second_capture = args.capture[:1], args.capture[1]


def same_traffic(args, analysis, config):
    """The correlation of the two capture points (None without --same-traffic)."""
    if not getattr(args, "same_traffic", False):
        return None
    from dicomtrace.engine import analyze_capture
    from dicomtrace.correlate.same_traffic import correlate, delay_budget, read_point

    other = analyze_capture(args.second_capture, config)
    result = correlate(read_point(args.capture[0]), read_point(args.second_capture))
    delay_budget(result, analysis, other)
    # the address filters select the flows too (the others are not silently kept)
    ips, ports = set(getattr(args, "ip", None) or []), set(getattr(args, "on_port", None) or [])
    if ips or ports:
        result.directions = [d for d in result.directions
                             if (not ips or {d.src[0], d.dst[0]} & ips)
                             and (not ports or {d.src[1], d.dst[1]} & ports)]
    return result


def check_log_args(args) -> None:
    """--log files must be readable; their text is not de-identified, so not with --redact."""
    import os

    from dicomtrace.cli.common import fail

    for path in getattr(args, "log", None) or []:
        if not os.path.isfile(path):
            fail(args, f"--log {path}: no such file")
        if not os.access(path, os.R_OK):
            fail(args, f"--log {path}: permission denied")
    if getattr(args, "log", None) and getattr(args, "redact", False):
        fail(args, "--log lines are not de-identified: --redact cannot be combined with --log")


def attach_logs(args, result) -> None:
    """Read the --log files and attach their lines to the associations (and, for JSON and
    the terminal, a ``logs`` section: each log's clock offset and the unattached lines)."""
    if not getattr(args, "log", None):
        return
    from dicomtrace.correlate.logs import correlate_logs, unattached
    from dicomtrace.output import Section

    logs = correlate_logs(args.log, result.analysis)
    result.analysis.logs = logs
    rest = unattached(logs)

    def show(console):
        from dicomtrace.output.terminal import print_log_lines

        console.print()
        for log in logs:
            offset = ("aligned by the order of events (no timestamps)" if log.offset is None
                      else f"clock offset {log.offset:+.3f} s")
            console.print(f"Log {log.name}: {len(log.lines)} lines, {log.matched} of "
                          f"{len(log.blocks)} associations matched on the wire, {offset}",
                          markup=False, soft_wrap=True)
        if rest:
            print_log_lines(rest, console, f"Log lines that belong to no association on the wire "
                                           f"({len(rest)})")

    result.sections.append(Section("logs", {"files": [x.summary_json() for x in logs],
                                            "unattached": [x.to_json() for x in rest]}, show))
