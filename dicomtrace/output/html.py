"""`dicomtrace report`: one self-contained HTML file (inline SVG plots, inline CSS and JS;
nothing is fetched when it is opened, so it can be mailed to a vendor)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone
from html import escape

from dicomtrace import __version__
from dicomtrace.findings import Finding
from dicomtrace.findings.retrieve import move_attempts
from dicomtrace.model.association import Association
from dicomtrace.model.metrics import (STORE_OUTCOMES, association_metrics, group_metrics,
                                       limitation, store_counts)
from dicomtrace.output import plots
from dicomtrace.output.text import ms, rate, size, uid_label
from dicomtrace.net import format_ip
from dicomtrace.output.tls import tls_html
from dicomtrace.ul.pdu import PC_RESULTS

MAX_LADDER = 400
MAX_OPS = 2000

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#222}
h1{font-size:1.5em}h2{border-bottom:1px solid #ccc;padding-bottom:4px;margin-top:2em}
h3{margin-top:1.5em}table{border-collapse:collapse;margin:8px 0;font-size:.85em}
th,td{border:1px solid #ddd;padding:3px 6px;text-align:left;vertical-align:top}
th{background:#f3f3f3;cursor:pointer;user-select:none}th.sorted-asc:after{content:" ▲"}
th.sorted-desc:after{content:" ▼"}.error{color:#c62828;font-weight:bold}
.warning{color:#b26a00;font-weight:bold}.note{color:#1565c0}.success{color:#2e7d32}
.failure{color:#c62828}.cancel{color:#6a1b9a}.pending{color:#1565c0}.muted{color:#777}
.filter{margin:4px 0;padding:3px 6px;width:24em}.figs{margin:4px 0}.plot svg{max-width:100%;height:auto}
.consequence{padding-left:1.5em}nav a{margin-right:1em}.hint{color:#555;font-size:.9em}.ladder{font-size:11px}
"""

JS = r"""
function sortTable(th){const t=th.closest('table'),i=[...th.parentNode.children].indexOf(th);
const asc=!th.classList.contains('sorted-asc');t.querySelectorAll('th').forEach(h=>h.classList.remove('sorted-asc','sorted-desc'));
th.classList.add(asc?'sorted-asc':'sorted-desc');const b=t.tBodies[0];const rows=[...b.rows];
const key=r=>{const c=r.cells[i];const v=c.dataset.v!==undefined?c.dataset.v:c.textContent.trim();return /^[-+]?\d*\.?\d+(e[-+]?\d+)?$/i.test(v)?parseFloat(v):v.toLowerCase()};
rows.sort((x,y)=>{const a=key(x),c=key(y);return (a<c?-1:a>c?1:0)*(asc?1:-1)});rows.forEach(r=>b.appendChild(r));}
function filterTable(inp){const q=inp.value.toLowerCase();const t=document.getElementById(inp.dataset.table);
[...t.tBodies[0].rows].forEach(r=>{r.style.display=r.textContent.toLowerCase().includes(q)?'':'none'});}
document.querySelectorAll('table.sortable th').forEach(th=>th.addEventListener('click',()=>sortTable(th)));
document.querySelectorAll('input.filter').forEach(i=>i.addEventListener('input',()=>filterTable(i)));
"""


def _clock(t: float | None) -> str:
    if t is None:
        return "-"
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


class _Tables:
    def __init__(self):
        self.n = 0

    def table(self, headers: list[str], rows: list[list], *, filterable: bool = True) -> str:
        """rows: cells as text, or (text, sort value, css class)."""
        self.n += 1
        tid = f"t{self.n}"
        out = []
        if filterable and len(rows) > 5:
            out.append(f'<input class="filter" data-table="{tid}" placeholder="filter rows…">')
        out.append(f'<table class="sortable" id="{tid}"><thead><tr>'
                   + "".join(f"<th>{escape(h)}</th>" for h in headers) + "</tr></thead><tbody>")
        for row in rows:
            cells = []
            for c in row:
                if isinstance(c, tuple):
                    text, value, cls = (c + (None, None))[:3]
                    attrs = (f' data-v="{escape(str(value))}"' if value is not None else "") + \
                            (f' class="{cls}"' if cls else "")
                    cells.append(f"<td{attrs}>{escape(str(text))}</td>")
                else:
                    cells.append(f"<td>{escape(str(c))}</td>")
            out.append("<tr>" + "".join(cells) + "</tr>")
        out.append("</tbody></table>")
        return "\n".join(out)


LADDER_GAP = 0.5  # s: a wait this long between two messages is drawn as a gap with its duration


def _ladder(a: Association, attempts=()) -> str:
    """Requestor | acceptor ladder diagram of PDUs and DIMSE messages, drawn as SVG; long
    waits as gaps with their duration; ``attempts``: the TCP connections the acceptor
    opened for a C-MOVE that carried no association (their SYNs, unanswered or refused),
    drawn to a third line, the move destination."""
    recs = sorted(a.ladder, key=lambda r: (r.time, r.frame))
    if not recs:
        return ""
    more = len(recs) - MAX_LADDER
    recs = recs[:MAX_LADDER]
    rows: list = []  # ("msg", record) | ("gap", seconds) | ("syn", connection)
    events = [(r.time, r.frame, "msg", r) for r in recs]
    events += [(c.start_time, c.first_frame, "syn", c) for c in attempts]
    events.sort(key=lambda e: (e[0], e[1]))
    last = None
    for t, _f, kind, x in events:
        if last is not None and t - last >= LADDER_GAP:
            rows.append(("gap", t - last))
        rows.append((kind, x))
        last = t
    left, right, top, step = 150, 650, 40, 22
    dest = 900 if attempts else None
    width = 1060 if attempts else 860
    height = top + step * len(rows) + 20
    parts = [f'<svg class="ladder" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">',
             f'<text x="{left}" y="16" text-anchor="middle" font-weight="bold">requestor '
             f'{escape(str(a.requestor))}</text>',
             f'<text x="{right}" y="16" text-anchor="middle" font-weight="bold">acceptor '
             f'{escape(str(a.acceptor))}</text>',
             f'<line x1="{left}" y1="24" x2="{left}" y2="{height - 10}" stroke="#555"/>',
             f'<line x1="{right}" y1="24" x2="{right}" y2="{height - 10}" stroke="#555"/>',
             '<defs><marker id="arr" markerWidth="8" markerHeight="8" refX="8" refY="4" '
             'orient="auto"><path d="M0,0 L8,4 L0,8 z" fill="#333"/></marker></defs>']
    if dest is not None:
        c0 = attempts[0]
        parts.append(f'<text x="{dest}" y="16" text-anchor="middle" font-weight="bold">move '
                     f'destination<tspan x="{dest}" dy="11">{escape(format_ip(c0.server_ip))}:{c0.server_port}</tspan></text>')
        parts.append(f'<line x1="{dest}" y1="24" x2="{dest}" y2="{height - 10}" stroke="#555" '
                     'stroke-dasharray="4,3"/>')
    for i, (kind, r) in enumerate(rows):
        y = top + i * step
        if kind == "gap":
            parts.append(f'<text x="{(left + right) / 2}" y="{y + 4}" text-anchor="middle" '
                         f'fill="#b26a00" font-style="italic">⋮ {r:.3f} s without a message ⋮</text>')
            for x in (left, right) + ((dest,) if dest is not None else ()):
                parts.append(f'<line x1="{x}" y1="{y - 8}" x2="{x}" y2="{y + 8}" stroke="#fff" '
                             'stroke-width="3"/>')
            continue
        if kind == "syn":
            c = r
            refused = c.server_to_client.reset_frame is not None
            tries = c.client_to_server.packets
            what = ("SYN → RST: refused" if refused else
                    f"SYN{f' ×{tries}' if tries > 1 else ''}: no answer")
            parts.append(f'<text x="4" y="{y + 4}" fill="#777">+{c.start_time - a.start_time:.3f}s '
                         f'#{c.first_frame}</text>')
            parts.append(f'<line x1="{right}" y1="{y}" x2="{dest}" y2="{y}" stroke="#c62828" '
                         'stroke-dasharray="5,3" marker-end="url(#arr)"/>')
            parts.append(f'<text x="{(right + dest) / 2}" y="{y - 4}" text-anchor="middle" '
                         f'fill="#c62828">{escape(what)}</text>')
            continue
        x1, x2 = (left, right) if r.sender == "requestor" else (right, left)
        colour = "#c62828" if r.what in ("A-ABORT", "A-ASSOCIATE-RJ") else "#333"
        parts.append(f'<text x="4" y="{y + 4}" fill="#777">+{r.time - a.start_time:.3f}s #{r.frame}</text>')
        parts.append(f'<line x1="{x1}" y1="{y}" x2="{x2}" y2="{y}" stroke="{colour}" '
                     'marker-end="url(#arr)"/>')
        label = r.what + (f" — {r.detail}" if r.detail else "")
        parts.append(f'<text x="{(left + right) / 2}" y="{y - 4}" text-anchor="middle" '
                     f'fill="{colour}">{escape(label[:90])}</text>')
    parts.append("</svg>")
    if more > 0:
        parts.append(f'<p class="muted">… {more} more messages not drawn (see the operations table).</p>')
    return "\n".join(parts)


def _association_section(a: Association, tables: _Tables, t0: float, attempts=()) -> str:
    m = association_metrics(a)
    lim = limitation(a)
    out = [f'<h3 id="a{a.id}">Association {a.id}'
           + (f" (sensor {escape(a.sensor)})" if a.sensor is not None else "")
           + (f" — C-MOVE sub-association of association {a.move_parent[0]}" if a.move_parent else "")
           + "</h3>"]
    out.append(f"<p><b>{escape(str(a.requestor))}</b> “{escape(a.calling_ae or '?')}” → "
               f"<b>{escape(str(a.acceptor))}</b> “{escape(a.called_ae or '?')}”<br>"
               f"{escape(_clock(a.start_time))}, {m.duration:.3f} s, outcome <b>{escape(a.outcome)}</b>"
               + (f"; rejected: {escape(a.reject.text)}" if a.reject else "")
               + (f"; A-ABORT from the {escape(a.abort.sent_by)}: {escape(a.abort.text)}" if a.abort else "")
               + ("; capture began after negotiation" if a.midstream else "") + "</p>")
    figs = [f"set-up {ms(m.setup_time)}", f"requestor sent {size(m.bytes_requestor)}",
            f"acceptor sent {size(m.bytes_acceptor)}", f"throughput {rate(m.throughput)}",
            f"{m.operations} operations"]
    if m.store_latency:
        d = m.store_latency
        figs.append(f"per image {ms(d.mean)} mean (σ {ms(d.stdev)}), p50 {ms(d.p50)}, "
                    f"p90 {ms(d.p90)}, p99 {ms(d.p99)}, max {ms(d.max)}")
        if d.outliers:
            figs.append("outliers: messages " + ", ".join(map(str, d.outliers[:12])))
    out.append('<p class="figs">' + escape("; ".join(figs)) + "</p>")
    out.append(f'<p class="figs">Transfer: <b>{escape(lim.kind)}</b> ({escape(lim.direction)})'
               + (": " + escape("; ".join(lim.reasons)) if lim.reasons else "") + "</p>")
    if a.presentation_contexts:
        rows = []
        for pc in a.presentation_contexts:
            res = "-" if pc.result is None else PC_RESULTS.get(pc.result, str(pc.result))
            rows.append([pc.id, uid_label(pc.abstract_syntax),
                         ", ".join(uid_label(x) for x in pc.proposed_transfer_syntaxes),
                         (res, None, "success" if pc.result == 0 else "failure" if pc.result else None),
                         uid_label(pc.transfer_syntax)])
        out.append("<h4>Negotiation</h4>")
        out.append(tables.table(["ID", "abstract syntax", "proposed transfer syntaxes", "result",
                                 "accepted"], rows))
    if a.operations:
        rows = []
        for op in a.operations[:MAX_OPS]:
            f = op.final
            cat = f.info.category if f else None
            rows.append([(f"+{op.request_time - a.start_time:.3f}", op.request_time - a.start_time),
                         op.message_id, op.service + (" (from acceptor)" if op.sender == "acceptor" else ""),
                         uid_label(op.sop_class_uid), op.sop_instance_uid or "-",
                         (size(op.dataset_bytes), op.dataset_bytes or 0),
                         (f.info.text if f else "no response", f.status if f else -1, cat),
                         (ms(op.latency), op.latency if op.latency is not None else -1),
                         op.request_frame, f.frame if f else "-",
                         (op.move_destination or "") + (f" → sub-association {op.sub_associations}"
                                                        if op.sub_associations else "")])
        out.append("<h4>Operations</h4>")
        out.append(tables.table(["time", "msg", "command", "SOP class", "instance", "data", "status",
                                 "latency", "request frame", "response frame", "notes"], rows))
    if a.log_lines:
        out.append(f'<h4>What the peers logged</h4><div class="log-lines" data-association="{a.id}">'
                   + _log_table(a.log_lines, tables) + "</div>")
    ladder = _ladder(a, attempts)
    if ladder:
        out.append("<h4>Ladder</h4>" + ladder)
    c = a.conn
    halves = [(c.client_to_server, f"{a.requestor if a.requestor.port == c.client_port else a.acceptor} sends"),
              (c.server_to_client, f"{a.acceptor if a.requestor.port == c.client_port else a.requestor} sends")]
    main = max(halves, key=lambda x: x[0].payload_bytes)
    h = main[0]
    if h.sent is not None:
        svg = plots.time_sequence(f"association {a.id}, {main[1]}", h.sent.array(),
                                  h.acked.array() if h.acked is not None else [],
                                  h.retransmitted_at, t0)
        if svg:
            out.append('<h4>TCP time-sequence</h4><div class="plot">' + svg + "</div>")
    return "\n".join(out)


def _log_table(lines, tables: _Tables) -> str:
    """Lines of the peers' own logs (--log), at their corrected times."""
    return tables.table(["time", "log", "line no.", "msg", "text"],
                        [[_clock(x.time), x.source, x.number,
                          "" if x.message_id is None else x.message_id, x.text] for x in lines])


def _logs_section(logs, tables: _Tables) -> str:
    from dicomtrace.correlate.logs import unattached

    rows = [[x.name, len(x.lines), "yes" if x.timed else "no (aligned by order)",
             "-" if x.offset is None else f"{x.offset:+.3f} s", len(x.blocks), x.matched]
            for x in logs]
    out = ['<h2 id="logs">Peers\' logs</h2>',
           tables.table(["log", "lines", "timestamps", "clock offset", "associations in the log",
                         "matched on the wire"], rows)]
    rest = unattached(logs)
    if rest:
        out.append(f"<h4>Lines that belong to no association on the wire ({len(rest)})</h4>"
                   '<div class="log-lines" data-association="none">' + _log_table(rest, tables)
                   + "</div>")
    return "\n".join(out)


def _move_attempts(analysis, a: Association) -> list:
    """Connections the acceptor opened for this association's C-MOVEs that carried no
    association (unanswered or refused SYNs to the move destination)."""
    out = []
    for op in a.operations:
        if op.service == "C-MOVE" and not op.sub_associations:
            out += [c for c in move_attempts(analysis, a, op) if c not in out]
    return sorted(out, key=lambda c: c.first_frame)


def html_parts(analysis, findings: list[Finding]) -> Iterator[str]:
    """The report, a section at a time (write_report writes each as it comes, so the
    whole page is never held at once)."""
    cap = analysis.capture
    assocs = analysis.associations
    t0 = cap.first_time or 0.0
    tables = _Tables()
    # order: sub-associations right after the association of their C-MOVE
    children: dict[int, list[Association]] = {}
    for a in assocs:
        if a.move_parent:
            children.setdefault(a.move_parent[0], []).append(a)
    ordered = []
    for a in assocs:
        if a.move_parent and a.move_parent[0] in {x.id for x in assocs}:
            continue
        ordered.append(a)
        ordered.extend(children.get(a.id, []))
    yield ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
           f"<title>dicomtrace report: {escape(cap.path)}</title><style>{CSS}</style></head><body>")
    yield from [f"<h1>dicomtrace report: {escape(cap.path)}</h1>",
            f'<p class="muted">dicomtrace {escape(__version__)}; {escape(cap.format)}, {cap.packets} packets, '
            f"{size(cap.bytes)}, {escape(_clock(cap.first_time))} to {escape(_clock(cap.last_time))}</p>",
            '<nav><a href="#summary">Summary</a><a href="#findings">Findings</a>'
            '<a href="#timeline">Timeline</a><a href="#throughput">Throughput</a>'
            '<a href="#latency">Latency</a><a href="#associations">Associations</a>'
            + ('<a href="#tls">TLS</a>' if analysis.tls_connections else "") + '</nav>']
    ops = [op for a in assocs for op in a.operations]
    yield '<h2 id="summary">Summary</h2>'
    rows = []
    for a in ordered:
        m = association_metrics(a)
        rows.append([(f"{a.id}", a.id), a.calling_ae or "?", a.called_ae or "?", str(a.requestor),
                     str(a.acceptor), (a.outcome, None, "failure" if a.outcome in ("rejected", "aborted", "reset", "closed") else None),
                     (f"{m.duration:.3f}", m.duration), m.operations,
                     (size(m.bytes_requestor + m.bytes_acceptor), m.bytes_requestor + m.bytes_acceptor),
                     (rate(m.throughput), m.throughput or 0), limitation(a).kind])
    counts = store_counts(assocs)
    stored = (f" Objects stored (confirmed by the receiver): {counts['stored']}"
              + "".join(f", {counts[k]} {k}" for k in STORE_OUTCOMES[1:] if counts[k]) + "."
              if any(counts.values()) else "")
    yield (f"<p>{len(assocs)} associations, {len(ops)} operations, {len(findings)} findings."
           f"{escape(stored)}</p>")
    yield (tables.table(["assoc", "calling AE", "called AE", "requestor", "acceptor", "outcome",
                         "duration s", "operations", "bytes", "throughput", "transfer"], rows))
    studies = group_metrics(assocs, "StudyInstanceUID")
    if studies:
        yield "<h3>Studies</h3>"
        yield (tables.table(["Study Instance UID", "objects", "bytes", "duration s", "throughput",
                             "failures"],
                            [[g.uid, g.objects, (size(g.bytes), g.bytes), (f"{g.duration:.3f}", g.duration),
                              (rate(g.throughput), g.throughput or 0), g.failures] for g in studies]))
    yield '<h2 id="findings">Findings</h2>'
    if findings:
        # root causes first, each followed by its consequences (indented, "caused by #N")
        shown = {f.id for f in findings}
        yield (tables.table(["#", "severity", "code", "caused by", "assoc", "frames",
                             "what was seen", "what to check"],
                            [[(f.id, f.id), (f.severity, {"error": 0, "warning": 1, "note": 2}.get(f.severity, 3), f.severity),
                              (("↳ " if f.caused_by in shown else "") + f.code, None,
                               "consequence" if f.caused_by in shown else None),
                              (f"#{f.caused_by}", f.caused_by) if f.caused_by in shown else ("", 0),
                              f.association if f.association is not None else "-",
                              ", ".join(map(str, sorted(set(f.frames))[:12])), f.message, f.hint]
                             for f in findings]))
    else:
        yield "<p>No findings: nothing went wrong that dicomtrace can see.</p>"
    yield ('<h2 id="timeline">Timeline</h2><div class="plot">' + plots.timeline(
        [(f"{a.id} {a.calling_ae or '?'}→{a.called_ae or '?'}", a.start_time, a.end_time, a.outcome,
          [(op.request_time, op.final.info.category if op.final else None) for op in a.operations[:MAX_OPS]],
          bool(a.move_parent)) for a in ordered], t0) + "</div>")
    series = []
    for a in ordered:
        c = a.conn
        h = max(c.half, key=lambda x: x.payload_bytes)
        if h.sent is not None:
            series.append((f"assoc {a.id}", h.sent.array()))
    yield ('<h2 id="throughput">Throughput</h2><div class="plot">'
           + (plots.throughput(series, t0) or "<p>No data transfer to plot.</p>") + "</div>")
    yield ('<h2 id="latency">Operation latency</h2><div class="plot">'
           + (plots.latency([(op.request_time, op.latency, op.service, op.final.info.category)
                             for op in ops if op.latency is not None and op.latency > 0], t0)
              or "<p>No answered operation.</p>") + "</div>")
    if analysis.logs:
        yield _logs_section(analysis.logs, tables)
    yield '<h2 id="associations">Associations</h2>'
    for a in ordered:
        yield _association_section(a, tables, t0, _move_attempts(analysis, a))
    yield tls_html(analysis)
    yield f"<script>{JS}</script>\n</body></html>"


def build_html(analysis, findings: list[Finding]) -> str:
    return "\n".join(html_parts(analysis, findings)) + "\n"


def write_report(result, console) -> None:
    for part in html_parts(result.analysis, result.findings):
        console.file.write(part + "\n")
