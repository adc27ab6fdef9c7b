"""What the commands share: option groups, input, errors, writing output.

Every error the user can cause is one line naming the command
(``dicomtrace analyze: error: ...``) and exit code 2; no option is accepted and then
ignored.  Heavy imports (numpy, pydicom, the stages) stay inside functions so that
``--help`` and the light commands start fast.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import NoReturn

from dicomtrace.ports import DEFAULT_PORTS, parse_ports

EXIT_OK, EXIT_PROBLEMS, EXIT_FATAL, EXIT_INTERRUPTED = 0, 1, 2, 130


class CommandLineError(Exception):
    """A wrong command line or an output that cannot be written: one line, exit 2.
    ``command`` is the sub-command's prog (``dicomtrace analyze``) when known."""

    def __init__(self, message: str, command: str | None = None):
        super().__init__(message)
        self.command = command


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors that name the sub-command (not the top-level usage)."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        sys.exit(EXIT_FATAL)


def fail(args, message: str) -> NoReturn:
    """Raise the one-line error for ``args``' sub-command."""
    raise CommandLineError(message, getattr(args, "prog", None))


def note(args, err, message: str) -> None:
    """A one-line remark on standard error (the command line was understood differently
    from how it was written, or nothing matched)."""
    err.print(f"{getattr(args, 'prog', 'dicomtrace')}: note: {message}", markup=False,
              highlight=False)


# -- option value types (argparse calls them; ArgumentTypeError names the option) --------

def ports_type(text: str) -> frozenset[int]:
    try:
        ports = parse_ports(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if not ports:
        raise argparse.ArgumentTypeError(f"no port in {text!r}")
    return ports


def ip_address(text: str) -> str:
    """An IPv4 or IPv6 address, in the text form the analysis uses (``::1``, not ``0::1``)."""
    import ipaddress

    try:
        return str(ipaddress.ip_address(text.strip().strip("[]")))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an IP address: {text!r}") from None


def ae_title(text: str) -> str:
    """An AE title as compared with the captured ones (PS3.5 6.2: at most 16 characters,
    leading and trailing spaces not significant)."""
    title = text.strip()
    if not title or len(title) > 16:
        raise argparse.ArgumentTypeError(f"an AE title has 1 to 16 characters, not {text!r}")
    return title


def uid(text: str) -> str:
    """A UID (PS3.5 9.1: digits and dots, at most 64 characters)."""
    import re

    value = text.strip()
    if len(value) > 64 or not re.fullmatch(r"[0-9]+(\.[0-9]+)*", value):
        raise argparse.ArgumentTypeError(f"not a UID (digits and dots, at most 64): {text!r}")
    return value


def _number(text: str, kind, minimum, strict: bool, what: str):
    """``text`` as ``kind`` (int or float), finite and at least (``strict``: more than)
    ``minimum``, else the argparse error naming the rule."""
    try:
        x = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from None
    if x != x or x in (float("inf"), float("-inf")) or x < minimum or (strict and x == minimum):
        rule = f"more than {minimum}" if strict else f"{minimum} or more"
        raise argparse.ArgumentTypeError(f"must be {rule}, not {text}")
    return x


def positive_int(text: str) -> int:
    return _number(text, int, 1, False, "a whole number")


def non_negative_int(text: str) -> int:
    return _number(text, int, 0, False, "a whole number")


def positive_float(text: str) -> float:
    return _number(text, float, 0, True, "a number")


def sensor_type(text: str) -> tuple[str, str]:
    from dicomtrace.capture.multi import parse_sensor_option

    try:
        return parse_sensor_option(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def tcp_port(text: str) -> int:
    n = positive_int(text)
    if n > 65535:
        raise argparse.ArgumentTypeError(f"a TCP port is 1-65535, not {n}")
    return n


def comma_choices(choices: tuple[str, ...], *, normalize=str.lower):
    """A type for comma lists whose every item must be one of ``choices``."""

    def parse(text: str) -> list[str]:
        items = [normalize(x.strip()) for x in text.split(",") if x.strip()]
        bad = [x for x in items if x not in choices]
        if bad or not items:
            raise argparse.ArgumentTypeError(
                f"{', '.join(map(repr, bad)) or 'nothing given'}: choose from {', '.join(choices)}")
        return items
    parse.__name__ = "list"  # argparse's message: "invalid list value"
    return parse


# -- option groups ------------------------------------------------------------------------

def add_capture_args(p: argparse.ArgumentParser, formats: tuple[str, ...] | None = ("text", "json")
                     ) -> None:
    """CAPTURE... (files, folders, --sensor) or --live, the DICOM port list and (when the
    command has several) --format."""
    p.add_argument("capture", nargs="*", metavar="CAPTURE",
                   help="pcap or pcapng files (optionally gzip-compressed) or folders of them; - for "
                        "standard input.  The files of a folder (a tcpdump -C/-W or dumpcap ring "
                        "buffer) are one capture point, read as one continuous capture in the order "
                        "of their first packets")
    p.add_argument("--sensor", action="append", default=[], type=sensor_type, metavar="NAME=GLOB",
                   help="the files matching GLOB are capture point NAME (repeatable; default: one "
                        "capture point per folder); capture points are never mixed")
    live = p.add_argument_group("live capture (instead of CAPTURE; uses tcpdump, needs capture rights)")
    live.add_argument("--live", metavar="IFACE", help="capture from this interface until Ctrl-C")
    live.add_argument("--filter", metavar="BPF",
                      help="capture filter for --live, e.g. 'host 10.1.2.3 and port 104'")
    live.add_argument("--duration", type=positive_float, metavar="S",
                      help="stop the live capture after S seconds")
    live.add_argument("--count", type=positive_int, metavar="N",
                      help="stop the live capture after N packets")
    if formats:
        p.add_argument("--format", choices=formats, default=formats[0],
                       help=f"output format (default {formats[0]})")
    p.add_argument("--port", type=ports_type, default=parse_ports(DEFAULT_PORTS), metavar="LIST",
                   help=f"DICOM ports and ranges, e.g. 104,11112,50000-51000 (default {DEFAULT_PORTS})")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bar (shown on a terminal while a capture file of 64 MB or "
                        "more is read)")


def add_parallel_args(p: argparse.ArgumentParser) -> None:
    """--jobs and --scheduler: the work over local processes or a Dask cluster."""
    p.add_argument("--jobs", type=positive_int, default=None, metavar="N",
                   help="processes to use (default: 2 for captures of 256 MB or more on a "
                        "machine with 2 or more cores, else 1): each capture point is cut by "
                        "position into N parts (whole files, or a plain pcap file at record "
                        "starts; at least 64 MB each), stitched at the boundaries; with "
                        "--scheduler, parts per capture point; results are the same")
    p.add_argument("--scheduler", metavar="tcp://HOST:8786",
                   help="run the work on this Dask (dask.distributed) cluster instead of local "
                        "processes; its workers must read the capture files at the same paths")


def add_analysis_args(p: argparse.ArgumentParser) -> None:
    """Options shared by the commands that decode DICOM."""
    p.add_argument("--no-heuristic", action="store_true",
                   help="only look for DICOM on the --port list, not on every TCP port")
    add_parallel_args(p)
    t = p.add_argument_group("TLS (docs/tls.md)")
    t.add_argument("--tls-keylog", metavar="FILE",
                   help="NSS key log (SSLKEYLOGFILE, Python ssl keylog_filename) to decrypt TLS 1.2 "
                        "and 1.3 with; the DICOM inside is then analysed as on plain TCP")
    t.add_argument("--tls-port", type=ports_type, default=frozenset({2762}), metavar="LIST",
                   help="DICOM-over-TLS ports (default 2762): plain DICOM sent there is a finding")
    g = p.add_argument_group("de-identification")
    g.add_argument("--redact", action="store_true",
                   help="replace patient names, IDs, birth dates, accession numbers, the User "
                        "Identity username and other identifying values by stable pseudonyms")
    g.add_argument("--redact-uids", action="store_true",
                   help="also replace study, series and instance UIDs (implies --redact)")


def check_capture_args(args, err) -> None:
    """Options that mean something only together (PS: nothing is silently ignored)."""
    if args.live and (args.capture or args.sensor):
        fail(args, "give either CAPTURE files or --live IFACE, not both")
    if not args.live:
        given = [o for o, v in (("--filter", args.filter), ("--duration", args.duration),
                                ("--count", args.count)) if v is not None]
        if given:
            fail(args, f"{', '.join(given)} appl{'y' if len(given) > 1 else 'ies'} to a live "
                       "capture only: add --live IFACE, or filter the file with the analysis "
                       "filters (--ip, --on-port, ...)")
        if not args.capture and not args.sensor:
            fail(args, "no capture given: name a file or folder, - for standard input, or --live IFACE")
        if "-" in args.capture and (len(args.capture) > 1 or args.sensor):
            fail(args, "- (standard input) cannot be combined with other captures")
    if getattr(args, "redact_uids", False) and not args.redact:
        args.redact = True
        note(args, err, "--redact-uids implies --redact: identifying values are replaced too")
    stdin = args.capture == ["-"]
    if getattr(args, "jobs", None) and args.jobs > 1 and (args.live or stdin):
        fail(args, "--jobs applies to capture files only (not to --live or standard input)")
    if getattr(args, "scheduler", None) and (args.live or stdin):
        fail(args, "--scheduler applies to capture files only (not to --live or standard input)")


def plan_input(args):
    """The capture points (:class:`~dicomtrace.capture.multi.Sensor`) that CAPTURE... and
    --sensor name, or None for --live and standard input."""
    from dicomtrace.capture.multi import plan_sensors

    if args.live or args.capture == ["-"]:
        return None
    planned = getattr(args, "planned_sensors", None)  # every file's first packet is read once
    if planned is None or planned[0] != (args.capture, args.sensor):
        args.planned_sensors = planned = ((list(args.capture), list(args.sensor)),
                                          plan_sensors(args.capture, args.sensor))
    return planned[1]


def open_input(args, sensor=None):
    """A context manager giving the reader for --live, standard input, or one capture
    point (``sensor``; by default the only one CAPTURE... names)."""
    from contextlib import nullcontext

    from dicomtrace.capture import CaptureError, open_capture
    from dicomtrace.capture.live import LiveCapture
    from dicomtrace.capture.multi import open_sources

    if args.live:
        return LiveCapture(args.live, args.filter or "", count=args.count, duration=args.duration)
    if sensor is None and args.capture == ["-"]:
        reader = open_capture("-")
    else:
        if sensor is None:
            sensors = plan_input(args)
            if len(sensors) > 1:
                raise CaptureError(f"{len(sensors)} capture points: this reads one at a time")
            sensor = sensors[0]
        reader = open_sources(sensor.files[0] if len(sensor.files) == 1 else sensor)

    class _Closing(nullcontext):
        def __exit__(self, *exc):
            reader.close()

    return _Closing(reader)


def progress_wanted(args, paths=None) -> bool:
    """A progress bar for this command line? (a terminal, large files, no --quiet)"""
    from dicomtrace.output.progress import wanted

    return not args.live and wanted(paths or args.capture, getattr(args, "quiet", False))


def progress_bar(args, what: str = "associations", sensor=None):
    """The progress bar (an engine tap called per batch) for CAPTURE... or one capture
    point's files, or None."""
    paths = sensor.files if sensor is not None else args.capture
    if not progress_wanted(args, paths):
        return None
    from dicomtrace.output.progress import for_file

    return for_file(paths, what)


def warn_problems(summary, err) -> int:
    for p in summary.problems:
        err.print(f"dicomtrace: {p.severity}: {p}", markup=False, highlight=False)
    return EXIT_PROBLEMS if summary.problems else EXIT_OK


def make_redactor(args):
    """The Redactor the options ask for, or None."""
    if not getattr(args, "redact", False):
        return None
    from dicomtrace.redact import Redactor

    return Redactor(uids=args.redact_uids)


def config_from(args):
    from dicomtrace.config import AnalysisConfig

    return AnalysisConfig(ports=args.port, heuristic=not getattr(args, "no_heuristic", False),
                          tls_ports=getattr(args, "tls_port", frozenset({2762})),
                          tls_keylog=tls_keylog_from(args))


def tls_keylog_from(args):
    """The key log of --tls-keylog, read once; an unusable one is a one-line error."""
    path = getattr(args, "tls_keylog", None)
    if not path:
        return None
    if getattr(args, "_tls_keylog", None) is None:
        from dicomtrace.tls import KeyLogError, load_keylog

        try:
            args._tls_keylog = load_keylog(path)
        except KeyLogError as e:
            fail(args, f"--tls-keylog: {e}")
    return args._tls_keylog


def run_analysis(args, *, series: bool = False, export_options=None, meanwhile=None):
    """The analysis (and export) of CAPTURE... (each capture point on its own), of
    standard input or of --live: in one process, several, or on a Dask cluster.
    ``meanwhile``: what this process may do while other processes analyse (see
    :func:`~dicomtrace.scale.run.analyze_sensors`).

    Returns (analysis, exported objects or None)."""
    from dicomtrace.engine import analyze
    from dicomtrace.parallel import auto_jobs
    from dicomtrace.capture.multi import open_sources
    from dicomtrace.scale.run import analyze_sensors

    if export_options is not None:
        from dicomtrace.export.part10 import Part10Exporter  # (pydicom's writer)
    sensors = plan_input(args)
    if sensors is not None:
        for s in sensors:  # one-line errors for unreadable input, before any work
            open_sources(s).close()
        jobs = args.jobs or auto_jobs([f for s in sensors for f in s.files])
        analysis, objects = analyze_sensors(sensors, config_from(args), jobs=jobs, series=series,
                                            export_options=export_options,
                                            scheduler=getattr(args, "scheduler", None),
                                            progress=progress_wanted(args, [f for s in sensors
                                                                            for f in s.files]),
                                            meanwhile=meanwhile)
        if export_options is not None:
            objects = Part10Exporter(export_options).place(objects)
        return analysis, objects
    exporter = Part10Exporter(export_options) if export_options is not None else None
    with open_input(args) as reader:
        analysis = analyze(reader, config_from(args), [exporter] if exporter is not None else [],
                           series=series, progress=progress_bar(args))
    return analysis, (exporter.finish() if exporter is not None else None)


# -- output ---------------------------------------------------------------------------------

def check_output_file(args, path: str) -> None:
    """Fail now, before a long analysis, when ``path`` cannot be written."""
    parent = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        fail(args, f"cannot write {path}: it is a directory")
    if not os.path.isdir(parent):
        fail(args, f"cannot write {path}: the directory {os.path.dirname(path) or '.'} does not exist")
    if not os.access(parent, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        fail(args, f"cannot write {path}: permission denied")


def check_output_dir(args, path: str) -> None:
    """Create ``path`` (and parents) or fail now with one line."""
    try:
        os.makedirs(path, exist_ok=True)
    except FileExistsError:
        fail(args, f"cannot write into {path}: it is not a directory")
    except OSError as e:
        fail(args, f"cannot create {path}: {e.strerror}")
    if not os.access(path, os.W_OK | os.X_OK):
        fail(args, f"cannot write into {path}: permission denied")


def print_json(doc) -> None:
    """A JSON document on standard output (for commands whose output is not an analysis:
    echo, store, monitor; the analysis formats go through output.FORMATS)."""
    import json

    sys.stdout.write(json.dumps(doc, indent=1))
    sys.stdout.write("\n")
