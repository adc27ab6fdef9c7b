"""Is this TCP connection DICOM?  (sans-I/O)

A connection on a configured port is.  Any other is looked at for a while
(:data:`HEURISTIC_LIMIT` bytes): a stream that begins with a plausible
A-ASSOCIATE-RQ (PS3.8 9.3.2), or, for a connection the capture joined
mid-stream, one whose bytes parse as :data:`PDATA_RUN` consecutive P-DATA-TF
PDUs (PS3.8 9.3.5).  While undecided, the stream events are kept (as copies:
the capture's buffers are reused) and handed over once the verdict is DICOM.
"""

from __future__ import annotations

from dicomtrace.tcp import Connection, StreamData, StreamGap
from dicomtrace.ul.pdu import A_ASSOCIATE_RQ, P_DATA_TF, Violation
from dicomtrace.ul.stream import PduHeader, PduStream, SyncLost, plausible_header

HEURISTIC_LIMIT = 512 << 10  # bytes looked at before deciding a connection is not DICOM
PDATA_RUN = 3  # consecutive P-DATA-TF PDUs that make a mid-stream connection DICOM
HEAD = 64  # bytes of each direction's start kept for the A-ASSOCIATE-RQ test

# verdicts: how a connection was found to be DICOM (Association.detected_by)
BY_PORT, BY_REQUEST, BY_PDATA = "port", "associate-request", "p-data"


def on_dicom_port(conn: Connection, ports: frozenset[int]) -> bool:
    return conn.server_port in ports or conn.client_port in ports


class Detector:
    """Looks at one connection's first events until it is known to be DICOM or not.

    :meth:`feed` returns :data:`BY_REQUEST` / :data:`BY_PDATA` when it is DICOM
    (then :attr:`events` holds everything fed so far, to replay), False when it is
    not, None while undecided; :meth:`at_close` decides when the connection ends first."""

    def __init__(self):
        self.events: list[StreamData | StreamGap] = []
        self.bytes = 0
        self.heads = [bytearray(), bytearray()]
        self.trials: list[PduStream | None] = [None, None]
        self.pdata_run = [0, 0]

    def feed(self, ev: StreamData | StreamGap) -> str | bool | None:
        if type(ev) is StreamGap:
            self.events.append(ev)
            return None
        self.events.append(ev.copied())
        verdict = self._judge(ev)
        if verdict is None and self.bytes > HEURISTIC_LIMIT:
            verdict = False
        return verdict

    def _judge(self, ev: StreamData) -> str | bool | None:
        d = ev.direction
        self.bytes += ev.size
        if ev.conn.half[d].isn is not None:  # the stream's start was captured
            head = self.heads[d]
            if len(head) < HEAD and ev.offset == len(head):
                for piece in ev.pieces:
                    head += piece[:HEAD - len(head)]
            if not head:
                return None
            if head[0] != A_ASSOCIATE_RQ:
                # an acceptor's A-ASSOCIATE-AC/RJ may arrive in the other direction first only if
                # the request was lost; a stream that starts with anything else is not DICOM
                return False if self.heads[1 - d] or d == 0 or head[0] not in (2, 3) else None
            ok = plausible_header(head, 0, strict=True)
            if ok is None:
                return None
            return BY_REQUEST if ok else False
        trial = self.trials[d]
        if trial is None:
            trial = self.trials[d] = PduStream(synced=False)
        for x in trial.feed_pieces(ev.pieces, ev.frames, ev.times):
            tx = type(x)
            if tx is PduHeader:
                if x.pdu_type == P_DATA_TF:
                    self.pdata_run[d] += 1
                    if self.pdata_run[d] >= PDATA_RUN:
                        return BY_PDATA
                else:
                    self.pdata_run[d] = 0
            elif tx is Violation or tx is SyncLost:
                self.pdata_run[d] = 0
        return None

    def at_close(self) -> str | bool:
        """The connection ended undecided: DICOM if a direction began with a plausible
        (possibly cut off) A-ASSOCIATE-RQ."""
        for head in self.heads:
            if head and head[0] == A_ASSOCIATE_RQ and plausible_header(head, 0, strict=True) is not False:
                return BY_REQUEST
        return False
