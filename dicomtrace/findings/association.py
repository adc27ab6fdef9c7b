"""Findings about association set-up and tear-down (PS3.8 sections 7.1-7.3, 9.3.4)."""

from __future__ import annotations

from dicomtrace.findings.base import Finding
from dicomtrace.model.association import Association, Operation
from dicomtrace.uids import uid_name
from dicomtrace.ul.pdu import APPLICATION_CONTEXT, PC_RESULTS


def label(a: Association) -> str:
    ae = ""
    if a.calling_ae is not None or a.called_ae is not None:
        ae = f" “{a.calling_ae or '?'}” → “{a.called_ae or '?'}”"
    return f"association {a.id} ({a.requestor} → {a.acceptor}{ae})"


def sop_label(uid: str | None) -> str:
    if not uid:
        return "an unknown SOP class"
    name = uid_name(uid)
    return f"{name} ({uid})" if name else uid


def in_flight(a: Association) -> list[Operation]:
    """Operations without a final response, or whose request data set never completed."""
    return [op for op in a.operations
            if op.final is None or (op.has_data_set and not op.dataset_complete)]


def describe_ops(ops: list[Operation], limit: int = 5) -> str:
    parts = [f"{op.service} message {op.message_id}" for op in ops[:limit]]
    if len(ops) > limit:
        parts.append(f"{len(ops) - limit} more")
    return ", ".join(parts)


REJECT_HINTS = {
    (1, 1): "The acceptor refused without saying why. Its own log usually tells: look for an "
            "unknown calling AE title or IP address, a missing SOP class, or a licence limit.",
    (1, 2): "The acceptor does not support the application context "
            "{ctx}; DICOM defines only 1.2.840.10008.3.1.1.1. Check the requestor's configuration.",
    (1, 3): "The acceptor does not know the calling AE title “{calling}” (or not from "
            "{ip}). Add it, with this IP address, to the acceptor's list of known AEs, or fix "
            "the spelling, case and padding on the sending device.",
    (1, 7): "The acceptor does not answer to the called AE title “{called}”. Compare it, "
            "character for character (case, spaces), with the AE title the acceptor is "
            "configured with, and check the sending device's entry for this destination.",
    (2, 1): "The acceptor's DICOM stack refused without a reason. Check its log.",
    (2, 2): "The acceptor does not support the protocol version requested (0x{version:04X}); "
            "only version 1 exists.",
    (3, 1): "The acceptor is temporarily overloaded. Retry later; if it persists, check how many "
            "simultaneous associations it allows and whether clients leave associations open.",
    (3, 2): "The acceptor reached a local limit, most often the number of simultaneous "
            "connections its licence or configuration allows. Check for associations other "
            "clients leave open, and the acceptor's connection limit.",
}


def association_rejected(analysis) -> list[Finding]:
    out = []
    for a in analysis.associations:
        r = a.reject
        if r is None:
            continue
        transient = "temporarily (a retry may succeed)" if r.result == 2 else "permanently"
        hint = REJECT_HINTS.get((r.source, r.reason), "The reason code is reserved; check the "
                                "acceptor's log.").format(
            calling=a.calling_ae, called=a.called_ae, ip=a.requestor.ip,
            ctx=a.application_context or APPLICATION_CONTEXT, version=a.protocol_version or 0)
        out.append(Finding(
            "association-rejected", "error",
            f"The acceptor rejected {label(a)} {transient}: {r.text}.",
            hint, a.id, [f for f in (a.request_frame, r.frame) if f],
            details={"result": r.result, "source": r.source, "reason": r.reason}))
    return out


def presentation_contexts(analysis) -> list[Finding]:
    out = []
    for a in analysis.associations:
        if a.accept_frame is None or not a.presentation_contexts:
            continue
        accepted = [pc for pc in a.presentation_contexts if pc.result == 0]
        rejected = [pc for pc in a.presentation_contexts if pc.result not in (0, None)]
        if not rejected:
            continue
        if not accepted:
            out.append(Finding(
                "no-accepted-presentation-context", "error",
                f"The acceptor rejected every presentation context of {label(a)}: nothing can be "
                f"exchanged on it.",
                "The acceptor supports none of the proposed SOP class / transfer syntax pairs. "
                "Check that the SOP classes are enabled on the acceptor and that at least one "
                "proposed transfer syntax (Implicit VR Little Endian is always supported by "
                "conformant systems) is accepted; see the negotiation table.",
                a.id, [a.accept_frame],
                details={"rejected": [{"id": pc.id, "abstract_syntax": pc.abstract_syntax,
                                       "result": pc.result} for pc in rejected]}))
            continue
        unserved = unserved_contexts(a)
        used_ids = {op.context_id for op in a.operations}
        proposed = {pc.abstract_syntax for pc in a.presentation_contexts}
        lines = []
        for pc in sorted(rejected, key=lambda pc: pc not in unserved):
            why = PC_RESULTS.get(pc.result, f"result {pc.result}")
            extra = ""
            if pc.result == 4:
                extra = " (proposed: " + ", ".join(
                    uid_name(t) or t for t in pc.proposed_transfer_syntaxes) + ")"
            lines.append(f"context {pc.id} {sop_label(pc.abstract_syntax)}: {why}{extra}")
        hints = []
        if any(pc.result == 3 for pc in unserved):
            hints.append("abstract syntax not supported: the SOP class is not configured on the "
                         "acceptor; enable it there, or do not send that kind of object to it")
        if any(pc.result == 4 for pc in unserved):
            hints.append("transfer syntaxes not supported: a compression mismatch; enable the "
                         "transfer syntax on the acceptor, or have the sender offer (or convert "
                         "to) an uncompressed syntax such as Explicit VR Little Endian")
        if any(pc.result in (1, 2) for pc in unserved):
            hints.append("rejected by the user or with no reason: check the acceptor's "
                         "configuration for these SOP classes")
        # Requestors often propose every SOP class they know and use two: a rejection matters
        # when it was used, when nothing could be sent, or when only a few classes were asked.
        severity = "warning" if (used_ids & {pc.id for pc in rejected}) or (unserved and (
            not a.operations or len(proposed) <= 4)) else "note"
        msg = (f"The acceptor rejected {len(rejected)} of {len(a.presentation_contexts)} "
               f"presentation contexts of {label(a)}: " + "; ".join(lines[:10])
               + ("; ..." if len(lines) > 10 else "") + ".")
        if not unserved:
            msg += " Each of these SOP classes was accepted in another context."
        elif severity == "note":
            msg += (f" {len(unserved)} of the {len(proposed)} SOP classes proposed were refused; "
                    "the operations that were sent used accepted ones.")
        out.append(Finding("presentation-context-rejected", severity, msg,
                           "; ".join(hints) + "." if hints else
                           "Another context with the same SOP class was accepted, so nothing "
                           "was lost; this only shows which syntaxes the acceptor prefers.",
                           a.id, [a.accept_frame],
                           details={"rejected": [{"id": pc.id, "abstract_syntax": pc.abstract_syntax,
                                                  "result": pc.result} for pc in rejected]}))
    return out


def unserved_contexts(a: Association) -> list:
    """Rejected presentation contexts whose SOP class no accepted context carries."""
    accepted = {pc.abstract_syntax for pc in a.presentation_contexts if pc.result == 0}
    return [pc for pc in a.presentation_contexts
            if pc.result not in (0, None) and pc.abstract_syntax not in accepted]


def association_aborted(analysis) -> list[Finding]:
    out = []
    for a in analysis.associations:
        ab = a.abort
        if ab is None:
            continue
        flying = in_flight(a)
        unserved = unserved_contexts(a) if a.accept_frame is not None else []
        # the requestor gives up after the A-ASSOCIATE-AC: nothing of what it needed was sent
        needed = (ab.sent_by == "requestor" and unserved and not flying
                  and not any(op.request_time >= (a.accept_time or 0) for op in a.operations
                              if op.sender == "requestor")) if unserved else False
        if needed:
            hint = ("The requestor aborted right after the acceptor rejected presentation "
                    "context(s) it needed: " + "; ".join(
                        f"{sop_label(pc.abstract_syntax)} ({PC_RESULTS.get(pc.result, pc.result)})"
                        for pc in unserved[:5])
                    + ". That rejection is the likely cause: enable the SOP class / transfer "
                    "syntax on the acceptor, or have the requestor propose one the acceptor "
                    "supports.")
        elif ab.source == 2:
            hint = ("The DICOM software of the {by} aborted because of a protocol error "
                    "({reason}). Look at the PDUs just before frame {frame} (see the other "
                    "findings) and at that side's log; a vendor may need to fix its implementation.")
        elif ab.sent_by == "requestor":
            hint = ("The requesting application gave up: a timeout waiting for a response, a "
                    "user cancel, or an internal error. Check its log around this time, and its "
                    "DIMSE/network timeouts if the acceptor was slow to answer.")
        else:
            hint = ("The acceptor ended the association: it could not or would not go on "
                    "(storage error, unsupported data, resource limit, or a timeout waiting for "
                    "the requestor). Check the acceptor's log around this time.")
        reason = ab.text.split("reason: ")[-1]
        message = (f"The {ab.sent_by} aborted {label(a)} (frame {ab.frame}): {ab.text}.")
        if flying:
            message += f" In flight: {describe_ops(flying)}."
        elif needed:
            message += (f" It came right after the A-ASSOCIATE-AC (frame {a.accept_frame}) "
                        f"rejected {len(unserved)} presentation context(s) with no accepted "
                        "alternative, before any request.")
        else:
            message += " No operation was in progress."
        out.append(Finding("association-aborted", "error" if flying else "warning", message,
                           hint.format(by=ab.sent_by, reason=reason, frame=ab.frame),
                           a.id, [ab.frame] + [op.request_frame for op in flying[:10]],
                           [op.message_id for op in flying],
                           details={"source": ab.source, "reason": ab.reason, "sent_by": ab.sent_by,
                                    **({"after_rejected_context": True} if needed else {})}))
    return out


def connection_end(analysis) -> list[Finding]:
    out = []
    for a in analysis.associations:
        flying = in_flight(a)
        if a.outcome in ("reset", "closed"):
            c = a.conn
            rst = [h for h in c.half if h.reset_frame is not None]
            how = "a TCP reset" if rst else "a TCP close (FIN)"
            frames = [h.reset_frame for h in rst] or [h.fin_frame for h in c.half if h.fin_frame]
            who = ""
            if rst:
                first = min(rst, key=lambda h: h.reset_frame)
                side = "client" if first is c.client_to_server else "server"
                who = f" from the TCP {side}"
            msg = (f"{label(a)} ended with {how}{who} and no A-RELEASE or A-ABORT")
            msg += (f"; in flight: {describe_ops(flying)}." if flying else ".")
            out.append(Finding(
                "connection-closed-without-release", "error" if flying else "warning", msg,
                "One side closed the connection instead of releasing the association: an "
                "application crash or restart, an idle timeout, a firewall or load balancer "
                "cutting long or idle connections, or a peer that does not implement release. "
                "Check both sides' logs and any firewall idle timeout.",
                a.id, frames + [op.request_frame for op in flying[:10]],
                [op.message_id for op in flying]))
        elif a.outcome == "incomplete":
            msg = f"The capture ends while {label(a)} is still open"
            msg += (f"; unfinished: {describe_ops(flying)}." if flying else ".")
            out.append(Finding("association-incomplete", "note", msg,
                               "Capture for longer (or start earlier) to see how it ended.",
                               a.id, [a.conn.last_frame]))
        if a.midstream:
            decoded = sum(1 for op in a.operations)
            inferred = sum(1 for op in a.operations if op.dataset and op.dataset.inferred)
            msg = (f"The capture begins after {label(a)} was negotiated: AE titles, presentation "
                   f"contexts and maximum PDU sizes were not seen. {decoded} operation(s) were "
                   f"still decoded from their command sets")
            msg += (f"; the transfer syntax of {inferred} data set(s) was inferred from their bytes."
                    if inferred else ".")
            out.append(Finding("capture-starts-midstream", "note", msg,
                               "Start the capture before the association is opened to see the "
                               "negotiation.", a.id, [a.conn.first_frame]))
    return out


def _ae_problems(raw: bytes) -> list[tuple[str, str]]:
    """(severity, description) for an AE title field (PS3.5 table 6.2-1, VR AE)."""
    text = raw.decode("latin-1")
    stripped = text.rstrip(" \x00")
    out = []
    if not stripped.strip():
        return [("warning", "is empty (all spaces)")]
    if any(ord(c) > 126 for c in stripped):
        out.append(("warning", "contains non-ASCII bytes"))
    if any(ord(c) < 32 for c in stripped) or "\\" in stripped:
        out.append(("warning", "contains control characters or a backslash"))
    if "\x00" in text.rstrip("\x00") or text.endswith("\x00"):
        out.append(("note", "is padded with NUL bytes instead of spaces"))
    if stripped != stripped.lstrip(" "):
        out.append(("warning", "has leading spaces (many systems treat them as significant)"))
    if " " in stripped.strip(" "):
        out.append(("note", "has embedded spaces"))
    if stripped != stripped.upper():
        out.append(("note", "contains lower-case letters (AE titles are often compared "
                            "case-sensitively)"))
    return out


def ae_title_anomaly(analysis) -> list[Finding]:
    out = []
    for a in analysis.associations:
        for which, raw in (("calling", a.calling_ae_raw), ("called", a.called_ae_raw)):
            if raw is None:
                continue
            probs = _ae_problems(raw)
            if not probs:
                continue
            severity = "warning" if any(s == "warning" for s, _ in probs) else "note"
            out.append(Finding(
                "ae-title-anomaly", severity,
                f"The {which} AE title {raw.decode('latin-1')!r} of {label(a)} "
                + "; ".join(d for _, d in probs) + ".",
                "AE titles are up to 16 characters of the default character repertoire, "
                "without backslash or control characters; leading and trailing spaces are not "
                "significant by the standard, but many products compare them literally, and "
                "case. Configure the exact same title on both sides.",
                a.id, [a.request_frame] if a.request_frame else [],
                details={"field": which, "raw": raw.decode("latin-1")}))
    return out


RULES = [association_rejected, presentation_contexts, association_aborted, connection_end,
         ae_title_anomaly]
