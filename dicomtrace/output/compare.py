"""What ``compare`` shows: a terminal summary, JSON (``{"changes": [...], "worse": ...}``)
and a side-by-side HTML page."""

from __future__ import annotations

import html

from dicomtrace.correlate.compare import Comparison, Timing, pc_result
from dicomtrace.uids import uid_name


def comparison_json(c: Comparison) -> dict:
    from dicomtrace import __version__

    return {
        "tool": {"name": "dicomtrace", "version": __version__},
        "before": {"path": c.before.path, "associations": len(c.before.analysis.associations),
                   "findings": len(c.before.findings)},
        "after": {"path": c.after.path, "associations": len(c.after.analysis.associations),
                  "findings": len(c.after.findings)},
        "changes": [x.to_json() for x in c.changes],
        "worse": c.worse,
        "associations": [{"label": label, "before": b.id if b else None, "after": a.id if a else None}
                         for b, a, label in c.pairs],
        "timing": [t.to_json() for t in c.timing],
    }


def write_json(c: Comparison, console) -> None:
    from dicomtrace.output import write_json as write

    write(comparison_json(c), console)


def write_html(c: Comparison, console) -> None:
    console.file.write(comparison_html(c))


def _value(v, metric: str | None = None) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if metric == "throughput":
            return f"{v / 1e6:.2f} MB/s"
        return f"{v * 1000:.1f} ms"
    return str(v)


def _timing_row(t: Timing) -> list[str]:
    (mb, ib), (ma, ia) = t.stats
    pct = t.change_percent
    verdict = ("worse" if t.worse else "better") if t.significant else "within spread"
    return [t.scope, t.service, t.metric,
            f"{_value(mb, t.metric)} ±{_value(ib, t.metric)} (n={len(t.before)})",
            f"{_value(ma, t.metric)} ±{_value(ia, t.metric)} (n={len(t.after)})",
            "-" if pct is None else f"{pct:+.0f} %", verdict]


def write_text(c: Comparison, console) -> None:
    from rich.table import Table

    console.print(f"[bold]compare[/bold] {c.before.path} -> {c.after.path}: "
                  f"{len(c.before.analysis.associations)} -> {len(c.after.analysis.associations)} "
                  f"associations")
    if c.changes:
        t = Table(header_style="bold", show_edge=False, title="What changed")
        for col in ("", "association", "kind", "what", "before", "after"):
            t.add_column(col)
        for x in c.changes:
            metric = x.kind if x.kind in ("latency", "throughput") else None
            t.add_row("[red]worse[/red]" if x.worse else "", x.association or "all", x.kind, x.what,
                      _value(x.before, metric), _value(x.after, metric))
        console.print(t)
    else:
        console.print("Nothing changed.")
    if c.timing:
        t = Table(header_style="bold", show_edge=False,
                  title="Timing (median ± interquartile range)")
        for col in ("scope", "command", "metric", "before", "after", "change", "verdict"):
            t.add_column(col)
        for x in c.timing:
            t.add_row(*_timing_row(x))
        console.print(t)
    console.print("[bold red]Something got worse.[/bold red]" if c.worse
                  else "[bold green]Nothing got worse.[/bold green]")


CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}
td,th{border:1px solid #ccc;padding:.25em .5em;text-align:left;vertical-align:top}
th{background:#f0f0f0} tr.worse td{background:#fde8e8} tr.better td{background:#e8f6e8}
.sides{display:grid;grid-template-columns:1fr 1fr;gap:1em} .side{border:1px solid #ddd;padding:.5em}
.verdict{font-size:1.2em;font-weight:bold} .bad{color:#b00} .good{color:#070}
"""


def _table(headers: list[str], rows: list[tuple[str, list[str]]], cls: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(f'<tr class="{rc}">' + "".join(f"<td>{html.escape(str(v))}</td>" for v in r) + "</tr>"
                   for rc, r in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _association_side(a, changes) -> str:
    if a is None:
        return '<div class="side"><em>not in this capture</em></div>'
    pcs = [("", [pc.id, uid_name(pc.abstract_syntax) or pc.abstract_syntax or "",
                 pc_result(pc.result), uid_name(pc.transfer_syntax) or pc.transfer_syntax or "-"])
           for pc in a.presentation_contexts]
    ops = [("", [op.message_id, op.service, op.sop_instance_uid or "",
                 (f"0x{op.final.status:04X} {op.final.info.meaning}" if op.final else "no response"),
                 _value(op.latency)]) for op in a.operations[:200]]
    return ('<div class="side">'
            f"<p>association {a.id}: {html.escape(a.outcome)}, {a.requestor} -> {a.acceptor}</p>"
            + _table(["pc", "abstract syntax", "result", "transfer syntax"], pcs)
            + _table(["msg", "command", "SOP instance", "status", "latency"], ops) + "</div>")


def comparison_html(c: Comparison) -> str:
    """One self-contained page: the verdict, the changes, timing, then each association
    before and after side by side."""
    verdict = ('<p class="verdict bad">Something got worse.</p>' if c.worse
               else '<p class="verdict good">Nothing got worse.</p>')
    changes = _table(["association", "kind", "what", "before", "after"],
                     [("worse" if x.worse else "better",
                       [x.association or "all", x.kind, x.what,
                        _value(x.before, x.kind if x.kind in ("latency", "throughput") else None),
                        _value(x.after, x.kind if x.kind in ("latency", "throughput") else None)])
                      for x in c.changes], "changes") if c.changes else "<p>Nothing changed.</p>"
    timing = _table(["scope", "command", "metric", "before", "after", "change", "verdict"],
                    [(("worse" if t.worse else "better") if t.significant else "", _timing_row(t))
                     for t in c.timing], "timing")
    sides = "".join(
        f"<h3>{html.escape(label)}</h3><div class=\"sides\">{_association_side(b, c.changes)}"
        f"{_association_side(a, c.changes)}</div>" for b, a, label in c.pairs)
    return ("<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>dicomtrace compare</title>"
            f"<style>{CSS}</style></head><body><h1>dicomtrace compare</h1>"
            f"<div class=\"sides\"><div><b>before</b>: {html.escape(c.before.path)}</div>"
            f"<div><b>after</b>: {html.escape(c.after.path)}</div></div>{verdict}"
            f"<h2>What changed</h2>{changes}<h2>Timing</h2>{timing}"
            f"<h2>Associations side by side</h2>{sides}</body></html>")
