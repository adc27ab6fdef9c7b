"""`dicomtrace report`: one self-contained HTML file with graphs (to mail to a vendor)."""

from __future__ import annotations

from dicomtrace.cli.analyze import add_filter_args, analysed, select
from dicomtrace.cli.common import (add_analysis_args, add_capture_args, check_capture_args,
                                   check_output_file, fail, warn_problems)


def add_arguments(p) -> None:
    from dicomtrace.output import formats

    add_capture_args(p, formats("report"))
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="the HTML file to write")
    add_analysis_args(p)
    add_filter_args(p)
    from dicomtrace.cli import correlation as correlate_wiring

    correlate_wiring.add_log_args(p)


def run(args, out, err) -> int:
    from rich.console import Console

    from dicomtrace.output import render

    check_capture_args(args, err)
    check_output_file(args, args.output)
    from dicomtrace.cli import correlation as correlate_wiring

    correlate_wiring.check_log_args(args)
    result = analysed(args, err, series=True, shown="report")
    correlate_wiring.attach_logs(args, result)
    select(args, err, result)
    try:
        with open(args.output, "w", encoding="utf-8") as f:
            render("report", args.format, result, Console(file=f, width=10000))
            kb = f.tell() // 1024
    except OSError as e:
        fail(args, f"cannot write {args.output}: {e.strerror}")
    out.print(f"report written to {args.output} ({kb} KB): "
              f"{len(result.analysis.associations)} associations, {len(result.findings)} findings",
              markup=False)
    return warn_problems(result.analysis.capture, err)
