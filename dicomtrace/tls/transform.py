"""The TLS stream transform: between TCP reassembly and the Upper Layer.

:class:`TlsLayer` is fed TCP events and returns TCP events: connections that do not carry
TLS pass through untouched; for a TLS connection the ciphertext stream events are replaced by
plaintext ones (``StreamData`` / ``StreamGap`` of the decrypted application data, each piece
with the frame and time of the record that completed it) when the key log has its secrets, and
by nothing when it has not (the connection is then described by its :class:`TlsSession`).

Detection: a connection whose stream starts with a ClientHello record is TLS on any port (a
stream that offers only HTTP in ALPN, on a port that is not a DICOM or DICOM-TLS port, is left
alone); seen mid-stream, a connection on a DICOM or TLS port whose bytes parse as
``MIDSTREAM_RECORDS`` consecutive records is TLS.
"""

from __future__ import annotations

from dataclasses import dataclass

from dicomtrace.tcp import ConnectionClosed, ConnectionOpened, StreamData, StreamGap
from dicomtrace.tls.keylog import KeyLog
from dicomtrace.tls.records import RecordStream, TlsRecord, looks_like_client_hello, plausible_header
from dicomtrace.tls.session import TlsConnection, TlsSession

TLS_PORTS = frozenset({2762})  # DICOM over TLS (PS3.15 B.1, IANA "dicom-tls")
MIDSTREAM_RECORDS = 3
MIDSTREAM_LIMIT = 64 << 10  # bytes looked at before deciding a mid-stream connection is not TLS
HTTP_ALPN = {"h2", "http/1.1", "http/1.0", "h3", "spdy/3", "acme-tls/1"}


@dataclass
class PlainOnTlsPort:
    """A connection to a TLS port that carried something other than TLS."""

    conn: object
    head: bytes  # the client's first bytes
    server_head: bytes  # the server's first bytes (a TLS alert, or nothing)
    frame: int


class _Pending:
    __slots__ = ("events", "heads", "trials", "records", "bytes")

    def __init__(self):
        self.events: list = []
        self.heads = [bytearray(), bytearray()]
        self.trials = [None, None]
        self.records = [0, 0]
        self.bytes = 0


class TlsLayer:
    """Stream transform for TLS (a stage between ``tcp`` and ``ul``)."""

    def __init__(self, dicom_ports=(), tls_ports=TLS_PORTS, keylog: KeyLog | None = None,
                 heuristic: bool = True):
        self.dicom_ports = frozenset(dicom_ports)
        self.tls_ports = frozenset(tls_ports)
        self.keylog = keylog
        self.heuristic = heuristic
        self.sessions: list[TlsSession] = []
        self.plain_on_tls_port: list[PlainOnTlsPort] = []
        self._tls: dict[int, TlsConnection] = {}
        self._plain: set[int] = set()
        self._pending: dict[int, _Pending] = {}
        self._plain_offset: dict[tuple[int, int], int] = {}
        self._watch: dict[int, list] = {}  # plain connections on a TLS port: [client head, server head, frame]

    # -- the transform ------------------------------------------------------
    def feed(self, events) -> list:
        out: list = []
        for ev in events:
            t = type(ev)
            if t is StreamData or t is StreamGap:
                cid = ev.conn.id
                tc = self._tls.get(cid)
                if tc is not None:
                    self._convert(tc, ev, out)
                elif cid in self._plain:
                    if cid in self._watch:
                        self._watch_plain(ev)
                    out.append(ev)
                else:
                    self._undecided(ev, out)
            elif t is ConnectionClosed:
                cid = ev.conn.id
                if cid in self._pending:
                    self._decide(ev.conn, None, out)
                w = self._watch.pop(cid, None)
                if w is not None:
                    self.plain_on_tls_port.append(PlainOnTlsPort(ev.conn, bytes(w[0]), bytes(w[1]), w[2]))
                out.append(ev)
            else:
                if t is ConnectionOpened:
                    self._plain.discard(ev.conn.id)
                out.append(ev)
        return out

    def finish(self) -> list[TlsSession]:
        return sorted(self.sessions, key=lambda s: s.conn.id)

    # -- deciding -------------------------------------------------------------
    def _ports(self, conn) -> tuple[bool, bool]:
        ports = (conn.server_port, conn.client_port)
        return (any(p in self.dicom_ports for p in ports), any(p in self.tls_ports for p in ports))

    def _undecided(self, ev, out: list) -> None:
        cid = ev.conn.id
        p = self._pending.get(cid)
        if p is None:
            p = self._pending[cid] = _Pending()
        if type(ev) is StreamGap:
            p.events.append(ev)
            return
        cp = StreamData(ev.conn, ev.direction, ev.offset, bytes(ev.pieces[0]), ev.frames[0], ev.times[0])
        for piece, frame, t in zip(ev.pieces[1:], ev.frames[1:], ev.times[1:]):
            cp.add(bytes(piece), frame, t)
        p.events.append(cp)
        p.bytes += ev.size
        verdict = self._judge(p, ev)
        if verdict is None and p.bytes > MIDSTREAM_LIMIT:
            verdict = False
        if verdict is not None:
            self._decide(ev.conn, verdict, out)

    def _judge(self, p: _Pending, ev):
        """'client-hello' / 'records' when TLS, False when not, None: wait for more bytes."""
        d = ev.direction
        conn = ev.conn
        if conn.half[d].isn is not None:  # the capture saw this direction start
            head = p.heads[d]
            if ev.offset == len(head) and len(head) < 64:
                for piece in ev.pieces:
                    head += piece[:64 - len(head)]
            if not head:
                return None
            ok = looks_like_client_hello(head)
            if ok is None:
                return None
            if ok and d == 0:
                return "client-hello"
            if ok:  # a ClientHello from the TCP server: still a TLS stream
                return "client-hello"
            if d == 1 and plausible_header(head) and not p.heads[0]:
                return None  # the server's bytes came first (e.g. a TLS alert): wait for the client
            return False
        dicom, tls = self._ports(conn)
        if not (dicom or tls):
            return False
        trial = p.trials[d]
        if trial is None:
            trial = p.trials[d] = RecordStream(synced=False)
        for x in trial.feed(ev.offset, ev.pieces, ev.frames, ev.times):
            if type(x) is TlsRecord:
                p.records[d] += 1
                if p.records[d] >= MIDSTREAM_RECORDS:
                    return "records"
        return None

    def _decide(self, conn, verdict, out: list) -> None:
        p = self._pending.pop(conn.id)
        if verdict and verdict != "records":
            tc = TlsConnection(conn, verdict, self.keylog)
            ch = tc.s
            first = next((e for e in p.events if type(e) is StreamData and e.direction == 0), None)
            # HTTPS and the like on a port that is not DICOM's are not ours to report
            if not any(self._ports(conn)) and first is not None:
                from dicomtrace.tls.handshake import HandshakeReader, parse_client_hello

                for mtype, body in HandshakeReader().feed(first.data[5:]):
                    if mtype == 1:
                        alpn = set(parse_client_hello(body).alpn)
                        if alpn and alpn <= HTTP_ALPN:
                            verdict = False
                        break
            if verdict:
                self._tls[conn.id] = tc
                self.sessions.append(ch)
        elif verdict == "records":
            synced = tuple(False for _ in (0, 1))
            tc = TlsConnection(conn, "records", self.keylog, synced)
            self._tls[conn.id] = tc
            self.sessions.append(tc.s)
            verdict = True
        if not verdict:
            self._plain.add(conn.id)
            if self._ports(conn)[1]:
                w = self._watch[conn.id] = [bytearray(), bytearray(), conn.first_frame]
                for e in p.events:
                    self._watch_plain(e)
            out.extend(p.events)
            return
        tc = self._tls[conn.id]
        for e in p.events:
            self._convert(tc, e, out)

    def _watch_plain(self, ev) -> None:
        w = self._watch[ev.conn.id]
        if type(ev) is StreamData and ev.offset < 16:
            head = w[ev.direction]
            for piece in ev.pieces:
                head += piece[:16 - len(head)]

    # -- plaintext events -----------------------------------------------------
    def _convert(self, tc: TlsConnection, ev, out: list) -> None:
        d = ev.direction
        if type(ev) is StreamData:
            items = tc.data(d, ev.offset, ev.pieces, ev.frames, ev.times)
        else:
            items = tc.gap(d, ev.offset, ev.size, ev.frame, ev.time)
        if not items:
            return
        conn = ev.conn
        cur = None
        for dd, plain, size, frame, t in items:
            key = (conn.id, dd)
            off = self._plain_offset.get(key, 0)
            if plain is None:
                cur = None
                out.append(StreamGap(conn, dd, off, size, frame, t))
            elif cur is not None and cur.direction == dd:
                cur.add(plain, frame, t)
            else:
                cur = StreamData(conn, dd, off, plain, frame, t)
                out.append(cur)
            self._plain_offset[key] = off + size
