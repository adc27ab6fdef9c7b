"""The options that bring in a second source (a second capture, the peers' logs),
and what they add to a command's output.  Parsing and wiring only."""

from __future__ import annotations

from dicomtrace.capture import CaptureError


def add_same_traffic_args(p) -> None:
    """``analyze A B --same-traffic``: a second capture point of the same path."""
    p.add_argument("second_capture", nargs="?", metavar="CAPTURE2",
                   help="with --same-traffic: the same path captured at a second point")
    p.add_argument("--same-traffic", action="store_true",
                   help="CAPTURE and CAPTURE2 saw the same traffic at two points of one path: "
                        "report what was lost or altered between them, the delay added and the "
                        "clock offset")


def add_log_args(p) -> None:
    p.add_argument("--log", action="append", default=[], metavar="FILE",
                   help="a peer's own log (dcmtk -v/-d or default output, pynetdicom debug, "
                        "Orthanc): its lines are attached to the associations they belong to "
                        "(repeatable)")


def check_args(args) -> None:
    """One-line errors for combinations that cannot work (no option silently ignored)."""
    second = getattr(args, "second_capture", None)
    if getattr(args, "same_traffic", False):
        if not args.capture or not second:
            raise CaptureError("--same-traffic needs two captures: analyze A B --same-traffic")
        if args.live or "-" in (args.capture, second):
            raise CaptureError("--same-traffic reads two capture files (not --live or -)")
    elif second:
        raise CaptureError(f"a second capture ({second}) is only read with --same-traffic")


def same_traffic(args, analysis, config):
    """The correlation of the two capture points (None without --same-traffic)."""
    if not getattr(args, "same_traffic", False):
        return None
    from dicomtrace.analysis import analyze_capture
    from dicomtrace.correlate.same_traffic import correlate, delay_budget, read_point

    other = analyze_capture(args.second_capture, config)
    result = correlate(read_point(args.capture), read_point(args.second_capture))
    delay_budget(result, analysis, other)
    return result

