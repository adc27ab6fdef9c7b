"""The TLS stream transform: between TCP reassembly and the Upper Layer.

:class:`TlsTransform` is the stage of one connection (both directions): ``feed(ev)`` takes its
TCP stream events (``StreamData`` / ``StreamGap``) in order and returns the stream events the
Upper Layer is to parse: the same events while the connection is not TLS; for a TLS
connection, plaintext ``StreamData`` / ``StreamGap`` of the decrypted application data (each
piece with the frame and time of the record that completed it) when the key log has its
secrets, and nothing when it has not (the connection is then described by its
:class:`TlsSession`).  ``finish()`` at the connection's end.  It holds a connection's first
events back until the first bytes tell whether it is TLS.

:class:`TlsLayer` makes one per connection: ``factory(conn, first event)`` is the engine's
stream-transform factory; ``feed(tcp events)`` runs them over a list of TCP events (the same
stage for a loop without that seam); ``finish()`` gives the sessions.

Detection: a connection whose stream starts with a ClientHello record is TLS on any port (a
stream that offers only HTTP in ALPN, on a port that is not a DICOM or DICOM-TLS port, is left
alone); seen mid-stream, a connection on a DICOM or TLS port whose bytes parse as
``MIDSTREAM_RECORDS`` consecutive records is TLS.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from dicomtrace.tcp import ConnectionClosed, StreamData, StreamGap
from dicomtrace.tls.records import RecordStream, TlsRecord, looks_like_client_hello, plausible_header

if TYPE_CHECKING:
    from dicomtrace.tls.keylog import KeyLog
    from dicomtrace.tls.session import TlsConnection, TlsSession
# the handshake and the sessions (and with them the cipher suite tables) are imported when a
# connection turns out to be TLS: a capture without TLS loads only the detection

TLS_PORTS = frozenset({2762})  # DICOM over TLS (PS3.15 B.1, IANA "dicom-tls")
MIDSTREAM_RECORDS = 3
MIDSTREAM_LIMIT = 64 << 10  # bytes looked at before deciding a mid-stream connection is not TLS
HTTP_ALPN = {"h2", "http/1.1", "http/1.0", "h3", "spdy/3", "acme-tls/1"}
WATCH_HEAD = 16  # first bytes kept of a plain connection to a TLS port


@dataclass
class PlainOnTlsPort:
    """A connection to a TLS port that carried something other than TLS."""

    conn: object
    head: bytes  # the client's first bytes
    server_head: bytes  # the server's first bytes (a TLS alert, or nothing)
    frame: int


class TlsTransform:
    """The stream transform of one connection (see the module docstring)."""

    def __init__(self, layer: "TlsLayer", conn):
        self.layer = layer
        self.conn = conn
        self.state = "undecided"  # "undecided", "tls", "plain"
        self.held: list = []
        self.heads = [bytearray(), bytearray()]
        self.trials: list[RecordStream | None] = [None, None]
        self.records = [0, 0]
        self.bytes = 0
        self.tc: TlsConnection | None = None
        self.offsets = [0, 0]  # plaintext stream offsets
        self.watch: list | None = None  # plain on a TLS port: [client head, server head]

    # -- the StreamTransform interface ------------------------------------------
    def feed(self, ev) -> list:
        state = self.state
        if state == "plain":
            if self.watch is not None:
                self._watch(ev)
            return [ev]
        if state == "tls":
            return self._convert(ev)
        self.held.append(ev.copied() if type(ev) is StreamData else ev)  # (buffers are reused)
        if type(ev) is StreamGap:
            return []
        self.bytes += ev.size
        verdict = self._judge(ev)
        if verdict is None and self.bytes > MIDSTREAM_LIMIT:
            verdict = False
        return [] if verdict is None else self._decide(verdict)

    def finish(self) -> list:
        out = self._decide(False) if self.state == "undecided" else []
        if self.watch is not None:
            self.layer.plain_on_tls_port.append(PlainOnTlsPort(
                self.conn, bytes(self.watch[0]), bytes(self.watch[1]), self.conn.first_frame))
            self.watch = None
        return out

    # -- deciding ---------------------------------------------------------------
    def _judge(self, ev):
        """'client-hello' / 'records' when TLS, False when not, None: wait for more bytes."""
        d = ev.direction
        conn = ev.conn
        dicom, tls = self.layer.ports(conn)
        if not (dicom or tls or self.layer.heuristic):
            return False  # --no-heuristic: TLS is looked for on the DICOM and TLS ports only
        if conn.half[d].isn is not None:  # the capture saw this direction start
            head = self.heads[d]
            if ev.offset == len(head) and len(head) < 64:
                for piece in ev.pieces:
                    head += piece[:64 - len(head)]
            if not head:
                return None
            ok = looks_like_client_hello(head)
            if ok is None:
                return None
            if ok:
                return "client-hello"
            if d == 1 and plausible_header(head) and not self.heads[0]:
                return None  # the server's bytes came first (e.g. a TLS alert): wait for the client
            return False
        if not (dicom or tls):
            return False
        trial = self.trials[d]
        if trial is None:
            trial = self.trials[d] = RecordStream(synced=False)
        for x in trial.feed(ev.offset, ev.pieces, ev.frames, ev.times):
            if type(x) is TlsRecord:
                self.records[d] += 1
                if self.records[d] >= MIDSTREAM_RECORDS:
                    return "records"
        return None

    def _not_ours(self) -> bool:
        """HTTPS and the like on a port that is not DICOM's are not ours to report."""
        if any(self.layer.ports(self.conn)):
            return False
        first = next((e for e in self.held if type(e) is StreamData and e.direction == 0), None)
        if first is None:
            return False
        from dicomtrace.tls.handshake import CLIENT_HELLO, HandshakeReader, parse_client_hello

        for mtype, body in HandshakeReader().feed(first.data[5:]):
            if mtype == CLIENT_HELLO:
                alpn = set(parse_client_hello(body).alpn)
                return bool(alpn) and alpn <= HTTP_ALPN
        return False

    def _decide(self, verdict) -> list:
        held, self.held = self.held, []
        if verdict and verdict != "records" and self._not_ours():
            verdict = False
        if not verdict:
            self.state = "plain"
            if self.layer.ports(self.conn)[1]:
                self.watch = [bytearray(), bytearray()]
                for e in held:
                    self._watch(e)
            return held
        synced = (True, True) if verdict != "records" else (False, False)
        from dicomtrace.tls.session import TlsConnection

        self.tc = TlsConnection(self.conn, verdict, self.layer.keylog, synced)
        self.layer.sessions.append(self.tc.s)
        self.state = "tls"
        out: list = []
        for e in held:
            out.extend(self._convert(e))
        return out

    def _watch(self, ev) -> None:
        if type(ev) is StreamData and ev.offset < WATCH_HEAD:
            head = self.watch[ev.direction]
            for piece in ev.pieces:
                head += piece[:WATCH_HEAD - len(head)]

    # -- plaintext events ---------------------------------------------------------
    def _convert(self, ev) -> list:
        d = ev.direction
        tc = self.tc
        if type(ev) is StreamData:
            items = tc.data(d, ev.offset, ev.pieces, ev.frames, ev.times)
        else:
            items = tc.gap(d, ev.offset, ev.size, ev.frame, ev.time)
        out: list = []
        cur = None
        conn = self.conn
        offsets = self.offsets
        for dd, plain, size, frame, t in items:
            off = offsets[dd]
            if plain is None:
                cur = None
                out.append(StreamGap(conn, dd, off, size, frame, t))
            elif cur is not None and cur.direction == dd:
                cur.add(plain, frame, t)
            else:
                cur = StreamData(conn, dd, off, plain, frame, t)
                out.append(cur)
            offsets[dd] = off + size
        return out


class TlsLayer:
    """TLS for a whole capture: one :class:`TlsTransform` per TCP connection."""

    def __init__(self, dicom_ports=(), tls_ports=TLS_PORTS, keylog: KeyLog | None = None,
                 heuristic: bool = True):
        self.dicom_ports = frozenset(dicom_ports)
        self.tls_ports = frozenset(tls_ports)
        self.keylog = keylog
        self.heuristic = heuristic
        self.sessions: list[TlsSession] = []
        self.plain_on_tls_port: list[PlainOnTlsPort] = []
        self._stages: dict[int, TlsTransform] = {}

    @classmethod
    def from_config(cls, config) -> "TlsLayer":
        """The layer an AnalysisConfig asks for (ports, tls_ports, tls_keylog, heuristic)."""
        return cls(config.ports, config.tls_ports, config.tls_keylog, config.heuristic)

    def attach(self, analysis) -> None:
        """Record what the layer saw in the analysis: ``tls_connections``,
        ``plain_on_tls_port``, ``tls_ports`` (call after the last events were fed)."""
        analysis.tls_connections = self.finish()
        analysis.plain_on_tls_port = list(self.plain_on_tls_port)
        analysis.tls_ports = self.tls_ports

    def ports(self, conn) -> tuple[bool, bool]:
        """(on a DICOM port, on a DICOM-over-TLS port)."""
        ports = (conn.server_port, conn.client_port)
        return (any(p in self.dicom_ports for p in ports), any(p in self.tls_ports for p in ports))

    def factory(self, conn, first_event=None) -> TlsTransform:
        """The stream-transform factory: the stage of a connection at its first stream event."""
        return TlsTransform(self, conn)

    def feed(self, events) -> list:
        """TCP events in, TCP events out (each connection through its stage)."""
        out: list = []
        stages = self._stages
        for ev in events:
            t = type(ev)
            if t is StreamData or t is StreamGap:
                cid = ev.conn.id
                stage = stages.get(cid)
                if stage is None:
                    stage = stages[cid] = self.factory(ev.conn, ev)
                out.extend(stage.feed(ev))
            else:
                if t is ConnectionClosed:
                    stage = stages.pop(ev.conn.id, None)
                    if stage is not None:
                        out.extend(stage.finish())
                out.append(ev)
        return out

    def finish(self) -> list[TlsSession]:
        """The TLS sessions, in connection order (after the last events were fed)."""
        for stage in self._stages.values():
            stage.finish()
        self._stages.clear()
        return sorted(self.sessions, key=lambda s: s.conn.id)
