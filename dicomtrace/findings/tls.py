"""TLS findings (RFC 8446, RFC 5246, BCP 195 / RFC 9325, PS3.15 B.9-B.11): failed handshakes
and their likely cause, certificates near expiry, weak versions and suites, TLS and plain DICOM
on each other's ports, connections a key log did not open."""

from __future__ import annotations

import datetime
import fnmatch

from dicomtrace.findings.base import Finding
from dicomtrace.findings.codes import advice, default_severity
from dicomtrace.net import format_ip
from dicomtrace.tls.names import suite_name, suite_weakness, version_name

EXPIRY_WARNING = 30 * 86400  # s before not_after that a certificate is reported
CERT_ALERTS = {"bad_certificate", "unsupported_certificate", "certificate_revoked",
               "certificate_expired", "certificate_unknown", "unknown_ca", "access_denied",
               "decrypt_error", "bad_certificate_status_response"}


def _when(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _who(conn) -> str:
    return (f"{format_ip(conn.client_ip)}:{conn.client_port} -> "
            f"{format_ip(conn.server_ip)}:{conn.server_port}")


def _assoc_ids(analysis) -> dict[int, int]:
    return {a.conn.id: a.id for a in analysis.associations}


def _name_matches(name: str, sans: list[str]) -> bool:
    for san in sans:
        kind, _, value = san.partition(":")
        if kind in ("DNS", "IP") and fnmatch.fnmatchcase(name.lower(), value.lower()):
            return True
    return False


def _chain(s, sender: str) -> list:
    return [c for c in s.certificates if c.sender == sender]


def _cert_cause(s, rejected: str, t: float) -> str | None:
    """Why the side receiving ``rejected``'s certificate would refuse it, from the facts."""
    chain = _chain(s, rejected)
    if not chain:
        return None
    leaf = chain[0]
    if leaf.not_after_ts and t > leaf.not_after_ts:
        return f"the {rejected}'s certificate ({leaf.subject}) expired on {_when(leaf.not_after_ts)}"
    if leaf.not_before_ts and t < leaf.not_before_ts:
        return (f"the {rejected}'s certificate ({leaf.subject}) is not valid before "
                f"{_when(leaf.not_before_ts)}")
    if rejected == "server" and s.sni and leaf.sans and not _name_matches(s.sni, leaf.sans):
        return (f"the name the client asked for ({s.sni}) is not among the server certificate's "
                f"names ({', '.join(leaf.sans)})")
    top = chain[-1]
    return (f"the {'client' if rejected == 'server' else 'server'} does not trust the CA that issued "
            f"the {rejected}'s certificate (issuer {top.issuer if not top.self_signed else top.subject})")


def _failure_cause(s, t: float) -> tuple[str, object]:
    """(likely cause, the alert that showed it or None)."""
    alert = next((a for a in s.alerts if a.level == "fatal" or a.description not in
                  ("close_notify", "user_canceled")), None)
    ch = s.client_hello
    offered = ", ".join(version_name(v) for v in (s.offered_versions or []) if (v & 0x0F0F) != 0x0A0A)
    if alert is None:
        if s.server_hello is None and ch is not None:
            return ("the server closed the connection after the ClientHello without an alert (it "
                    "may not speak TLS on this port, or rejected the client's offer)", None)
        return "the connection closed during the handshake, with no alert", None
    desc = alert.description
    rejected = "server" if alert.sender == "client" else "client"
    if alert.guessed:
        return (f"the {alert.sender} sent a record of an alert's size during the TLS 1.3 handshake "
                f"(alerts are encrypted in TLS 1.3): most likely it refused the {rejected}'s "
                "certificate (untrusted CA, expired, wrong name) — the certificates are encrypted "
                "too; run again with --tls-keylog to see them", alert)
    if desc == "protocol_version":
        return f"no TLS version in common (the client offered {offered or 'none'})", alert
    if desc in ("handshake_failure", "insufficient_security") and s.server_hello is None:
        n = len([c for c in (ch.cipher_suites if ch else []) if (c & 0x0F0F) != 0x0A0A])
        return (f"no cipher suite (or group) in common: the client offered {offered or 'TLS'} with "
                f"{n} cipher suite(s)" + (f" ({', '.join(suite_name(c) for c in ch.cipher_suites[:4])}"
                                            f"{', ...' if n > 4 else ''})" if ch else ""), alert)
    if desc == "certificate_required" or (
            alert.sender == "server" and s.client_certificate_requested
            and s.client_certificate_sent is False and desc in ("handshake_failure", "bad_certificate",
                                                                 "certificate_unknown")):
        return "the server requires a client certificate and the client sent none", alert
    if desc in CERT_ALERTS:
        cause = _cert_cause(s, rejected, t)
        if desc == "certificate_expired" and cause is None:
            cause = f"the {rejected}'s certificate has expired"
        if cause is None:
            cause = (f"the {alert.sender} refused the {rejected}'s certificate"
                     + (" (encrypted in TLS 1.3; give --tls-keylog to see it)"
                        if s.certificates_encrypted else ""))
        return cause, alert
    if desc == "unrecognized_name":
        return f"the server does not answer to the name {s.sni!r} the client asked for", alert
    if desc == "no_application_protocol":
        return "no application protocol (ALPN) in common", alert
    return f"the {alert.sender} ended the handshake with {desc}", alert


def _server_not_tls(analysis, s) -> bool:
    """The server answered the ClientHello with something that is not TLS, or closed without
    a word on a port that is not a TLS port: ``tls-on-plaintext-port``, not a failed handshake."""
    if s.not_tls.get("server"):
        return True
    return (s.server_hello is None and s.records[1] == 0 and not s.alerts
            and s.conn.server_to_client.payload_bytes == 0 and s.conn.state != "open"
            and s.conn.server_port not in analysis.tls_ports)


def handshake_failed(analysis) -> list[Finding]:
    out = []
    ids = _assoc_ids(analysis)
    for s in analysis.tls_connections:
        if s.handshake_complete is not False or _server_not_tls(analysis, s):
            continue
        if s.client_hello is None:
            continue
        t = s.conn.start_time
        cause, alert = _failure_cause(s, t)
        frames = [f for f in (s.hello_frames[0], s.hello_frames[1]) if f]
        what = "closed the connection"
        if alert is not None:
            frames.append(alert.frame)
            what = (f"sent the alert {alert.description}" + (f" ({alert.level})" if alert.level else "")
                    if not alert.guessed else "sent a probable (encrypted) alert")
            who = alert.sender
        else:
            who = "server" if s.conn.server_to_client.fin_frame or s.conn.server_to_client.reset_frame else "peer"
        certs = "; ".join(f"{c.sender} certificate {c.subject} issued by {c.issuer}, valid "
                          f"{c.not_before} to {c.not_after}" for c in s.certificates[:3])
        msg = (f"TLS handshake failed on {_who(s.conn)}: the {who} {what}. Likely cause: {cause}."
               + (f" Certificates: {certs}." if certs else ""))
        out.append(Finding("tls-handshake-failed", default_severity("tls-handshake-failed"), msg,
                           advice("tls-handshake-failed"), ids.get(s.conn.id), frames,
                           details={"tcp_connection": s.conn.id, "cause": cause,
                                    "alert": alert.to_json() if alert is not None else None,
                                    "version_offered": [version_name(v) for v in s.offered_versions]}))
    return out


def certificate_expiring(analysis) -> list[Finding]:
    out = []
    ids = _assoc_ids(analysis)
    seen = set()
    for s in analysis.tls_connections:
        t = s.conn.start_time
        for c in s.certificates:
            if not c.not_after_ts or c.not_after_ts - t > EXPIRY_WARNING:
                continue
            key = (c.subject, c.issuer, c.not_after)
            if key in seen:
                continue
            seen.add(key)
            expired = c.not_after_ts < t
            days = (c.not_after_ts - t) / 86400
            msg = (f"The {c.sender}'s certificate {c.subject} (issued by {c.issuer}) "
                   + (f"had expired at the time of the capture (not after {c.not_after})" if expired
                      else f"expires on {c.not_after}, {days:.0f} day(s) after the capture")
                   + f", on {_who(s.conn)}.")
            out.append(Finding("tls-certificate-expiring", "error" if expired else
                               default_severity("tls-certificate-expiring"), msg,
                               advice("tls-certificate-expiring"), ids.get(s.conn.id),
                               [s.hello_frames[1] or s.first_frame],
                               details={"tcp_connection": s.conn.id, "subject": c.subject,
                                        "not_after": c.not_after, "sender": c.sender}))
    return out


def weak_protocol(analysis) -> list[Finding]:
    out = []
    ids = _assoc_ids(analysis)
    for s in analysis.tls_connections:
        if s.version is None:
            continue
        problems = []
        severity = "note"
        if s.version < 0x0303:
            problems.append(f"{version_name(s.version)} is below TLS 1.2, which BCP 195 (RFC 8996, "
                            "RFC 9325) requires")
            severity = "warning"
        weak = suite_weakness(s.cipher_suite) if s.cipher_suite is not None else None
        if weak is not None:
            problems.append(weak[1])
            if weak[0] == "warning":
                severity = "warning"
        if not problems:
            continue
        msg = f"{_who(s.conn)} negotiated {version_name(s.version)}: " + "; ".join(problems) + "."
        out.append(Finding("tls-weak-protocol", severity, msg, advice("tls-weak-protocol"),
                           ids.get(s.conn.id), [s.hello_frames[1]],
                           details={"tcp_connection": s.conn.id, "version": version_name(s.version),
                                    "cipher_suite": suite_name(s.cipher_suite)
                                    if s.cipher_suite is not None else None}))
    return out


def port_mismatch(analysis) -> list[Finding]:
    out = []
    ids = _assoc_ids(analysis)
    for p in analysis.plain_on_tls_port:
        if not p.head or p.head[0] != 0x01:  # only DICOM (an A-ASSOCIATE-RQ) is ours to judge
            continue
        answer = ""
        if p.server_head[:1] == b"\x15":
            answer = " The server answered with a TLS alert: it expects TLS."
        elif not p.server_head:
            answer = " The server sent nothing back."
        out.append(Finding("tls-plaintext-on-tls-port", default_severity("tls-plaintext-on-tls-port"),
                           f"{_who(p.conn)}: the client sent plain DICOM (an A-ASSOCIATE-RQ) to "
                           f"port {p.conn.server_port}, a DICOM-over-TLS port.{answer}",
                           advice("tls-plaintext-on-tls-port"), ids.get(p.conn.id), [p.frame],
                           details={"tcp_connection": p.conn.id}))
    for s in analysis.tls_connections:
        if not _server_not_tls(analysis, s):
            continue
        head = s.not_tls.get("server")
        if head is not None:
            what = ("an A-ABORT PDU" if head[0][:1] == b"\x07" else "an A-ASSOCIATE-RJ PDU"
                    if head[0][:1] == b"\x03" else f"bytes that are not TLS ({head[0][:8].hex(' ')})")
            msg = (f"{_who(s.conn)}: the client began a TLS handshake, but the server answered with "
                   f"{what}: it does not speak TLS on port {s.conn.server_port}.")
            frames = [s.hello_frames[0], head[1]]
        else:
            msg = (f"{_who(s.conn)}: the client began a TLS handshake and the server closed the "
                   f"connection without answering: port {s.conn.server_port} probably expects "
                   "plain DICOM.")
            frames = [s.hello_frames[0]]
        out.append(Finding("tls-on-plaintext-port", default_severity("tls-on-plaintext-port"), msg,
                           advice("tls-on-plaintext-port"), ids.get(s.conn.id), frames,
                           details={"tcp_connection": s.conn.id}))
    return out


KEY_PROBLEMS = {
    "missing": "the key log has no secrets for its client random",
    "incomplete": "the key log lacks some of its TLS 1.3 secrets",
    "unsupported": "its cipher suite is not one dicomtrace decrypts",
}


def not_decrypted(analysis) -> list[Finding]:
    out = []
    ids = _assoc_ids(analysis)
    for s in analysis.tls_connections:
        if s.keys == "none" or s.decrypted or s.handshake_complete is False:
            continue
        why = KEY_PROBLEMS.get(s.keys, "")
        if s.client_hello is None:
            why = "the capture began after its handshake (no client random to look up)"
        elif s.keys == "found":
            why = "the keys did not decrypt its records"
        out.append(Finding("tls-not-decrypted", default_severity("tls-not-decrypted"),
                           f"TLS connection {_who(s.conn)} was not decrypted: {why}.",
                           advice("tls-not-decrypted"), ids.get(s.conn.id), [s.first_frame],
                           details={"tcp_connection": s.conn.id, "keys": s.keys}))
    return out


RULES = [handshake_failed, certificate_expiring, weak_protocol, port_mismatch, not_decrypted]
