"""`dicomtrace conversations`: the TCP connections of a capture and their health."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from dicomtrace import __version__
from dicomtrace.net import format_ip
from dicomtrace.pipeline import CaptureSummary
from dicomtrace.tcp import Connection, HalfConnection

HALF_FIELDS = ("packets", "bytes", "payload_bytes", "retransmitted_segments",
               "retransmitted_bytes", "out_of_order_segments", "missing_bytes", "gaps",
               "duplicate_acks", "zero_window_events", "resets", "mss", "window_scale")


def capture_json(summary: CaptureSummary) -> dict[str, Any]:
    return {
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


def conversations_json(conns: list[Connection], summary: CaptureSummary) -> dict[str, Any]:
    return {
        "tool": {"name": "dicomtrace", "version": __version__},
        "capture": capture_json(summary),
        "connections": [connection_json(c) for c in conns],
    }


def _health(c: Connection) -> str:
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
    console.print(f"[bold]{summary.path}[/]: {summary.format}"
                  f"{' (gzip)' if summary.compressed else ''}, {summary.packets} packets, "
                  f"{summary.bytes} bytes, {len(conns)} TCP connections")
    table = Table(show_lines=False, header_style="bold")
    for col in ("#", "client", "server", "c->s pkts", "c->s bytes", "s->c pkts", "s->c bytes",
                "duration s", "RTT ms", "state", "health"):
        table.add_column(col, justify="right" if col not in ("client", "server", "state", "health") else "left")
    for c in conns:
        rtt = f"{c.handshake_rtt * 1000:.3f}" if c.handshake_rtt is not None else "-"
        table.add_row(str(c.id), f"{format_ip(c.client_ip)}:{c.client_port}",
                      f"{format_ip(c.server_ip)}:{c.server_port}",
                      str(c.client_to_server.packets), str(c.client_to_server.bytes),
                      str(c.server_to_client.packets), str(c.server_to_client.bytes),
                      f"{c.end_time - c.start_time:.3f}", rtt, c.state, _health(c))
    console.print(table)


def write_text(subject, console: Console) -> None:
    print_conversations(*subject, console)


def write_json(subject, console: Console) -> None:
    from dicomtrace.output import write_json as dump

    dump(conversations_json(*subject), console)
