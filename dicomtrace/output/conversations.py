"""`dicomtrace conversations`: the TCP connections of a capture and their health."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dicomtrace import __version__
from dicomtrace.net import format_ip
from dicomtrace.pipeline import CaptureSummary
from dicomtrace.tcp import Connection, HalfConnection

if TYPE_CHECKING:
    from rich.console import Console

HALF_FIELDS = ("packets", "bytes", "payload_bytes", "retransmitted_segments",
               "spurious_retransmissions", "fast_retransmissions",
               "retransmitted_bytes", "out_of_order_segments", "missing_bytes", "gaps",
               "duplicate_acks", "zero_window_events", "resets", "mss", "window_scale")


def capture_json(summary: CaptureSummary) -> dict[str, Any]:
    out = {
        "path": summary.path,
        "format": summary.format,
        "compressed": summary.compressed,
        "packets": summary.packets,
        "bytes": summary.bytes,
        "first_time": summary.first_time,
        "last_time": summary.last_time,
        "link_types": summary.linktypes,
        "problems": [{"severity": p.severity, "frame": p.frame, "offset": p.offset,
                      "message": p.message} for p in summary.problems],
    }
    if summary.files:  # several files read as one capture: which frames each holds
        out["files"] = [f.as_json() for f in summary.files]
    return out


def half_json(h: HalfConnection) -> dict[str, Any]:
    return {k: getattr(h, k) for k in HALF_FIELDS}


def connection_json(c: Connection) -> dict[str, Any]:
    return {
        "id": c.id,
        "client": {"ip": format_ip(c.client_ip), "port": c.client_port},
        "server": {"ip": format_ip(c.server_ip), "port": c.server_port},
        "oriented_by": c.oriented_by,
        "start_time": c.start_time,
        "end_time": c.end_time,
        "duration": c.end_time - c.start_time,
        "first_frame": c.first_frame,
        "last_frame": c.last_frame,
        "state": c.state,
        "handshake_rtt": c.handshake_rtt,
        "client_to_server": half_json(c.client_to_server),
        "server_to_client": half_json(c.server_to_client),
    }


def conversations_json(conns: list[Connection], summary: CaptureSummary,
                       sensors: list[str] | None = None) -> dict[str, Any]:
    """``sensors``: the capture point (sensor) of each connection, when the capture is one
    or more sensors' files (the key ``sensor``, as on an analysis's associations)."""
    out = [connection_json(c) for c in conns]
    for c, name in zip(out, sensors or ()):
        c["sensor"] = name
    return {
        "tool": {"name": "dicomtrace", "version": __version__},
        "capture": capture_json(summary),
        "connections": out,
    }


def health(c: Connection) -> str:
    parts = []
    for label, key in (("retrans", "retransmitted_segments"), ("ooo", "out_of_order_segments"),
                       ("dup-ack", "duplicate_acks"), ("zero-win", "zero_window_events"),
                       ("rst", "resets")):
        n = getattr(c.client_to_server, key) + getattr(c.server_to_client, key)
        if n:
            parts.append(f"{label} {n}")
    lost = c.client_to_server.missing_bytes + c.server_to_client.missing_bytes
    if lost:
        parts.append(f"missing {lost} B")
    return ", ".join(parts) or "ok"


def print_conversations(conns: list[Connection], summary: CaptureSummary, console: Console) -> None:
    from rich.markup import escape  # here: the JSON output does not need rich

    console.print(f"[bold]{escape(summary.path)}[/]: {summary.format}"
                  f"{' (gzip)' if summary.compressed else ''}, {summary.packets} packets, "
                  f"{summary.bytes} bytes, {len(conns)} TCP connections")
    from dicomtrace.output.text import WIDE_CONSOLE, fitting_table

    table = fitting_table(console)
    wide = console.width >= WIDE_CONSOLE
    # addresses and figures are never cut (headings and the health words wrap); on a
    # narrow console the two ends share a column, one above the other
    cols = (("client", "server", "c->s pkts", "c->s bytes", "s->c pkts", "s->c bytes") if wide
            else ("client → server", "pkts c->s / s->c", "bytes c->s / s->c"))
    for col in ("#",) + cols + ("duration s", "RTT ms", "state", "health"):
        left = col in ("client", "server", "client → server", "state", "health")
        table.add_column(col, justify="left" if left else "right", no_wrap=col != "health")
    for c in conns:
        rtt = f"{c.handshake_rtt * 1000:.3f}" if c.handshake_rtt is not None else "-"
        cs, sc = c.client_to_server, c.server_to_client
        client = f"{format_ip(c.client_ip)}:{c.client_port}"
        server = f"{format_ip(c.server_ip)}:{c.server_port}"
        if wide:
            cells = [client, server, str(cs.packets), str(cs.bytes), str(sc.packets), str(sc.bytes)]
        else:
            cells = [f"{client}\n→ {server}", f"{cs.packets} / {sc.packets}",
                     f"{cs.bytes} / {sc.bytes}"]
        table.add_row(str(c.id), *cells, f"{c.end_time - c.start_time:.3f}", rtt, c.state,
                      health(c))
    console.print(table)


def write_text(subject, console: Console) -> None:
    print_conversations(subject[0], subject[1], console)


def write_json(subject, console: Console) -> None:
    from dicomtrace.output import write_json as dump

    dump(conversations_json(*subject), console)
