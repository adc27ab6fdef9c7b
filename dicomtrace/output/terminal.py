"""Terminal report of `dicomtrace analyze` (rich)."""

from __future__ import annotations

from collections import Counter

from rich.console import Console
from rich.table import Table
from rich.text import Text

from dicomtrace.findings import Finding
from dicomtrace.model.association import Association, Operation
from dicomtrace.model.metrics import (STORE_OUTCOMES, association_metrics,
                                       limitation, store_counts, store_outcome)
from dicomtrace.output.text import (WIDE_CONSOLE, clock, fitting_table, hanging, indented,
                                     ms, rate, short_uid, size, uid_label, uid_width)
from dicomtrace.output.tls import print_tls, tls_summary
from dicomtrace.ul.pdu import PC_RESULTS

SEVERITY_STYLE = {"error": "bold red", "warning": "yellow", "note": "cyan"}
CATEGORY_STYLE = {"success": "green", "warning": "yellow", "failure": "red", "cancel": "magenta",
                  "pending": "blue", None: "dim"}


def print_summary(analysis, findings: list[Finding], console: Console) -> None:
    cap = analysis.capture
    assocs = analysis.associations
    ops = [op for a in assocs for op in a.operations]
    cats = Counter(op.final.info.category if op.final else "unanswered" for op in ops)
    outcomes = Counter(a.outcome for a in assocs)
    dur = (cap.last_time - cap.first_time) if cap.first_time is not None else 0.0
    facts = (f"{cap.format}{' (gzip)' if cap.compressed else ''}, {cap.packets} packets, "
             f"{size(cap.bytes)}, {dur:.3f} s, from {clock(cap.first_time)} UTC")
    if len(cap.path) + 2 + len(facts) <= console.width:
        console.print(Text(f"{cap.path}", style="bold") + Text(f"  {facts}"))
    else:  # the facts on a line of their own, under the file name
        console.print(Text(f"{cap.path}", style="bold"))
        console.print(indented(facts))
    console.print(f"DICOM associations: {len(assocs)} ("
                  + ", ".join(f"{n} {k}" for k, n in outcomes.most_common()) + ")"
                  if assocs else "DICOM associations: none found")
    if analysis.tls_connections:
        console.print(tls_summary(analysis))
    if ops:
        console.print(f"Operations: {len(ops)} ("
                      + ", ".join(f"{n} {k}" for k, n in cats.most_common()) + ")")
    counts = store_counts(assocs)
    if any(counts.values()):
        stored = [op for a in assocs for op in a.operations
                  if op.service == "C-STORE" and store_outcome(op) == "stored"]
        studies = {op.dataset.attributes.get("StudyInstanceUID") for op in stored if op.dataset} - {None}
        series = {op.dataset.attributes.get("SeriesInstanceUID") for op in stored if op.dataset} - {None}
        line = f"Objects stored: {counts['stored']}"
        if stored:
            line += (f" in {len(studies)} studies, {len(series)} series, "
                     f"{size(sum(op.dataset_bytes or 0 for op in stored))}")
        others = [f"{counts[k]} {k}" for k in STORE_OUTCOMES[1:] if counts[k]]
        if others:
            line += "; not stored: " + ", ".join(others)
        console.print(line)
    sev = Counter(f.severity for f in findings)
    console.print("Findings: " + (", ".join(f"{sev[s]} {s}" for s in ("error", "warning", "note")
                                            if sev[s]) or "none"))


def file_frame_locator(analysis):
    """For a capture of several files: a function giving " (FILE frame N)" for a
    finding's first frame, in its association's capture point; else None."""
    import os

    from dicomtrace.capture.multi import locate

    files = getattr(analysis.capture, "files", None)
    if not files:
        return None
    sensor_of = {a.id: a.sensor for a in analysis.associations}

    def where(f) -> str:
        sensor = sensor_of.get(f.association) or files[0].sensor
        hit = locate([x for x in files if x.sensor == sensor], min(f.frames)) if f.frames else None
        return f" ({os.path.basename(hit[0])} frame {hit[1]})" if hit else ""
    return where


def print_findings(findings: list[Finding], console: Console, locator=None) -> None:
    if not findings:
        return
    console.rule("Findings")
    shown = {f.id for f in findings}
    for f in findings:
        # a consequence (caused_by) is indented under its root cause, which comes first
        consequence = f.caused_by is not None and f.caused_by in shown
        pad = "    " if consequence else ""
        where = f" [association {f.association}]" if f.association is not None else ""
        frames = sorted(set(f.frames))
        fr = (f" frames {', '.join(map(str, frames[:8]))}{'...' if len(frames) > 8 else ''}"
              if frames else "")
        if locator is not None:
            fr += locator(f)
        head = Table.grid(padding=0)
        if consequence:
            head.add_column(width=len(pad) + 2, no_wrap=True)
        head.add_column(width=8, no_wrap=True)
        head.add_column(ratio=1)
        cells = [Text(f.severity.upper(), style=SEVERITY_STYLE.get(f.severity, "")),
                 Text(f"{f.code}{where}{fr}", style="bold")]
        head.add_row(*([Text(pad + "└ ")] if consequence else []) + cells)
        console.print(head)
        console.print(indented(f.message, indent=2 + len(pad)))
        if f.hint:
            console.print(hanging("→ ", f.hint, indent=2 + len(pad), style="dim"))


SHOW_ALL_CONTEXTS = 12


def _negotiation_table(a: Association, console: Console, wide: bool = False) -> Table:
    """The negotiation; with many contexts, only the used and the rejected ones."""
    pcs = a.presentation_contexts
    hidden = 0
    if len(pcs) > SHOW_ALL_CONTEXTS:
        used = {op.context_id for op in a.operations}
        shown = [pc for pc in pcs if pc.id in used or pc.result not in (0,)]
        hidden = len(pcs) - len(shown)
        pcs = shown
    t = fitting_table(console, title="Presentation contexts",
                      caption=(f"{hidden} more accepted context(s) not used by any operation "
                               "(see --format json)") if hidden else None)
    w = uid_width(console, wide)
    for col in ("ID", "abstract syntax", "proposed transfer syntaxes", "result", "accepted"):
        t.add_column(col, no_wrap=col == "ID")
    for pc in pcs:
        res = "-" if pc.result is None else PC_RESULTS.get(pc.result, str(pc.result))
        style = "green" if pc.result == 0 else ("red" if pc.result else "dim")
        t.add_row(str(pc.id), uid_label(pc.abstract_syntax, w),
                  "\n".join(uid_label(x, w) for x in pc.proposed_transfer_syntaxes) or "-",
                  Text(res, style=style), uid_label(pc.transfer_syntax, w))
    return t


def _operation_row(op: Operation, t0: float, w: int | None = None, narrow: bool = False) -> list:
    f = op.final
    text = f.info.text if f else "no response"
    if narrow:  # the meaning without its explanation
        text = text.split(" (", 1)[0]
    status = Text(text, style=CATEGORY_STYLE.get(f.info.category if f else None))
    extra = []
    if op.move_destination:
        extra.append(f"→ {op.move_destination}")
    if op.sub_associations:
        extra.append("sub-association " + ", ".join(f"#{i}" for i in op.sub_associations))
    if f and f.completed is not None and op.service in ("C-MOVE", "C-GET"):
        extra.append(f"{f.completed} done, {f.failed or 0} failed, {f.warning or 0} warn")
    if op.service == "C-FIND":
        extra.append(f"{op.matches} match{'es' if op.matches != 1 else ''}")
    if f and f.error_comment:
        extra.append(f"“{f.error_comment}”")
    if op.has_data_set and not op.dataset_complete:
        extra.append("data set incomplete")
    row = [f"+{op.request_time - t0:.3f}", str(op.message_id),
           op.service + (" ←" if op.sender == "acceptor" else ""), uid_label(op.sop_class_uid, w),
           short_uid(op.sop_instance_uid, w), size(op.dataset_bytes), status, ms(op.latency)]
    if not narrow:
        return row + [" ".join(extra)]
    if extra:  # no room for a column of its own: under the status
        status.append("\n" + " ".join(extra), style="default")
    return row


def print_association(a: Association, console: Console, max_ops: int = 200,
                      wide: bool = False) -> None:
    title = f"Association {a.id}" + (f" (sensor {a.sensor})" if a.sensor is not None else "")
    if a.move_parent is not None:
        title += f" (C-MOVE sub-association of association {a.move_parent[0]})"
    console.rule(title)
    head = Text()
    head.append(f"{a.requestor} ", style="bold")
    head.append(f"“{a.calling_ae}”" if a.calling_ae is not None else "(calling AE not captured)")
    head.append("  →  ")
    head.append(f"{a.acceptor} ", style="bold")
    head.append(f"“{a.called_ae}”" if a.called_ae is not None else "(called AE not captured)")
    console.print(head)
    info = [f"{clock(a.start_time)} – {clock(a.end_time)} UTC ({a.end_time - a.start_time:.3f} s)",
            f"outcome: {a.outcome}"]
    if a.reject:
        info.append(f"rejected: {a.reject.text}")
    if a.abort:
        info.append(f"A-ABORT from the {a.abort.sent_by}: {a.abort.text}")
    if a.midstream:
        info.append("capture began after negotiation: transfer syntaxes inferred")
    if a.move_parent is not None:
        info.append(f"opened by the Q/R SCP for C-MOVE message {a.move_parent[1]} of "
                    f"association {a.move_parent[0]}")
    if a.detected_by != "port":
        info.append(f"found by heuristic ({a.detected_by})")
    console.print(indented("; ".join(info)))
    impl = []
    for side in ("requestor", "acceptor"):
        i = a.implementation.get(side) or {}
        if i.get("class_uid") or a.max_pdu.get(side):
            impl.append(f"{side}: {i.get('version_name') or '-'} ({i.get('class_uid') or '-'}), "
                        f"max PDU {a.max_pdu.get(side) or 'unlimited'}")
    if impl:
        console.print(indented("; ".join(impl)))
    m = association_metrics(a)
    figures = [f"duration {m.duration:.3f} s"]
    if m.setup_time is not None:
        figures.append(f"set-up {ms(m.setup_time)}")
    figures.append(f"{size(m.bytes_requestor)} → / ← {size(m.bytes_acceptor)}, {rate(m.throughput)}")
    if m.operations:
        figures.append(f"{m.operations_per_second:.1f} operations/s")
    if m.store_latency is not None:
        d = m.store_latency
        figures.append(f"per image {ms(d.mean)} mean, {ms(d.p90)} p90, {ms(d.max)} max"
                       + (f", outliers: messages {', '.join(map(str, d.outliers[:8]))}"
                          if d.outliers else ""))
        if m.store_throughput:
            figures.append(f"storage {rate(m.store_throughput)}")
    console.print(indented("; ".join(figures)))
    lim = limitation(a)
    if lim.kind != "not-limited":
        console.print(indented(f"{lim.kind} ({lim.direction}): " + "; ".join(lim.reasons),
                               style="yellow"))
    if a.presentation_contexts:
        console.print(_negotiation_table(a, console, wide))
    if a.operations:
        t = fitting_table(console, title="Operations")
        w = uid_width(console, wide)
        narrow = console.width < WIDE_CONSOLE
        for col in ("time", "msg", "command", "SOP class", "instance", "data",
                    "status, details" if narrow else "status", "latency") + (
                        () if narrow else ("details",)):
            # figures and UIDs are never folded (UIDs are shortened instead); words wrap
            t.add_column(col, no_wrap=col in ("time", "msg", "command", "instance", "data",
                                              "latency"))
        for op in a.operations[:max_ops]:
            t.add_row(*_operation_row(op, a.start_time, w, narrow))
        console.print(t)
        if len(a.operations) > max_ops:
            console.print(f"  ... {len(a.operations) - max_ops} more operations (use --format json)")
    if a.log_lines:
        print_log_lines(a.log_lines, console, f"What the peers logged ({len(a.log_lines)} lines)")


def print_log_lines(lines, console: Console, title: str, limit: int = 200) -> None:
    """Lines of the peers' own logs (--log): corrected time, file, operation, text.  More
    than ``limit``: debug and trace lines are left out first."""
    hidden = 0
    if len(lines) > limit:
        kept = [x for x in lines if x.level not in ("D", "T")]
        hidden, lines = len(lines) - len(kept), kept
    t = Table(title=title, title_justify="left", header_style="bold", show_edge=False, pad_edge=False)
    for col in ("time", "log", "msg", "line"):
        t.add_column(col, overflow="fold")
    if hidden:
        console.print(f"  ({hidden} debug lines not shown: --format json and report show them)")
    for x in lines[:limit]:
        t.add_row(clock(x.time), x.source, "" if x.message_id is None else str(x.message_id),
                  Text(x.text))
    console.print(t)
    if len(lines) > limit:
        console.print(f"  ... {len(lines) - limit} more log lines (use --format json or report)")


def print_analysis(analysis, findings: list[Finding], console: Console, wide: bool = False) -> None:
    print_summary(analysis, findings, console)
    print_findings(findings, console, file_frame_locator(analysis))
    # sub-associations of a C-MOVE are shown right after the association of the C-MOVE
    children: dict[int, list[Association]] = {}
    for a in analysis.associations:
        if a.move_parent is not None:
            children.setdefault(a.move_parent[0], []).append(a)
    shown = {a.id for a in analysis.associations}
    for a in analysis.associations:
        if a.move_parent is not None and a.move_parent[0] in shown:
            continue
        print_association(a, console, wide=wide)
        for child in children.get(a.id, []):
            print_association(child, console, wide=wide)
    print_tls(analysis, console)


def write_analysis(result, console: Console) -> None:
    print_analysis(result.analysis, result.findings, console, wide=result.options.get("wide", False))
    for section in result.sections:
        section.print(console)
    if result.filters and not result.analysis.associations:
        n = result.associations_in_capture or 0
        console.print(f"No association matches the filters ({describe_filters(result.filters)}); "
                      f"the capture holds {n} association{'s' if n != 1 else ''}.")


def describe_filters(filters: dict) -> str:
    """``--ae PACS, --status failure`` for the JSON ``filters`` object."""
    return ", ".join(f"--{k.replace('_', '-')} {','.join(map(str, v))}" for k, v in filters.items())
