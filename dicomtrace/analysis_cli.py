"""Sub-commands that decode DICOM: analyze (and the ones built on it)."""

from __future__ import annotations

import json

from dicomtrace.model.builder import AnalysisConfig


def add_commands(sub, add_capture_args) -> None:
    p = sub.add_parser("analyze", help="decode every DICOM association and say what went wrong")
    add_capture_args(p)
    p.add_argument("--no-heuristic", action="store_true",
                   help="only look for DICOM on the --port list, not on every TCP port")
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
    p.set_defaults(func=cmd_analyze)


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
    from dicomtrace.analysis import analyze_reader
    from dicomtrace.cli import open_input, warn_problems
    from dicomtrace.findings import evaluate
    from dicomtrace.report.json_report import analysis_json
    from dicomtrace.report.terminal import print_analysis

    with open_input(args) as reader:
        analysis = analyze_reader(reader, config_from(args))
    findings = evaluate(analysis)
    analysis, findings = apply_filters(analysis, findings, args)
    if args.format == "json":
        print(json.dumps(analysis_json(analysis, [f.to_json() for f in findings]), indent=1))
    else:
        print_analysis(analysis, findings, out)
    return warn_problems(analysis.capture, err)
