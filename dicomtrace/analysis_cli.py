"""Sub-commands that decode DICOM: analyze (and the ones built on it)."""

from __future__ import annotations

import json

from dicomtrace.model.builder import AnalysisConfig


def add_commands(sub, add_capture_args) -> None:
    p = sub.add_parser("analyze", help="decode every DICOM association and say what went wrong")
    add_capture_args(p)
    add_analysis_args(p)
    filt = p.add_argument_group("filters (like Wireshark display filters; all must match)")
    filt.add_argument("--ae", action="append", metavar="TITLE",
                      help="calling or called AE title (repeatable)")
    filt.add_argument("--ip", action="append", metavar="ADDR", help="requestor or acceptor address")
    filt.add_argument("--on-port", dest="filter_port", action="append", type=int, metavar="PORT",
                      help="requestor or acceptor TCP port")
    filt.add_argument("--command", action="append", metavar="NAME",
                      help="keep operations of this DIMSE service, e.g. C-STORE (repeatable)")
    filt.add_argument("--status", action="append",
                      choices=("success", "warning", "failure", "cancel", "pending", "unanswered"),
                      help="keep operations whose final status is in this category")
    filt.add_argument("--association", action="append", type=int, metavar="ID",
                      help="association id")
    from dicomtrace.correlate import wiring as correlate_wiring  # noqa: PLC0415

    correlate_wiring.add_same_traffic_args(p)
    p.set_defaults(func=cmd_analyze)

    p = sub.add_parser("report", help="write a self-contained HTML report with graphs")
    add_capture_args(p)
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="the HTML file to write")
    add_analysis_args(p)
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("export", help="write the objects that crossed the wire as DICOM Part 10 files")
    add_capture_args(p)
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="directory for the files")
    p.add_argument("--layout", choices=("flat", "patient/study/series"), default="flat",
                   help="flat: ASSOC_MSGID_SOPINSTANCE.dcm (default); or PatientID/Study/Series/")
    p.add_argument("--complete-only", action="store_true",
                   help="skip data sets not completely captured (otherwise written as .partial)")
    p.add_argument("--min-size", type=int, default=0, metavar="BYTES", help="skip smaller data sets")
    p.add_argument("--sop-class", action="append", default=[], metavar="UID", help="only this SOP class")
    p.add_argument("--association", action="append", type=int, default=[], metavar="ID")
    p.add_argument("--ae", action="append", default=[], metavar="TITLE",
                   help="only associations with this calling or called AE title")
    add_analysis_args(p)
    p.add_argument("--include", default="stores", metavar="KINDS",
                   help="comma list of: stores (C-STORE data sets, default), identifiers "
                        "(C-FIND/C-MOVE/C-GET requests and matches), n-datasets, commands")
    p.set_defaults(func=cmd_export)


def add_analysis_args(p) -> None:
    """Options shared by the commands that decode DICOM."""
    p.add_argument("--no-heuristic", action="store_true",
                   help="only look for DICOM on the --port list, not on every TCP port")
    p.add_argument("--jobs", type=int, default=0, metavar="N",
                   help="processes to use (default: 2 for capture files of 256 MB or more on a "
                        "machine with 2 or more cores, else 1); results are the same")
    add_redact_args(p)


def run_analysis(args, *, series: bool = False, export_options=None):
    """The analysis (and export) of CAPTURE or --live, in one process or several.

    Returns (analysis, exported objects or None)."""
    from dicomtrace.analysis import analyze_parallel, analyze_reader, auto_jobs
    from dicomtrace.cli import open_input
    from dicomtrace.export.part10 import Part10Exporter

    jobs = args.jobs or (auto_jobs(args.capture) if not args.live else 1)
    if jobs > 1 and not args.live and args.capture and args.capture != "-":
        with open_input(args):  # one-line errors for unreadable input, before forking
            pass
        analysis, objects = analyze_parallel(args.capture, config_from(args), jobs, series,
                                             export_options)
        if export_options is not None:
            objects = Part10Exporter(export_options).place(objects)
        return analysis, objects
    exporter = Part10Exporter(export_options) if export_options is not None else None
    with open_input(args) as reader:
        analysis = analyze_reader(reader, config_from(args), exporter, series)
    return analysis, (exporter.finish() if exporter is not None else None)


def add_redact_args(p) -> None:
    g = p.add_argument_group("de-identification")
    g.add_argument("--redact", action="store_true",
                   help="replace patient names, IDs, birth dates, accession numbers and other "
                        "identifying values by stable pseudonyms")
    g.add_argument("--redact-uids", action="store_true",
                   help="with --redact, also replace study, series and instance UIDs")


def redact_if_asked(args, analysis, findings) -> None:
    if getattr(args, "redact", False) or getattr(args, "redact_uids", False):
        from dicomtrace.redact import Redactor

        Redactor(uids=args.redact_uids).apply(analysis, findings)


def config_from(args) -> AnalysisConfig:
    return AnalysisConfig(ports=args.port, heuristic=not getattr(args, "no_heuristic", False))


def apply_filters(analysis, findings, args):
    """Keep the associations, operations and findings the filters select."""
    ae = {x.strip() for x in args.ae or []}
    ips = set(args.ip or [])
    ports = set(args.filter_port or [])
    commands = {c.upper() for c in args.command or []}
    statuses = set(args.status or [])
    ids = set(args.association or [])
    if not (ae or ips or ports or commands or statuses or ids):
        return analysis, findings
    kept = []
    for a in analysis.associations:
        if ids and a.id not in ids:
            continue
        if ae and not ({a.calling_ae, a.called_ae} & ae):
            continue
        if ips and not ({a.requestor.ip, a.acceptor.ip} & ips):
            continue
        if ports and not ({a.requestor.port, a.acceptor.port} & ports):
            continue
        if commands or statuses:
            ops = [op for op in a.operations
                   if (not commands or op.service in commands)
                   and (not statuses or (op.final.info.category if op.final else "unanswered") in statuses)]
            if not ops:
                continue
            a.operations = ops
        kept.append(a)
    analysis.associations = kept
    keep_ids = {a.id for a in kept}
    findings = [f for f in findings if f.association is None or f.association in keep_ids]
    return analysis, findings


def cmd_analyze(args, out, err) -> int:
    from dicomtrace.cli import warn_problems
    from dicomtrace.findings import evaluate
    from dicomtrace.output.json_report import analysis_json
    from dicomtrace.output.terminal import print_analysis
    from dicomtrace.correlate import wiring as correlate_wiring
    from dicomtrace.correlate.same_traffic import print_same_traffic, same_traffic_json

    correlate_wiring.check_args(args)
    analysis, _ = run_analysis(args)
    paired = correlate_wiring.same_traffic(args, analysis, config_from(args))
    findings = evaluate(analysis)
    redact_if_asked(args, analysis, findings)
    analysis, findings = apply_filters(analysis, findings, args)
    if args.format == "json":
        doc = analysis_json(analysis, [f.to_json() for f in findings])
        if paired is not None:
            doc["same_traffic"] = same_traffic_json(paired)
        print(json.dumps(doc, indent=1))
    else:
        print_analysis(analysis, findings, out)
        if paired is not None:
            print_same_traffic(paired, out)
    return warn_problems(analysis.capture, err)


def cmd_export(args, out, err) -> int:
    from pathlib import Path

    from rich.table import Table

    from dicomtrace.cli import warn_problems
    from dicomtrace.export.part10 import KINDS, ExportOptions
    from dicomtrace.findings import evaluate
    from dicomtrace.output.json_report import analysis_json

    include = frozenset(k.strip() for k in args.include.split(",") if k.strip())
    unknown = include - set(KINDS)
    if unknown:
        err.print(f"dicomtrace: error: --include: unknown kind(s) {', '.join(sorted(unknown))}; "
                  f"choose from {', '.join(KINDS)}")
        return 2
    redactor = None
    if args.redact or args.redact_uids:
        from dicomtrace.redact import Redactor

        redactor = Redactor(uids=args.redact_uids)
    opts = ExportOptions(Path(args.output), args.layout, args.complete_only, args.min_size,
                         frozenset(args.sop_class), frozenset(args.association),
                         frozenset(a.strip() for a in args.ae), include, redactor)
    analysis, written = run_analysis(args, export_options=opts)
    findings = evaluate(analysis)
    if redactor is not None:
        redactor.apply(analysis, findings)
    if args.format == "json":
        doc = analysis_json(analysis, [f.to_json() for f in findings])
        doc["exported"] = [{"file": str(o.file), "association": o.association.id,
                            "message_id": o.message_id, "kind": o.kind, "command": o.command,
                            "sop_class_uid": o.sop_class_uid, "sop_instance_uid": o.sop_instance_uid,
                            "transfer_syntax": o.transfer_syntax, "bytes": o.bytes,
                            "complete": o.complete, "incomplete_reason": o.incomplete_reason}
                           for o in written]
        print(json.dumps(doc, indent=1))
    else:
        t = Table(header_style="bold", show_edge=False)
        for col in ("file", "assoc", "msg", "bytes", "complete"):
            t.add_column(col)
        for o in written:
            t.add_row(str(o.file), str(o.association.id), str(o.message_id), str(o.bytes),
                      "yes" if o.complete else f"no: {o.incomplete_reason}")
        out.print(t)
        partial = sum(1 for o in written if not o.complete)
        out.print(f"{len(written)} file(s) written to {args.output}"
                  + (f", {partial} partial (suffix .partial)" if partial else ""))
    return warn_problems(analysis.capture, err)


def cmd_report(args, out, err) -> int:
    from dicomtrace.cli import warn_problems
    from dicomtrace.findings import evaluate
    from dicomtrace.output.html import build_html

    analysis, _ = run_analysis(args, series=True)
    findings = evaluate(analysis)
    redact_if_asked(args, analysis, findings)
    html = build_html(analysis, findings)
    with open(args.output, "w", encoding="utf-8") as f:
        f.write(html)
    out.print(f"report written to {args.output} ({len(html) // 1024} KB): "
              f"{len(analysis.associations)} associations, {len(findings)} findings")
    return warn_problems(analysis.capture, err)
