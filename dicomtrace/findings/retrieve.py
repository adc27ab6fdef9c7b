"""C-MOVE and C-GET findings (PS3.4 C.4.2, C.4.3).

A C-MOVE SCP must know the move destination's address and port and open a
new association to it; the C-STOREs on that sub-association carry the Move
Originator AE Title and Message ID.  A C-GET SCP sends its C-STOREs back on
the same association.
"""

from __future__ import annotations

from dicomtrace.findings.association import label
from dicomtrace.findings.base import Finding, completing_frame
from dicomtrace.net import format_ip

SLACK = 2.0


def _stores(analysis, a, op):
    """The C-STORE sub-operations of a C-MOVE or C-GET, and the sub-associations."""
    if op.service == "C-GET":
        return list(op.sub_operations), []
    subs = [b for b in analysis.associations if b.id in op.sub_associations]
    stores = []
    for b in subs:
        for s in b.operations:
            if s.service != "C-STORE":
                continue
            if s.move_originator_id is not None and s.move_originator_id != op.message_id:
                continue
            stores.append(s)
    return stores, subs


def _expected(op) -> int | None:
    f = op.final
    if f is None:
        pend = [r for r in op.responses if r.remaining is not None]
        if pend:
            r = pend[-1]
            return (r.remaining or 0) + (r.completed or 0) + (r.failed or 0) + (r.warning or 0)
        return None
    if f.completed is None and f.failed is None and f.warning is None:
        return None
    return (f.completed or 0) + (f.failed or 0) + (f.warning or 0)


def move_attempts(analysis, a, op):
    """TCP connections the SCP's host opened during the C-MOVE that carried no association."""
    assoc_conns = {b.conn.id for b in analysis.associations}
    end = (op.final.time if op.final else a.end_time) + SLACK
    out = []
    for c in analysis.connections:
        if c.id in assoc_conns or c.id == a.conn.id:
            continue
        if format_ip(c.client_ip) != a.acceptor.ip:
            continue
        if op.request_time - SLACK <= c.start_time <= end:
            out.append(c)
    return out


def retrieve(analysis) -> list[Finding]:
    out = []
    for a in analysis.associations:
        for op in a.operations:
            if op.service not in ("C-MOVE", "C-GET"):
                continue
            f = op.final
            frames = [op.request_last_frame] + ([completing_frame(f)] if f else [])
            if (op.service == "C-MOVE" and f is not None and f.status == 0xA801
                    and not op.sub_associations and not move_attempts(analysis, a, op)):
                out.append(Finding(
                    "move-destination-unknown", "error",
                    f"The Q/R SCP {a.acceptor} (“{a.called_ae}”) does not know the move "
                    f"destination “{op.move_destination}” of C-MOVE message {op.message_id} on "
                    f"{label(a)} (status 0xA801).",
                    f"Add the AE title “{op.move_destination}” with its IP address and port to "
                    f"the Q/R SCP's list of known destinations (check spelling, case and "
                    f"spaces), or move to a destination it already knows.",
                    a.id, frames, [op.message_id], details={"move_destination": op.move_destination}))
                continue
            stores, subs = _stores(analysis, a, op)
            expected = _expected(op)
            failed_cat = f is not None and f.info.category == "failure"
            if op.service == "C-MOVE" and not subs and ((expected or 0) > 0 or failed_cat
                                                        or (f is None and op.responses)):
                tries = move_attempts(analysis, a, op)
                if tries:
                    unanswered = [c for c in tries if c.server_to_client.packets == 0]
                    reset = [c for c in tries if c.server_to_client.resets or c.client_to_server.resets]
                    c0 = tries[0]
                    dest = f"{format_ip(c0.server_ip)}:{c0.server_port}"
                    if unanswered:
                        how = f"its connection attempts to {dest} were never answered (SYN without reply)"
                        why = ("a firewall dropping the traffic, a wrong IP address, or the "
                               "destination host down")
                    elif reset:
                        how = f"its connection to {dest} was refused or reset"
                        why = ("nothing listening on that port (wrong port configured on the "
                               "SCP, or the destination's DICOM service not running), or a "
                               "firewall rejecting it")
                    else:
                        how = f"it connected to {dest} but no DICOM association followed"
                        why = "a non-DICOM service on that port, or TLS expected"
                    msg = (f"No sub-association reached the move destination “{op.move_destination}” "
                           f"for C-MOVE message {op.message_id} on {label(a)}: {how}.")
                    hint = (f"Check the address and port the Q/R SCP has configured for "
                            f"“{op.move_destination}”: likely {why}.")
                    frames += [c.first_frame for c in tries[:5]]
                else:
                    msg = (f"No sub-association to the move destination “{op.move_destination}” was "
                           f"seen for C-MOVE message {op.message_id} on {label(a)}, and no "
                           f"connection attempt from the SCP's address {a.acceptor.ip} either.")
                    hint = ("Either the SCP never tried (check its log: destination address "
                            "lookup, sub-operation errors), or its connection left by a path "
                            "this capture does not see: capture on the destination host, or at "
                            "the SCP with a filter on the destination's address.")
                out.append(Finding("move-destination-unreachable", "error", msg, hint, a.id,
                                   frames, [op.message_id],
                                   details={"move_destination": op.move_destination}))
            # failures of the sub-operations
            bad_subs = [b for b in subs if b.outcome in ("rejected", "aborted", "reset", "closed")]
            bad_stores = [s for s in stores if s.final is not None
                          and s.final.info.category == "failure"]
            failed_count = (f.failed or 0) if f is not None else 0
            if bad_subs or bad_stores or failed_count or (failed_cat and subs):
                parts = []
                for b in bad_subs:
                    why = (b.reject.text if b.reject else b.abort.text if b.abort else
                           "the connection closed without release")
                    parts.append(f"sub-association {b.id} was {b.outcome} ({why})")
                if bad_stores:
                    codes = sorted({s.final.status for s in bad_stores})
                    parts.append(f"{len(bad_stores)} C-STORE sub-operation(s) failed ("
                                 + ", ".join(f"0x{c:04X}" for c in codes) + ")")
                if failed_count:
                    parts.append(f"the final response counts {failed_count} failed sub-operation(s)")
                if f is not None and f.info.category == "failure":
                    parts.append(f"the SCP then answered 0x{f.status:04X} ({f.info.meaning})")
                out.append(Finding(
                    "move-suboperation-failed", "error",
                    f"{op.service} message {op.message_id} on {label(a)}: " + "; ".join(parts) + ".",
                    "The retrieve reached the destination but objects did not arrive: see the "
                    "findings of the sub-association (rejection: the destination does not know "
                    "the SCP's AE title or lacks the SOP class; failures: the destination's "
                    "storage status).",
                    a.id, frames + [b.request_frame or b.conn.first_frame for b in bad_subs]
                    + [s.request_last_frame for s in bad_stores[:10]], [op.message_id]))
            # counts
            if f is not None and f.completed is not None and (subs or op.service == "C-GET"):
                ok = sum(1 for s in stores if s.final is not None
                         and s.final.info.category in ("success", "warning"))
                reported = (f.completed or 0) + (f.warning or 0)
                complete_view = not any(b.midstream for b in subs)
                if complete_view and ok != reported:
                    out.append(Finding(
                        "move-suboperation-count-mismatch", "warning",
                        f"{op.service} message {op.message_id} on {label(a)} reports "
                        f"{f.completed} completed and {f.warning or 0} warning sub-operation(s), "
                        f"but {ok} successful C-STORE(s) were seen"
                        + (f" on sub-association(s) {', '.join(str(b.id) for b in subs)}"
                           if subs else "") + ".",
                        "Either the capture missed some C-STOREs (another interface or path), or "
                        "the SCP's counts are wrong; compare with what the destination received.",
                        a.id, frames, [op.message_id],
                        details={"reported": reported, "seen": ok}))
            # final response before the stores ran
            if f is not None and stores:
                last = max((s.final.time if s.final else s.request_end_time) for s in stores)
                if f.time < last - 1e-6:
                    late = [s for s in stores if (s.final.time if s.final else s.request_end_time) > f.time]
                    out.append(Finding(
                        "move-final-before-suboperations", "error",
                        f"The final {op.service} response to message {op.message_id} on {label(a)} "
                        f"(frame {completing_frame(f)}) came before {len(late)} of its C-STORE "
                        "sub-operation(s) had finished.",
                        "A nonconforming Q/R SCP: the final response must follow the "
                        "sub-operations (PS3.4 C.4.2.3). Clients that release when they get it "
                        "lose objects; report this to the SCP's vendor.",
                        a.id, frames + [s.request_last_frame for s in late[:10]], [op.message_id]))
    return out


RULES = [retrieve]
