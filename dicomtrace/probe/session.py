"""One association requested with pynetdicom, watched through its events and told in words.

The negotiation is read from the PDUs pynetdicom received (A-ASSOCIATE-AC/RJ, A-ABORT:
PS3.8 9.3.3-9.3.8) and a failure is explained as a :class:`Finding` with the codes and
advice of the capture analysis (docs/findings.md), so an active check and a capture of
the same fault say the same thing.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from dataclasses import dataclass, field

from dicomtrace.findings.association import REJECT_HINTS
from dicomtrace.findings.base import Finding
from dicomtrace.findings.codes import advice, default_severity
from dicomtrace.probe import EXIT_DICOM_FAILURE, EXIT_OK, EXIT_UNREACHABLE
from dicomtrace.uids import uid_name
from dicomtrace.ul.pdu import PC_RESULTS, abort_text, reject_text

DEFAULT_CALLING = "DICOMTRACE"
DEFAULT_CALLED = "ANY-SCP"


@dataclass(slots=True)
class Target:
    """The peer to check and how to present ourselves to it."""

    host: str
    port: int
    calling: str = DEFAULT_CALLING
    called: str = DEFAULT_CALLED
    timeout: float = 10.0

    def label(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


class _TcpErrors(logging.Handler):
    """pynetdicom only logs why a TCP connect failed ("TCP Initialisation Error: ..."):
    keep that text for the attempt running in this process."""

    def __init__(self):
        super().__init__(logging.ERROR)
        self.current: Attempt | None = None

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if self.current is not None and msg.startswith("TCP Initialisation Error:"):
            self.current.tcp_error = msg.split(":", 1)[1].strip()


_TCP_ERRORS = _TcpErrors()
_LOCK = threading.Lock()


def quiet_pynetdicom() -> None:
    """pynetdicom's own log lines never reach the user: we explain in our words."""
    log = logging.getLogger("pynetdicom")
    if _TCP_ERRORS not in log.handlers:
        log.addHandler(_TCP_ERRORS)
    log.propagate = False
    log.setLevel(logging.ERROR)


@dataclass
class Attempt:
    """What happened while one association was requested and used (monotonic seconds)."""

    target: Target
    started: float = 0.0
    connected: float | None = None  # TCP connection established
    answered: float | None = None  # A-ASSOCIATE-AC or -RJ received
    tcp_error: str | None = None
    accept_pdu: object | None = None
    reject: tuple[int, int, int] | None = None  # result, source, reason (PS3.8 table 9-21)
    abort: tuple[int, int] | None = None  # source, reason received (PS3.8 table 9-26)
    aborted_at: float | None = None
    released: bool = False

    def handlers(self):
        from pynetdicom import evt

        return [(evt.EVT_CONN_OPEN, self._on_open), (evt.EVT_PDU_RECV, self._on_pdu),
                (evt.EVT_RELEASED, self._on_released)]

    def _on_open(self, event) -> None:
        self.connected = time.monotonic()

    def _on_released(self, event) -> None:
        self.released = True

    def _on_pdu(self, event) -> None:
        from pynetdicom.pdu import A_ABORT_RQ, A_ASSOCIATE_AC, A_ASSOCIATE_RJ

        pdu = event.pdu
        if isinstance(pdu, A_ASSOCIATE_AC):
            self.answered = time.monotonic()
            self.accept_pdu = pdu
        elif isinstance(pdu, A_ASSOCIATE_RJ):
            self.answered = time.monotonic()
            self.reject = (pdu.result, pdu.source, pdu.reason_diagnostic)
        elif isinstance(pdu, A_ABORT_RQ):
            self.aborted_at = time.monotonic()
            self.abort = (pdu.source, pdu.reason_diagnostic)

    @property
    def connect_time(self) -> float | None:
        return None if self.connected is None else self.connected - self.started

    @property
    def association_time(self) -> float | None:
        if self.answered is None or self.connected is None:
            return None
        return self.answered - self.connected


def make_ae(target: Target, calling: str | None = None):
    from pynetdicom import AE

    quiet_pynetdicom()
    ae = AE(ae_title=calling or target.calling)
    ae.connection_timeout = target.timeout
    ae.acse_timeout = target.timeout
    ae.dimse_timeout = target.timeout
    ae.network_timeout = target.timeout
    return ae


def resolve(host: str) -> str | None:
    """None when the host name does not resolve (a usage error, said in one line)."""
    try:
        socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as e:
        return f"cannot resolve host {host!r}: {e}"
    return None


def associate(ae, target: Target, contexts=None):
    """Request an association; returns (pynetdicom Association, Attempt)."""
    att = Attempt(target)
    with _LOCK:
        _TCP_ERRORS.current = att
        att.started = time.monotonic()
        try:
            assoc = ae.associate(target.host, target.port, contexts, ae_title=target.called,
                                 evt_handlers=att.handlers())
        finally:
            _TCP_ERRORS.current = None
    return assoc, att


def ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f} ms"


def sop_name(uid) -> str:
    uid = str(uid)
    return uid_name(uid) or uid


def negotiation_lines(att: Attempt, assoc) -> list[str]:
    """The set-up in words: TCP, the request, the answer and each presentation context."""
    t = att.target
    lines = []
    if att.connected is None:
        return [f"TCP connection to {t.label()} failed: {att.tcp_error or 'no connection'}"]
    lines.append(f"TCP connection to {t.label()} established in {ms(att.connect_time)}")
    proposed = assoc.requestor.requested_contexts
    lines.append(f"A-ASSOCIATE-RQ “{t.calling}” → “{t.called}”: {len(proposed)} presentation "
                 f"context(s) proposed, maximum PDU {assoc.requestor.maximum_length or 'unlimited'}")
    if att.reject is not None:
        lines.append(f"A-ASSOCIATE-RJ after {ms(att.association_time)}: {reject_text(*att.reject)}")
        return lines
    if att.accept_pdu is None:
        if att.abort is not None:
            lines.append(f"A-ABORT instead of an answer: {abort_text(*att.abort)}")
        else:
            lines.append(f"no A-ASSOCIATE answer within {t.timeout:g} s")
        return lines
    acc = assoc.acceptor
    impl = acc.implementation_class_uid or "?"
    version = f" ({acc.implementation_version_name})" if acc.implementation_version_name else ""
    lines.append(f"A-ASSOCIATE-AC after {ms(att.association_time)}: acceptor “{acc.ae_title}”, "
                 f"implementation {impl}{version}, maximum PDU {acc.maximum_length or 'unlimited'}")
    results = {cx.context_id: cx for cx in assoc.accepted_contexts + assoc.rejected_contexts}
    asked = {cx.context_id: cx for cx in proposed}
    for cx in sorted(results.values(), key=lambda c: c.context_id):
        if cx.result == 0:
            what = f"accepted, {sop_name(cx.transfer_syntax[0])}"
        else:
            what = f"rejected: {PC_RESULTS.get(cx.result, f'result {cx.result}')}"
            if cx.result == 4 and cx.context_id in asked:
                what += " (proposed: " + ", ".join(
                    sop_name(s) for s in asked[cx.context_id].transfer_syntax) + ")"
        lines.append(f"  context {cx.context_id} {sop_name(cx.abstract_syntax)}: {what}")
    return lines


def failure(att: Attempt, assoc) -> Finding | None:
    """The finding that explains why no association could be used, or None."""
    t = att.target
    where = f"{t.label()} (“{t.calling}” → “{t.called}”)"
    if att.connected is None:
        err = (att.tcp_error or "").lower()
        if "refused" in err:
            return finding("connection-refused",
                           f"The TCP connection to {t.label()} was refused: nothing listens there.",
                           error=att.tcp_error)
        return finding("connection-unanswered", f"The TCP connection to {t.label()} got no answer"
                       + (f" ({att.tcp_error})." if att.tcp_error else "."), error=att.tcp_error)
    if att.reject is not None:
        result, source, reason = att.reject
        transient = "temporarily (a retry may succeed)" if result == 2 else "permanently"
        hint = REJECT_HINTS.get((source, reason), "The reason code is reserved; check the "
                                "acceptor's log.").format(
            calling=t.calling, called=t.called, ip="this host", ctx="1.2.840.10008.3.1.1.1",
            version=1)
        return finding("association-rejected",
                       f"The acceptor at {where} rejected the association {transient}: "
                       f"{reject_text(*att.reject)}.", hint,
                       result=result, source=source, reason=reason)
    if att.accept_pdu is None:
        if att.abort is not None:
            return aborted(att, "while the association was being negotiated")
        return finding("request-unanswered",
                       f"{where} accepted the TCP connection but did not answer the "
                       f"A-ASSOCIATE-RQ within {t.timeout:g} s.",
                       advice("request-unanswered") + " Something other than DICOM may listen "
                       "on that port (a TLS port, a web server); raise --timeout if it is merely "
                       "slow.")
    if not assoc.accepted_contexts:
        rejected = "; ".join(f"{sop_name(cx.abstract_syntax)}: "
                             f"{PC_RESULTS.get(cx.result, cx.result)}" for cx in assoc.rejected_contexts)
        return finding("no-accepted-presentation-context",
                       f"The acceptor at {where} rejected every presentation context ({rejected}): "
                       "nothing can be exchanged.")
    return None


def aborted(att: Attempt, during: str) -> Finding:
    """association-aborted, said from the requestor's side."""
    t = att.target
    if att.abort is None:
        return finding("connection-closed-without-release",
                       f"The connection to {t.label()} ended without an answer {during}.")
    source, reason = att.abort
    return finding("association-aborted",
                   f"The acceptor at {t.label()} aborted the association {during}: "
                   f"{abort_text(source, reason)}.", source=source, reason=reason,
                   sent_by="acceptor")


def dimse_unanswered(att: Attempt, what: str) -> Finding:
    t = att.target
    if att.abort is not None:
        return aborted(att, f"while {what} was awaited")
    return finding("request-unanswered",
                   f"{t.label()} did not answer {what} within {t.timeout:g} s; the association "
                   "was aborted.", advice("request-unanswered") + " Raise --timeout if "
                   "slowness is expected.")


def finding(code: str, message: str, hint: str | None = None, **details) -> Finding:
    """A finding of a registered code, with its usual severity and (by default) its advice."""
    return Finding(code, default_severity(code), message,
                   advice(code) if hint is None else hint,
                   details={k: v for k, v in details.items() if v is not None})


def release(assoc) -> None:
    if assoc.is_established:
        assoc.release()


@dataclass
class CheckReport:
    """What one run of a check tells the user (text) and scripts (JSON)."""

    command: str
    target: Target
    lines: list[str] = field(default_factory=list)  # negotiation and operations in words
    operations: list[dict] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    exit_code: int = EXIT_OK
    capture: dict | None = None  # the wire-level analysis of --capture, when the check failed

    def fail(self, found: Finding, exit_code: int = EXIT_DICOM_FAILURE) -> None:
        self.findings.append(found)
        if self.exit_code in (EXIT_OK, EXIT_DICOM_FAILURE):
            self.exit_code = exit_code

    def to_json(self) -> dict:
        t = self.target
        doc = {"command": self.command, "peer": {"host": t.host, "port": t.port,
                                                 "calling_ae": t.calling, "called_ae": t.called},
               "ok": self.exit_code == EXIT_OK, "exit_code": self.exit_code,
               "negotiation": self.lines, "operations": self.operations,
               "summary": self.summary, "findings": [f.to_json() for f in self.findings]}
        if self.capture is not None:
            doc["capture"] = self.capture
        return doc


def failure_exit(att: Attempt) -> int:
    """EXIT_UNREACHABLE when no association came about (no TCP connection, or no answer to
    the A-ASSOCIATE-RQ); EXIT_DICOM_FAILURE when the peer answered but refused."""
    if att.connected is None or (att.accept_pdu is None and att.reject is None
                                 and att.abort is None):
        return EXIT_UNREACHABLE
    return EXIT_DICOM_FAILURE
