"""DIMSE operations: requests paired with their responses (PS3.7 9.1, 10.1; annex C).

:class:`OperationPairing` follows one association.  A request is registered with a
handle of the caller's choosing (the model's operation); responses find it by the
Message ID Being Responded To, pending responses (PS3.7 C.4: 0xFF00, 0xFF01) leave it
outstanding, a final one ends it; a C-CANCEL-RQ names the request it cancels (PS3.7
9.3.2.3).  C-STOREs the acceptor sends while a C-GET is outstanding are its
sub-operations (PS3.4 C.4.3: the same association).  The pairing does not know what
a handle is, so this layer stays below the model.
"""

from __future__ import annotations

from typing import Generic, TypeVar

H = TypeVar("H")

PENDING = (0xFF00, 0xFF01)
REQUESTOR, ACCEPTOR = "requestor", "acceptor"


def other(side: str) -> str:
    return ACCEPTOR if side == REQUESTOR else REQUESTOR


class OperationPairing(Generic[H]):
    """Outstanding requests of one association, by (sender, message ID)."""

    def __init__(self):
        # requests awaiting their final response; a list per (sender, message ID) because a
        # nonconforming sender may reuse an ID while it is outstanding (answered in order)
        self._outstanding: dict[tuple[str, int], list[tuple[str, H]]] = {}
        self._by_id: dict[tuple[str, int], H] = {}
        self._answered: set[int] = set()  # id() of handles that had their final response

    def request(self, sender: str, message_id: int, service: str, handle: H) -> tuple[H | None, H | None]:
        """A request began.  Returns (the outstanding request that already uses this
        message ID, or None; the C-GET this C-STORE is a sub-operation of, or None)."""
        key = (sender, message_id)
        waiting = self._outstanding.setdefault(key, [])
        reused = waiting[0][1] if waiting else None
        waiting.append((service, handle))
        self._by_id[key] = handle
        parent = None
        if service == "C-STORE" and sender == ACCEPTOR:
            parent = next((h for (s, _mid), hs in self._outstanding.items() if s == REQUESTOR
                           for svc, h in hs if svc == "C-GET"), None)
        return reused, parent

    def request_of(self, sender: str, message_id: int) -> H | None:
        """The latest request with this message ID (its data set is complete now)."""
        return self._by_id.get((sender, message_id))

    def cancelled(self, sender: str, message_id: int | None) -> H | None:
        """A C-CANCEL-RQ from ``sender`` for its request ``message_id``."""
        hs = self._outstanding.get((sender, message_id))
        return hs[0][1] if hs else None

    def response(self, responder: str, message_id: int | None, status: int) -> H | None:
        """A response from ``responder``; None when it answers no known request (or one
        already answered, unless it is pending)."""
        key = (other(responder), message_id)
        hs = self._outstanding.get(key)
        handle = hs[0][1] if hs else None
        if handle is None:
            done = self._by_id.get(key)
            if done is None or (id(done) in self._answered and status not in PENDING):
                return None
            handle = done
        if status not in PENDING:
            self._answered.add(id(handle))
            if hs:
                hs.pop(0)
                if not hs:
                    del self._outstanding[key]
        return handle

    def outstanding(self) -> list[tuple[str, H]]:
        """(service, handle) of every request still awaiting its final response."""
        return [x for hs in self._outstanding.values() for x in hs]
