"""One TLS connection followed from outside: both directions' records, the handshake
(RFC 8446 4 / RFC 5246 7.4), alerts, and, when the key log has its secrets, decryption.

:class:`TlsConnection` is fed the TCP stream events of one connection and returns the
application data as (direction, plaintext, frame, time) and (direction, lost size, frame,
time) items; what it learns is kept in a :class:`TlsSession`, the record the later stages
(findings, output) read.  Sans-I/O: no file or socket is touched.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from dicomtrace.tls.handshake import (
    CERTIFICATE, CERTIFICATE_REQUEST, CLIENT_HELLO, CLIENT_KEY_EXCHANGE, FINISHED, KEY_UPDATE,
    SERVER_HELLO, SERVER_HELLO_DONE, Alert, CertificateInfo, HandshakeReader, Hello, parse_alert,
    parse_certificate, parse_client_hello, parse_server_hello,
)
from dicomtrace.tls.keylog import KeyLog
from dicomtrace.tls.names import (
    ALERT, APPLICATION_DATA, CHANGE_CIPHER_SPEC, HANDSHAKE, suite_name, version_name,
)
from dicomtrace.tls.records import NotTls, RecordGap, RecordResync, RecordStream, TlsRecord

if TYPE_CHECKING:
    from dicomtrace.tls.decrypt import DirectionKeys
# tls.decrypt (and with it the cryptography package) is imported where keys are made: a
# capture without a key log, or without TLS, does not load it

SIDES = ("client", "server")
ENCRYPTED_ALERT_13 = 2 + 1 + 16  # an alert in a TLS 1.3 record: level, description, type, tag


@dataclass
class TlsGap:
    """Bytes of one direction never captured, and what that did to decryption."""

    sender: str
    frame: int
    offset: int
    size: int
    records_lost: int | None  # None: unknown (the framing was lost and not found again)
    resumed: bool | None  # decryption went on after it (None: nothing was being decrypted)
    note: str = ""


@dataclass(eq=False)
class TlsSession:
    """What the capture shows of one TLS connection (contract: ``tls_connections`` items)."""

    conn: object  # tcp.Connection
    detected_by: str  # "client-hello" (at stream start) or "records" (seen mid-stream)
    client_hello: Hello | None = None
    server_hello: Hello | None = None
    hello_retry: bool = False
    version: int | None = None
    cipher_suite: int | None = None
    alpn: str | None = None
    certificates: list[CertificateInfo] = field(default_factory=list)
    certificates_encrypted: bool = False  # TLS 1.3 without keys: the chains were not seen
    client_certificate_requested: bool | None = None
    client_certificate_sent: bool | None = None
    alerts: list[Alert] = field(default_factory=list)
    finished: list = field(default_factory=lambda: [None, None])  # frame of each side's Finished
    ccs: list = field(default_factory=lambda: [None, None])  # TLS 1.2 ChangeCipherSpec frames
    records: list = field(default_factory=lambda: [0, 0])
    record_bytes: list = field(default_factory=lambda: [0, 0])
    encrypted_records: list = field(default_factory=lambda: [0, 0])  # protected records
    app_records: list = field(default_factory=lambda: [0, 0])  # protected records after the handshake
    plaintext_bytes: list = field(default_factory=lambda: [0, 0])  # application data decrypted
    first_frame: int = 0
    hello_frames: list = field(default_factory=lambda: [None, None])
    keys: str = "none"  # "none" (no key log), "missing" (not in the key log), "found", "unsupported"
    decrypted: bool = False
    decrypt_failures: list = field(default_factory=lambda: [0, 0])
    gaps: list[TlsGap] = field(default_factory=list)
    not_tls: dict = field(default_factory=dict)  # sender -> first bytes that were not a record
    handshake_problems: list[str] = field(default_factory=list)
    association: int | None = None  # id of the DICOM association inside (set by the output)

    @property
    def sni(self) -> str | None:
        return self.client_hello.sni if self.client_hello else None

    @property
    def version_name(self) -> str | None:
        return version_name(self.version)

    @property
    def cipher_suite_name(self) -> str | None:
        return suite_name(self.cipher_suite) if self.cipher_suite is not None else None

    @property
    def offered_versions(self) -> list[int]:
        ch = self.client_hello
        if ch is None:
            return []
        return ch.versions or [ch.legacy_version]

    @property
    def handshake_complete(self) -> bool | None:
        """True when both sides finished the handshake, False when it visibly did not, None
        when the capture cannot tell (TLS 1.3 without keys, mid-stream)."""
        # a fatal alert before both sides exchanged application data ended the handshake (in
        # TLS 1.3 the server judges the client's certificate after both Finished messages)
        if any(a.level == "fatal" or a.guessed for a in self.alerts) and not (
                self.plaintext_bytes[0] and self.plaintext_bytes[1]):
            return False
        if self.finished[0] is not None and self.finished[1] is not None:
            return True
        if self.version == 0x0303 and self.ccs[0] is not None and self.ccs[1] is not None \
                and self.app_records[0] and self.app_records[1]:
            return True
        if any(a.level == "fatal" or a.description not in ("close_notify", "user_canceled")
               for a in self.alerts):
            return False
        if self.version == 0x0304 and not self.decrypted and self.app_records[0] and self.app_records[1]:
            return True
        if self.server_hello is None or (self.version == 0x0303 and self.ccs[1] is None):
            return False if self.client_hello is not None else None
        return None


class TlsConnection:
    """Follows both directions of one TLS connection."""

    def __init__(self, conn, detected_by: str, keylog: KeyLog | None, synced=(True, True)):
        self.s = TlsSession(conn, detected_by, keys="none" if keylog is None else "missing")
        self.keylog = keylog
        self.rec = [RecordStream(synced[0]), RecordStream(synced[1])]
        self.hs = [HandshakeReader(), HandshakeReader()]
        self.protected = [False, False]  # this direction's records are now encrypted
        self.keys: list[DirectionKeys | None] = [None, None]
        self.pending12: tuple | None = None  # TLS 1.2 keys, installed at each ChangeCipherSpec
        self.secrets13: dict[str, bytes] = {}
        self.app_secret: list[bytes | None] = [None, None]
        self.lost = [0, 0]  # bytes lost with the framing, waiting for the next record
        self.out: list = []

    # -- TCP stream events ----------------------------------------------------
    def data(self, d: int, offset: int, pieces, frames, times) -> list:
        self.out = []
        self._records(d, self.rec[d].feed(offset, pieces, frames, times))
        return self.out

    def gap(self, d: int, offset: int, size: int, frame: int, t: float) -> list:
        self.out = []
        self._records(d, self.rec[d].gap(offset, size, frame, t))
        return self.out

    # -- records --------------------------------------------------------------
    def _records(self, d: int, events) -> None:
        s = self.s
        for ev in events:
            t = type(ev)
            if t is TlsRecord:
                s.records[d] += 1
                s.record_bytes[d] += 5 + len(ev.fragment)
                if not s.first_frame:
                    s.first_frame = ev.first_frame
                self._record(d, ev)
            elif t is RecordGap:
                self._gap(d, ev)
            elif t is RecordResync:
                self.lost[d] += ev.skipped  # the tail of a lost record, before the next header
            elif t is NotTls:
                s.not_tls.setdefault(SIDES[d], (ev.head, ev.frame))

    def _gap(self, d: int, ev: RecordGap) -> None:
        s = self.s
        keys = self.keys[d]
        decrypting = keys is not None and self.protected[d]
        if not self.protected[d]:
            self.hs[d].lost()
        if not ev.framing_lost:
            if decrypting:
                keys.skip(1)
                self._lost_plain(d, self._plain_estimate(keys, ev.record[1]), ev.frame, ev.time)
            s.gaps.append(TlsGap(SIDES[d], ev.frame, ev.offset, ev.size, 1, True if decrypting else None,
                                 "one record lost; decryption resumed at the next record, whose header "
                                 "is where the lost one's length says" if decrypting else
                                 "one record lost; the next record header is where its length says"))
            return
        self.lost[d] += ev.size
        s.gaps.append(TlsGap(SIDES[d], ev.frame, ev.offset, ev.size, None, None if not decrypting else False,
                             "a record header was lost: record framing lost"))

    @staticmethod
    def _overhead(keys: DirectionKeys) -> int:
        """Bytes a record's protection adds to its plaintext: exact for AEAD (tag, explicit
        nonce, TLS 1.3's content type), for CBC the IV, the MAC and an average padding."""
        from dicomtrace.tls.decrypt import AEAD, MAC_LEN

        if keys.version == 0x0304:
            return 17
        if keys.cipher in AEAD:
            return 16 + AEAD[keys.cipher][2]
        return 16 + MAC_LEN.get(keys.mac_hash, 20) + 8

    def _plain_estimate(self, keys: DirectionKeys, length: int) -> int:
        return max(0, length - self._overhead(keys))

    def _lost_plain(self, d: int, size: int, frame: int, t: float) -> None:
        if size > 0:
            self.out.append((d, None, size, frame, t))

    def _record(self, d: int, rec: TlsRecord) -> None:
        s = self.s
        ct = rec.content_type
        v13 = s.version == 0x0304
        if ct == CHANGE_CIPHER_SPEC:
            # TLS 1.3 sends a dummy one for middleboxes (RFC 8446 D.4), also after a HelloRetryRequest
            if s.version is not None and not v13:
                s.ccs[d] = rec.frame
                self.protected[d] = True
                if self.pending12 is not None:
                    self.keys[d] = self.pending12[d]
            return
        if not self.protected[d] or (v13 and ct != APPLICATION_DATA):
            if ct == HANDSHAKE:
                for mtype, body in self.hs[d].feed(rec.fragment):
                    self._handshake(d, mtype, body, rec)
            elif ct == ALERT:
                a = parse_alert(rec.fragment, SIDES[d], rec.frame, rec.time)
                if a is not None:
                    s.alerts.append(a)
            elif ct == APPLICATION_DATA and not self.protected[d]:
                s.handshake_problems.append(f"application data from the {SIDES[d]} before the handshake "
                                            f"(frame {rec.frame})")
            return
        # a protected record
        s.encrypted_records[d] += 1
        if self._handshake_done(d):
            s.app_records[d] += 1
        keys = self.keys[d]
        if keys is None:
            if v13 and len(rec.fragment) == ENCRYPTED_ALERT_13 and not self._handshake_done(d):
                s.alerts.append(Alert(SIDES[d], None, "(encrypted alert)", rec.frame, rec.time,
                                      encrypted=True, guessed=True))
            return
        lost = self.lost[d]
        if lost:
            self.lost[d] = 0
            got = keys.resync(ct, rec.version, rec.fragment, lost)
            gap = s.gaps[-1] if s.gaps and s.gaps[-1].sender == SIDES[d] else None
            if got is None:
                if gap is not None:
                    gap.resumed = False
                    gap.note = "record framing found again, but no sequence number decrypts the next record"
                s.decrypt_failures[d] += 1
                self.keys[d] = None
                return
            n_lost, got = got
            if gap is not None:
                gap.records_lost = n_lost
                gap.resumed = True
                gap.note = f"{n_lost} record(s) lost; decryption resumed at the next record"
            est = max(0, lost - n_lost * (5 + self._overhead(keys)))
            self._lost_plain(d, est, rec.frame, rec.time)
        else:
            got = keys.decrypt(ct, rec.version, rec.fragment)
            if got is None:
                s.decrypt_failures[d] += 1
                self._lost_plain(d, self._plain_estimate(keys, len(rec.fragment)), rec.frame, rec.time)
                return
        inner, plain = got
        s.decrypted = True
        if inner == APPLICATION_DATA:
            if plain:
                s.plaintext_bytes[d] += len(plain)
                self.out.append((d, plain, len(plain), rec.frame, rec.time))
        elif inner == HANDSHAKE:
            for mtype, body in self.hs[d].feed(plain):
                self._handshake(d, mtype, body, rec)
        elif inner == ALERT:
            a = parse_alert(plain, SIDES[d], rec.frame, rec.time, encrypted=True)
            if a is not None:
                s.alerts.append(a)

    def _handshake_done(self, d: int) -> bool:
        s = self.s
        if s.finished[d] is not None:
            return True
        if s.version == 0x0304:
            # without keys: the client's first protected record is its Finished, the server's
            # handshake flight ends before the client's Finished
            return (s.encrypted_records[0] > 1) if d == 0 else s.encrypted_records[0] > 0
        return s.ccs[d] is not None and s.encrypted_records[d] > 1

    # -- handshake messages -----------------------------------------------------
    def _handshake(self, d: int, mtype: int, body: bytes, rec: TlsRecord) -> None:
        s = self.s
        sender = SIDES[d]
        if mtype == CLIENT_HELLO and d == 0:
            s.client_hello = parse_client_hello(body)
            s.hello_frames[0] = rec.frame
            if s.client_hello.problem:
                s.handshake_problems.append(s.client_hello.problem)
        elif mtype == SERVER_HELLO and d == 1:
            sh = parse_server_hello(body)
            if sh.problem:
                s.handshake_problems.append(sh.problem)
            if sh.hello_retry:
                s.hello_retry = True
                return
            s.server_hello = sh
            s.hello_frames[1] = rec.frame
            s.version = sh.versions[0] if sh.versions else sh.legacy_version
            s.cipher_suite = sh.cipher_suites[0] if sh.cipher_suites else None
            s.alpn = sh.alpn[0] if sh.alpn else None
            self._keys_at_server_hello()
        elif mtype == CERTIFICATE:
            chain, problem = parse_certificate(body, sender, s.version == 0x0304)
            s.certificates.extend(chain)
            if problem:
                s.handshake_problems.append(f"{sender}: {problem}")
            if d == 0:
                s.client_certificate_sent = bool(chain)
        elif mtype == CERTIFICATE_REQUEST and d == 1:
            s.client_certificate_requested = True
            if s.client_certificate_sent is None:
                s.client_certificate_sent = False
        elif mtype == SERVER_HELLO_DONE and d == 1:
            if s.client_certificate_requested is None:
                s.client_certificate_requested = False
        elif mtype == CLIENT_KEY_EXCHANGE and d == 0:
            if s.client_certificate_requested and s.client_certificate_sent is None:
                s.client_certificate_sent = False
        elif mtype == FINISHED:
            s.finished[d] = rec.frame
            if s.version == 0x0304:
                if d == 1 and s.client_certificate_requested is None:
                    s.client_certificate_requested = False
                secret = self.app_secret[d]
                if secret is not None:
                    from dicomtrace.tls.decrypt import tls13_keys

                    self.keys[d] = tls13_keys(secret, s.cipher_suite)
                elif self.keys[d] is not None:
                    self.keys[d] = None
                    s.keys = "incomplete"
        elif mtype == KEY_UPDATE and s.version == 0x0304:
            secret = self.app_secret[d]
            if secret is not None:
                from dicomtrace.tls.decrypt import tls13_keys, tls13_next_secret

                self.app_secret[d] = tls13_next_secret(secret, s.cipher_suite)
                self.keys[d] = tls13_keys(self.app_secret[d], s.cipher_suite)

    def _keys_at_server_hello(self) -> None:
        s = self.s
        if s.version == 0x0304:
            self.protected = [True, True]
            s.certificates_encrypted = True
            s.client_certificate_requested = None
        kl = self.keylog
        if kl is None or s.client_hello is None or s.cipher_suite is None:
            return
        from dicomtrace.tls.decrypt import supported, tls12_keys, tls13_keys

        cr = s.client_hello.random
        if not supported(s.cipher_suite, s.version or 0):
            if kl.has(cr):
                s.keys = "unsupported"
            return
        if s.version == 0x0304:
            sec = kl.tls13_secrets(cr)
            if "CLIENT_HANDSHAKE_TRAFFIC_SECRET" in sec and "SERVER_HANDSHAKE_TRAFFIC_SECRET" in sec:
                s.keys = "found"
                s.certificates_encrypted = False
                self.keys = [tls13_keys(sec["CLIENT_HANDSHAKE_TRAFFIC_SECRET"], s.cipher_suite),
                             tls13_keys(sec["SERVER_HANDSHAKE_TRAFFIC_SECRET"], s.cipher_suite)]
                self.app_secret = [sec.get("CLIENT_TRAFFIC_SECRET_0"), sec.get("SERVER_TRAFFIC_SECRET_0")]
            elif "CLIENT_TRAFFIC_SECRET_0" in sec or "SERVER_TRAFFIC_SECRET_0" in sec:
                s.keys = "incomplete"
            return
        master = kl.master_secret(cr)
        if master is None:
            return
        sh = s.server_hello
        etm = sh.encrypt_then_mac and s.client_hello.encrypt_then_mac
        self.pending12 = tls12_keys(master, cr, sh.random, s.cipher_suite, etm)
        if self.pending12 is not None:
            s.keys = "found"
