"""Links between associations: a C-MOVE and the sub-associations it caused.

A Q/R SCP performs a C-MOVE by opening a new association to the move
destination (calling AE = the SCP's AE title, called AE = the Move
Destination) and sending C-STOREs whose commands carry the Move Originator AE
Title and Message ID (PS3.4 C.4.2, PS3.7 9.3.1.1).
"""

from __future__ import annotations

from dicomtrace.model.association import Association

SLACK = 1.0  # s: a sub-association may be opened just before the C-MOVE response is parsed


def link_operations(assocs: list[Association]) -> None:
    for a in assocs:
        for op in a.operations:
            if op.service != "C-MOVE":
                continue
            end = op.final.time if op.final else a.end_time
            for b in assocs:
                if b is a or b.id in op.sub_associations:
                    continue
                by_originator = any(
                    s.move_originator_id == op.message_id
                    and (s.move_originator_ae or "").strip() == (a.calling_ae or "").strip()
                    for s in b.operations if s.service == "C-STORE")
                by_titles = (op.move_destination is not None
                             and (b.called_ae or "").strip() == op.move_destination.strip()
                             and (b.calling_ae or "").strip() == (a.called_ae or "").strip()
                             and op.request_time - SLACK <= b.start_time <= end + SLACK)
                if by_originator or by_titles:
                    op.sub_associations.append(b.id)
                    if b.move_parent is None:
                        b.move_parent = (a.id, op.message_id)
