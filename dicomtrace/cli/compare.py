"""`dicomtrace compare BEFORE AFTER`: what changed between two captures of the same
transactions.  Exit status as diff(1): 0 nothing got worse, 1 something did, 2 trouble
(a capture could not be read, a wrong command line)."""

from __future__ import annotations

from dicomtrace.cli.common import (DEFAULT_PORTS, check_output_file, config_from, fail,
                                   parse_ports, ports_type)


def add_arguments(p) -> None:
    p.epilog = ("exit status, as diff's: 0 nothing got worse, 1 something did, 2 trouble (a "
                "capture could not be read, a wrong command line). See docs/correlate.md.")
    p.add_argument("before", metavar="BEFORE", help="capture taken before the change")
    p.add_argument("after", metavar="AFTER", help="capture of the same transactions after it")
    p.add_argument("--format", choices=("text", "json"), default="text",
                   help="output format (default text)")
    p.add_argument("-o", "--output", metavar="FILE", help="also write a side-by-side HTML report")
    p.add_argument("--port", type=ports_type, default=parse_ports(DEFAULT_PORTS), metavar="LIST",
                   help=f"DICOM ports and ranges (default {DEFAULT_PORTS})")
    p.add_argument("--no-heuristic", action="store_true",
                   help="only look for DICOM on the --port list, not on every TCP port")


def run(args, out, err) -> int:
    from rich.console import Console

    from dicomtrace.engine import analyze_capture
    from dicomtrace.correlate.compare import Side, compare
    from dicomtrace.findings import evaluate
    from dicomtrace.output import render

    if "-" in (args.before, args.after):
        fail(args, "compare reads two capture files (not standard input)")
    if args.output:
        check_output_file(args, args.output)
    sides = []
    for path in (args.before, args.after):
        analysis = analyze_capture(path, config_from(args))
        for problem in analysis.capture.problems:
            err.print(f"dicomtrace: {problem.severity}: {path}: {problem}", markup=False,
                      highlight=False)
        sides.append(Side(path, analysis, evaluate(analysis)))
    result = compare(*sides)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            render("comparison", "html", result, Console(file=f, width=10000))
    render("comparison", args.format, result, out)
    if args.output and args.format == "text":
        out.print(f"report written to {args.output}", markup=False)
    return 1 if result.worse else 0
