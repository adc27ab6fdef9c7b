"""Findings about DIMSE operations: statuses, pairing, timing (PS3.7, PS3.4)."""

from __future__ import annotations

import statistics
from collections import defaultdict

from dicomtrace.findings.association import label, sop_label
from dicomtrace.findings.base import Finding, completing_frame
from dicomtrace.findings.codes import advice
from dicomtrace.model.association import Operation

# What to check, by (service, status) and then by status alone (PS3.4 annexes B, C; PS3.7 C).
STATUS_HINTS = {
    ("storage", 0xA700): "The receiver is out of resources: check free disk space and database "
                         "space on the archive, its storage quotas and licence limits.",
    ("storage", 0xA900): "The receiver says the data set does not match its SOP class: the "
                         "object is missing attributes its IOD requires, or the sender chose "
                         "the wrong SOP class. Validate the object (e.g. dciodvfy) and check "
                         "the modality's export settings.",
    ("storage", 0xC000): "The receiver could not understand the data set: it may be corrupt, "
                         "use a transfer syntax the receiver does not really support, or break "
                         "its parser. Check the receiver's log and try a single object again.",
    ("storage", 0xB000): "The receiver changed attribute values while storing (coercion), e.g. "
                         "patient ID reconciliation. Usually harmless; if studies later appear "
                         "under another patient or ID, look at the receiver's coercion rules.",
    ("storage", 0xB007): "Stored although the data set does not match the SOP class; validate "
                         "the object.",
    ("storage", 0xB006): "The receiver discarded some elements; check which ones if data is "
                         "missing later.",
    ("find", 0xA700): "The Q/R SCP ran out of resources answering the query (too many matches, "
                      "database limits). Narrow the query.",
    ("find", 0xA900): "The identifier does not match the SOP class: wrong Query/Retrieve Level "
                      "or keys not allowed at that level.",
    ("move", 0xA702): "The Q/R SCP could not perform the sub-operations (out of resources).",
    ("move", 0xA701): "The Q/R SCP could not count the matches (out of resources).",
    ("move", 0xB000): "Some sub-operations failed: see the C-STOREs on the sub-association(s).",
    ("get", 0xB000): "Some sub-operations failed: see the C-STOREs on this association.",
    ("get", 0xA702): "The Q/R SCP could not perform the sub-operations (out of resources).",
}
CODE_HINTS = {
    0x0122: "The receiver does not support this SOP class for this operation; add it to its "
            "configuration or do not send such objects to it.",
    0x0124: "The receiver refused: not authorized. Check the access rules for this AE title.",
    0x0110: "Processing failure on the receiver; check its log.",
    0x0111: "The receiver already has an instance with this SOP Instance UID.",
    0x0211: "The receiver does not recognise the operation.",
    0x0212: "An argument had the wrong type: check the command for nonconforming values.",
    0x0213: "The receiver is short of resources.",
    0xFE00: "The operation was cancelled (C-CANCEL) by the requestor.",
}


def status_hint(service: str, code: int, category: str) -> str:
    h = STATUS_HINTS.get((service, code)) or CODE_HINTS.get(code)
    if h:
        return h
    if 0xC000 <= code <= 0xCFFF:
        return "The receiver was unable to process the request; its log says why."
    if 0xA700 <= code <= 0xA7FF:
        return "The receiver is out of resources (disk, database, memory or licence limits)."
    if category == "warning":
        return "The operation succeeded with a warning; check the receiver's log for details."
    return "Check the receiver's log for this status code."


def dimse_status(analysis) -> list[Finding]:
    """dimse-failure / dimse-warning, one finding per association, command and status."""
    out = []
    for a in analysis.associations:
        groups: dict[tuple, list[Operation]] = defaultdict(list)
        for op in a.operations:
            f = op.final
            if f is None or f.info.category not in ("failure", "warning", "cancel"):
                continue
            if op.service == "C-MOVE" and f.status == 0xA801:
                continue  # move-destination-unknown says it better
            groups[(op.service, f.status, f.info.category)].append(op)
        for (service, code, category), ops in groups.items():
            f0 = ops[0].final
            info = f0.info
            what = (f"{len(ops)} {service} request(s)" if len(ops) > 1
                    else f"{service} message {ops[0].message_id}")
            if service == "C-STORE" and len(ops) == 1 and ops[0].sop_instance_uid:
                what += f" ({sop_label(ops[0].sop_class_uid)}, instance {ops[0].sop_instance_uid})"
            msg = f"{what} on {label(a)} answered 0x{code:04X}: {info.meaning}."
            comments = sorted({op.final.error_comment for op in ops if op.final.error_comment})
            if comments:
                msg += " Error Comment: " + "; ".join(f"“{c}”" for c in comments[:3]) + "."
            offending = sorted({e for op in ops for e in op.final.offending_elements})
            if offending:
                msg += " Offending Element: " + ", ".join(offending[:10]) + "."
            severity = {"failure": "error", "warning": "warning", "cancel": "note"}[category]
            code_name = {"failure": "dimse-failure", "warning": "dimse-warning",
                         "cancel": "dimse-cancelled"}[category]
            out.append(Finding(code_name, severity, msg,
                               status_hint(info.service, code, category), a.id,
                               [f for op in ops[:20] for f in (op.request_last_frame, completing_frame(op.final))],
                               [op.message_id for op in ops],
                               details={"status": code, "service": info.service,
                                        "count": len(ops)}))
    return out


def request_unanswered(analysis) -> list[Finding]:
    out = []
    for a in analysis.associations:
        unanswered = [op for op in a.operations if op.final is None]
        # a request whose data set never fully reached the responder cannot be answered:
        # the responder is not to blame (object-incomplete says what happened to it)
        whole = [op for op in unanswered if not op.has_data_set or op.dataset_complete]
        cut = [op for op in unanswered if op.has_data_set and not op.dataset_complete]
        if cut:
            receiver = "acceptor" if cut[0].sender == "requestor" else "requestor"
            out.append(Finding(
                "request-unanswered", "warning",
                f"{len(cut)} request(s) on {label(a)} got no response, but their data set never "
                f"fully reached the {receiver}: "
                + ", ".join(f"{op.service} message {op.message_id} (frame {op.request_frame}, "
                            f"{op.dataset_bytes or 0} bytes sent)" for op in cut[:8])
                + ("..." if len(cut) > 8 else "") + ".",
                f"The {receiver} could not answer a request it never got whole: look at why the "
                "transfer stopped (an abort, a reset, the capture's end; see object-incomplete), "
                f"not at the {receiver}.",
                a.id, [op.request_frame for op in cut[:20]], [op.message_id for op in cut],
                details={"request_incomplete": True}))
        ops = whole
        if not ops:
            continue
        if a.outcome == "incomplete":
            end, severity = "the capture ended", "warning"
        elif a.outcome == "aborted":
            end, severity = "the association was aborted", "error"
        elif a.outcome == "released":
            end, severity = "the association was released", "error"
        else:
            end, severity = "the connection closed", "error"
        pend = [op for op in ops if op.responses]
        msg = (f"{len(ops)} request(s) on {label(a)} got no final response before {end}: "
               + ", ".join(f"{op.service} message {op.message_id} (frame {op.request_last_frame})"
                           for op in ops[:8]) + ("..." if len(ops) > 8 else "") + ".")
        if pend:
            msg += f" {len(pend)} of them had pending responses."
        out.append(Finding(
            "request-unanswered", severity, msg,
            "The responder never answered: it may have hung, crashed, or still been working "
            "when the other side gave up (check the requestor's DIMSE timeout against how long "
            "the responder needs, e.g. for large C-MOVEs). If the capture simply ended early, "
            "capture longer.",
            a.id, [op.request_last_frame for op in ops[:20]], [op.message_id for op in ops]))
    return out


def response_without_request(analysis) -> list[Finding]:
    out = []
    for a in analysis.associations:
        if not a.orphan_responses:
            continue
        severity = "note" if a.midstream else "warning"
        items = ", ".join(f"{svc}-RSP to message {mid} (frame {fr})"
                          for svc, mid, fr, _t in a.orphan_responses[:8])
        msg = f"{len(a.orphan_responses)} response(s) on {label(a)} answer no request seen: {items}."
        hint = ("The request was sent before the capture began." if a.midstream else
                "The responder answered a Message ID that was never sent or was already "
                "answered: a nonconforming implementation, or the request's bytes were lost "
                "from the capture.")
        out.append(Finding("response-without-request", severity, msg, hint, a.id,
                           [fr for _s, _m, fr, _t in a.orphan_responses[:20]]))
    return out


def slow_response(analysis) -> list[Finding]:
    """An operation answered far later than the others of its kind on the association."""
    out = []
    for a in analysis.associations:
        by_service: dict[str, list[Operation]] = defaultdict(list)
        for op in a.operations:
            if op.final is not None and op.response_delay is not None:
                by_service[op.service].append(op)
        for service, ops in by_service.items():
            if service in ("C-MOVE", "C-GET") or len(ops) < 3:
                continue
            delays = [op.response_delay for op in ops]
            med = statistics.median(delays)
            slow = [op for op in ops
                    if op.response_delay > 1.0 and op.response_delay > max(10 * med, med + 1.0)]
            if not slow:
                continue
            worst = max(slow, key=lambda op: op.response_delay)
            ratio = worst.response_delay / med if med > 0 else float("inf")
            msg = (f"{len(slow)} {service} response(s) on {label(a)} came far later than the "
                   f"others: the slowest, message {worst.message_id}, took "
                   f"{worst.response_delay:.2f} s after its request ended, "
                   f"{'%.0f×' % ratio if ratio != float('inf') else 'far above'} the median of "
                   f"{med * 1000:.1f} ms.")
            out.append(Finding(
                "slow-response", "warning", msg,
                "The responder was busy at that moment: database or disk latency, a "
                "synchronous step such as compression, routing or a lookup, or a pause of its "
                "process. Compare with the responder's log at that time.",
                a.id, [f for op in slow[:10] for f in (op.request_last_frame, completing_frame(op.final))],
                [op.message_id for op in slow],
                details={"median_s": med, "slowest_s": worst.response_delay}))
    return out


def object_incomplete(analysis) -> list[Finding]:
    """C-STORE data sets this capture does not hold whole (exports mark them .partial)."""
    out = []
    for a in analysis.associations:
        ops = [op for op in a.operations
               if op.service == "C-STORE" and op.has_data_set and not op.dataset_complete]
        if not ops:
            continue
        lost = sum(op.dataset_lost for op in ops)
        cut_off = a.outcome in ("aborted", "reset", "closed") and any(not op.dataset_lost for op in ops)
        msg = (f"{len(ops)} object(s) sent on {label(a)} are not complete in this capture: "
               + ", ".join(f"message {op.message_id} ({op.dataset_bytes or 0} bytes seen"
                           + (f", {op.dataset_lost} never captured" if op.dataset_lost else "")
                           + ")" for op in ops[:6])
               + ("..." if len(ops) > 6 else "") + ".")
        out.append(Finding(
            "object-incomplete", "warning", msg,
            "Part of the data set is missing from the capture (dropped packets, a capture that "
            "started or stopped mid-transfer) or the transfer was cut off (abort, reset). "
            "`dicomtrace export` writes such objects with a .partial suffix; the receiver may "
            "still have the whole object if only the capture missed bytes (see tcp-data-missing).",
            a.id, [op.request_frame for op in ops[:20]], [op.message_id for op in ops],
            details={"objects": len(ops), "bytes_never_captured": lost, "cut_off": cut_off}))
    return out


def dataset_problem(analysis) -> list[Finding]:
    """Data sets whose bytes do not decode cleanly (what pydicom warned about, PS3.5)."""
    out = []
    for a in analysis.associations:
        ops = [op for op in a.operations if op.dataset is not None and op.dataset.problems]
        if not ops:
            continue
        problems = []
        for op in ops:
            problems += [p for p in op.dataset.problems if p not in problems]
        msg = (f"{len(ops)} data set(s) on {label(a)} do not decode cleanly: "
               + "; ".join(problems[:4]) + (f"; {len(problems) - 4} more" if len(problems) > 4 else "")
               + ". Messages: " + ", ".join(f"{op.service} {op.message_id}" for op in ops[:8])
               + ("..." if len(ops) > 8 else "") + ".")
        out.append(Finding("dataset-problem", "warning", msg, advice("dataset-problem"), a.id,
                           [op.request_last_frame for op in ops[:20]],
                           [op.message_id for op in ops], details={"problems": problems[:20]}))
    return out


RULES = [dimse_status, request_unanswered, response_without_request, slow_response,
         object_incomplete, dataset_problem]
