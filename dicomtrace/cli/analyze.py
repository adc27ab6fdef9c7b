"""`dicomtrace analyze`: decode every DICOM association and say what went wrong."""

from __future__ import annotations

import argparse

from dicomtrace.cli.common import (add_analysis_args, add_capture_args, ae_title,
                                   check_capture_args, check_output_dir, comma_choices, config_from,
                                   fail, ip_address, make_redactor, note, plan_input, run_analysis,
                                   tcp_port, warn_problems)
from dicomtrace.model.select import STATUS_CATEGORIES


def dimse_service(text: str) -> str:
    """``C-STORE`` (any case; ``C-STORE-RQ`` too): a DIMSE service PS3.7 defines."""
    from dicomtrace.dimse.commands import COMMAND_NAMES

    services = sorted({n.rsplit("-", 1)[0] for n in COMMAND_NAMES.values()} - {"C-CANCEL"})
    name = text.strip().upper().replace("_", "-")
    for suffix in ("-RQ", "-RSP"):
        name = name.removesuffix(suffix)
    if name not in services:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a DIMSE service: choose from {', '.join(services)}")
    return name


def add_filter_args(p) -> None:
    filt = p.add_argument_group("filters (like Wireshark display filters; all must match)")
    filt.add_argument("--ae", action="append", type=ae_title, metavar="TITLE",
                      help="calling or called AE title (repeatable)")
    filt.add_argument("--ip", action="append", type=ip_address, metavar="ADDR",
                      help="requestor or acceptor address")
    filt.add_argument("--on-port", dest="on_port", action="append", type=tcp_port, metavar="PORT",
                      help="requestor or acceptor TCP port")
    filt.add_argument("--command", action="append", type=dimse_service, metavar="NAME",
                      help="keep operations of this DIMSE service, e.g. C-STORE (repeatable)")
    filt.add_argument("--status", action="append", type=comma_choices(STATUS_CATEGORIES),
                      metavar="CATEGORY",
                      help="keep operations whose final status is in this category: "
                           + ", ".join(STATUS_CATEGORIES) + " (repeatable, or a comma list)")
    filt.add_argument("--association", action="append", type=int, metavar="ID",
                      help="association id")


def selection_from(args):
    from dicomtrace.model.select import Selection

    return Selection(ae=tuple(args.ae or []), ip=tuple(args.ip or []),
                     on_port=tuple(args.on_port or []), command=tuple(args.command or []),
                     status=tuple(s for group in args.status or [] for s in group),
                     association=tuple(args.association or []))


def add_presentation_args(p) -> None:
    p.add_argument("--wide", action="store_true",
                   help="terminal: show UIDs whole instead of shortened in the middle")


def add_arguments(p) -> None:
    from dicomtrace.output import formats

    add_capture_args(p, formats("analysis"))
    add_analysis_args(p)
    add_filter_args(p)
    add_presentation_args(p)
    p.add_argument("--tables", metavar="DIR",
                   help="also write Parquet tables (connections, associations, presentation_contexts, "
                        "operations, findings, objects) into DIR for `dicomtrace query` or any "
                        "Parquet reader; columns in docs/tables.md")
    from dicomtrace.cli import correlation as correlate_wiring

    correlate_wiring.add_same_traffic_args(p)
    correlate_wiring.add_log_args(p)


def analysed(args, err, *, series: bool = False, export_options=None, shown: str = "analysis"):
    """Analysis and redaction (on the model, before any finding is judged or worded):
    the :class:`~dicomtrace.output.AnalysisResult` the analysis commands render, as
    ``shown`` in ``args.format`` (whose writer is loaded while other processes analyse)."""
    from dicomtrace.output import AnalysisResult, preload

    redactor = make_redactor(args)
    if export_options is not None:
        export_options.redactor = redactor

    def meanwhile():
        import dicomtrace.findings.links  # noqa: F401
        import dicomtrace.findings.rules  # noqa: F401

        preload(shown, args.format)

    analysis, exported = run_analysis(args, series=series, export_options=export_options,
                                      meanwhile=meanwhile)
    from dicomtrace.findings import evaluate

    if getattr(args, "tls_keylog", None) and not analysis.tls_connections:
        note(args, err, "--tls-keylog: the capture has no TLS connection, the key log was not needed")
    if redactor is not None:
        redactor.redact_analysis(analysis)
    findings = evaluate(analysis)
    result = AnalysisResult(analysis, findings, exported=exported,
                            associations_in_capture=len(analysis.associations),
                            options={"wide": getattr(args, "wide", False)})
    return result


def select(args, err, result) -> None:
    """Apply the filters (JSON ``filters``); say so when they leave nothing."""
    selection = selection_from(args)
    result.filters = selection.applied()
    result.findings = selection.apply(result.analysis, result.findings)
    if result.filters and not result.analysis.associations:
        from dicomtrace.output.terminal import describe_filters

        n = result.associations_in_capture
        note(args, err, f"the capture holds {n} association{'s' if n != 1 else ''}, none of "
                        f"which matches {describe_filters(result.filters)}")


def run(args, out, err) -> int:
    from dicomtrace.cli import correlation as correlate_wiring
    from dicomtrace.output import Section, render

    check_capture_args(args, err)
    correlate_wiring.check_args(args)
    correlate_wiring.check_log_args(args)
    if args.tables:
        check_output_dir(args, args.tables)
    result = analysed(args, err)
    correlate_wiring.attach_logs(args, result)
    paired = correlate_wiring.same_traffic(args, result.analysis, config_from(args))
    if paired is not None:
        from dicomtrace.correlate.same_traffic import print_same_traffic, same_traffic_json

        result.sections.append(Section("same_traffic", same_traffic_json(paired),
                                       lambda console: print_same_traffic(paired, console)))
    select(args, err, result)
    if args.tables:
        write_tables(args, err, result)
    render("analysis", args.format, result, out)
    return warn_problems(result.analysis.capture, err)


def write_tables(args, err, result) -> None:
    """``--tables DIR``: the Parquet tables of what is shown (filters applied)."""
    from dicomtrace.output.json_report import result_json

    try:
        from dicomtrace.scale.tables import write_tables as write
    except ImportError:
        fail(args, "--tables needs pyarrow: pip install 'dicomtrace[scale]'")
    sensors = plan_input(args)
    sensor = sensors[0].name if sensors and len(sensors) == 1 else None
    try:
        paths = write(result_json(result), args.tables, sensor)
    except ImportError:
        fail(args, "--tables needs pyarrow: pip install 'dicomtrace[scale]'")
    err.print(f"{len(paths)} tables written to {args.tables}", markup=False, highlight=False)
