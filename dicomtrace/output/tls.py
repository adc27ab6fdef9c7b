"""TLS connections in every output: the JSON contract's ``tls_connections`` and association
``tls``, the terminal's "TLS connections" section and the HTML report's."""

from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING, Any

from dicomtrace.net import format_ip
from dicomtrace.output.conversations import health as tcp_health
from dicomtrace.tls.names import version_name

if TYPE_CHECKING:
    from rich.console import Console

KEY_STATE = {"none": "not decrypted (no --tls-keylog)", "missing": "not decrypted (keys not in the key log)",
             "incomplete": "not decrypted (TLS 1.3 secrets incomplete in the key log)",
             "unsupported": "not decrypted (cipher suite not supported)", "found": "decrypted"}


def _assoc_ids(analysis) -> dict[int, int]:
    return {a.conn.id: a.id for a in analysis.associations}


def _sent_flag(s) -> bool | None:
    if s.client_certificate_sent is not None:
        return s.client_certificate_sent
    return False if s.client_certificate_requested is False else None


def tls_connection_json(s, assoc_ids: dict[int, int]) -> dict[str, Any]:
    c = s.conn
    ch = s.client_hello
    return {
        "client": {"ip": format_ip(c.client_ip), "port": c.client_port},
        "server": {"ip": format_ip(c.server_ip), "port": c.server_port},
        "version": s.version_name,
        "cipher_suite": s.cipher_suite_name,
        "sni": s.sni,
        "client_certificate_requested": s.client_certificate_requested,
        "client_certificate_sent": _sent_flag(s),
        "certificates": [x.to_json() for x in s.certificates],
        "alerts": [a.to_json() for a in s.alerts],
        "decrypted": s.decrypted,
        "association": assoc_ids.get(c.id),
        # beside the contract's keys
        "tcp_connection": c.id,
        "detected_by": s.detected_by,
        "handshake_complete": s.handshake_complete,
        "versions_offered": [version_name(v) for v in s.offered_versions],
        "cipher_suites_offered": len(ch.cipher_suites) if ch else None,
        "alpn": s.alpn,
        "certificates_encrypted": s.certificates_encrypted and not s.decrypted,
        "keys": s.keys,
        "records": {"client": s.records[0], "server": s.records[1]},
        "record_bytes": {"client": s.record_bytes[0], "server": s.record_bytes[1]},
        "plaintext_bytes": {"client": s.plaintext_bytes[0], "server": s.plaintext_bytes[1]},
        "decrypt_failures": {"client": s.decrypt_failures[0], "server": s.decrypt_failures[1]},
        "gaps": [{"sender": g.sender, "frame": g.frame, "offset": g.offset, "size": g.size,
                  "records_lost": g.records_lost, "decryption_resumed": g.resumed, "note": g.note}
                 for g in s.gaps],
        "first_frame": s.first_frame,
    }


def tls_connections_json(analysis) -> list[dict[str, Any]]:
    ids = _assoc_ids(analysis)
    return [tls_connection_json(s, ids) for s in analysis.tls_connections]


def association_tls(analysis) -> dict[int, dict[str, Any]]:
    """Each association's ``tls`` key by TCP connection id: {version, cipher_suite, decrypted}
    (an association missing from it ran over plain TCP: ``tls: null``)."""
    return {s.conn.id: {"version": s.version_name, "cipher_suite": s.cipher_suite_name,
                        "decrypted": s.decrypted} for s in analysis.tls_connections}


def _lines(s, assoc_ids) -> list[str]:
    """The facts of one TLS connection as short lines (terminal and HTML)."""
    c = s.conn
    ch = s.client_hello
    out = []
    hs = {True: "handshake complete", False: "handshake FAILED", None: "handshake outcome not visible"}
    out.append(f"{s.version_name or 'version not seen'}, {s.cipher_suite_name or 'cipher suite not seen'}; "
               f"{hs[s.handshake_complete]}; {KEY_STATE.get(s.keys, s.keys) if not s.decrypted else 'decrypted'}"
               + (f" -> association {assoc_ids[c.id]}" if c.id in assoc_ids else ""))
    if ch is not None:
        offered = ", ".join(version_name(v) for v in s.offered_versions if (v & 0x0F0F) != 0x0A0A)
        out.append(f"client offered {offered}, {len(ch.cipher_suites)} cipher suites"
                   + (f", SNI {ch.sni}" if ch.sni else ", no SNI")
                   + (f", ALPN {', '.join(ch.alpn)}" if ch.alpn else ""))
    elif s.detected_by == "records":
        out.append("capture began after the handshake (TLS records found mid-stream)")
    req = s.client_certificate_requested
    if req is not None:
        out.append("client certificate " + ("requested, " + ("sent" if s.client_certificate_sent
                                                             else "NOT sent") if req else "not requested"))
    for x in s.certificates:
        out.append(f"{x.sender} certificate: {x.subject}; issuer {x.issuer}; valid {x.not_before} to "
                   f"{x.not_after}; {x.key}" + (f"; {', '.join(x.sans)}" if x.sans else ""))
    if s.certificates_encrypted and not s.decrypted:
        out.append("certificates: encrypted (TLS 1.3); give --tls-keylog to see them")
    for a in s.alerts:
        out.append(f"alert from the {a.sender}: {a.description}" + (f" ({a.level})" if a.level else "")
                   + f", frame {a.frame}")
    out.append(f"{s.records[0]} records / {s.record_bytes[0]} bytes from the client, {s.records[1]} / "
               f"{s.record_bytes[1]} from the server; TCP: {tcp_health(c)}")
    for g in s.gaps:
        out.append(f"gap: {g.size} bytes from the {g.sender} not captured (frame {g.frame}); {g.note}")
    return out


def tls_summary(analysis) -> str:
    """One line for the summary: how many TLS connections, decrypted or not, failed."""
    ss = analysis.tls_connections
    dec = sum(1 for s in ss if s.decrypted)
    failed = sum(1 for s in ss if s.handshake_complete is False)
    parts = [f"{dec} decrypted" if dec else "none decrypted"]
    if failed:
        parts.append(f"{failed} handshake(s) failed")
    return f"TLS connections: {len(ss)} (" + ", ".join(parts) + ")"


def print_tls(analysis, console: Console) -> None:
    from rich.text import Text  # here: the JSON and HTML outputs do not need rich

    if not analysis.tls_connections:
        return
    ids = _assoc_ids(analysis)
    console.rule("TLS connections")
    for s in analysis.tls_connections:
        c = s.conn
        console.print(Text(f"TCP {c.id} {format_ip(c.client_ip)}:{c.client_port} → "
                           f"{format_ip(c.server_ip)}:{c.server_port}", style="bold"))
        for line in _lines(s, ids):
            console.print(Text("  " + line))


def tls_html(analysis) -> str:
    if not analysis.tls_connections:
        return ""
    ids = _assoc_ids(analysis)
    out = ['<h2 id="tls">TLS connections</h2>']
    for s in analysis.tls_connections:
        c = s.conn
        out.append(f"<h3>TCP {c.id} {escape(format_ip(c.client_ip))}:{c.client_port} → "
                   f"{escape(format_ip(c.server_ip))}:{c.server_port}</h3><ul>"
                   + "".join(f"<li>{escape(line)}</li>" for line in _lines(s, ids)) + "</ul>")
    return "\n".join(out)
