"""Unit tests of dicomtrace.tls: key log, record layer, handshake and decryption, fed bytes
in-process.  The TLS bytes are real: two ``ssl`` objects (client and server) talk through
memory BIOs, the client writing an NSS key log, so no socket is involved."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

import tls_lab
from dicomtrace.tls import KeyLogError, load_keylog
from dicomtrace.tls.keylog import KeyLog
from dicomtrace.tls.names import suite_weakness
from dicomtrace.tls.records import NotTls, RecordGap, RecordResync, RecordStream, TlsRecord
from dicomtrace.tls.session import TlsConnection

V12, V13 = ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3
NO_ETM = 1 << 19


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return tls_lab.make_pki(tmp_path_factory.mktemp("pki"))


class Exchange:
    """Both directions' bytes of one in-memory TLS connection, and the key log."""

    def __init__(self, pki, tmp: Path, version, ciphers=None, options=0, messages=(), client_cert=False):
        self.keylog = tmp / "keys.log"
        sctx = tls_lab.server_context(pki, version=version, ciphers=ciphers, require_client=client_cert)
        cctx = tls_lab.client_context(pki, keylog=self.keylog, version=version, ciphers=ciphers,
                                      cert=client_cert)
        sctx.options |= options
        cctx.options |= options
        cin, cout, sin, sout = (ssl.MemoryBIO() for _ in range(4))
        self.c = cctx.wrap_bio(cin, cout, server_hostname="localhost")
        self.s = sctx.wrap_bio(sin, sout, server_side=True)
        self.streams = [bytearray(), bytearray()]
        self.flights: list[tuple[int, bytes]] = []  # (direction, bytes) in the order sent
        self.bios = (cin, cout, sin, sout)
        self._handshake()
        self.sent = [bytearray(), bytearray()]
        for d, msg in messages:
            (self.c if d == 0 else self.s).write(msg)
            self.sent[d] += msg
            self._pump()
            try:
                (self.s if d == 0 else self.c).read(len(msg) + 1)
            except ssl.SSLWantReadError:
                pass
        self._pump()

    def _pump(self) -> None:
        cin, cout, sin, sout = self.bios
        for src, dst, d in ((cout, sin, 0), (sout, cin, 1)):
            data = src.read()
            if data:
                dst.write(data)
                self.streams[d] += data
                self.flights.append((d, data))

    def _handshake(self) -> None:
        done = [False, False]
        for _ in range(20):
            for i, obj in enumerate((self.c, self.s)):
                if not done[i]:
                    try:
                        obj.do_handshake()
                        done[i] = True
                    except ssl.SSLWantReadError:
                        pass
                self._pump()
            if all(done):
                return
        raise AssertionError("handshake did not finish")


def follow(ex: Exchange, keylog: KeyLog | None, chunk: int | None = None, drop=None):
    """Feed both streams to a TlsConnection (in ``chunk``-byte pieces; ``drop`` =
    (direction, start, end) is never captured); returns (session, plaintext, gaps) per direction."""
    tc = TlsConnection(object(), "client-hello", keylog)
    plain = [bytearray(), bytearray()]
    lost = [0, 0]

    def take(items):
        for d, data, size, frame, t in items:
            if data is None:
                lost[d] += size
            else:
                plain[d] += data

    off = [0, 0]
    for d, data in ex.flights:  # in the order they were sent, as on a wire
        pieces = [data] if chunk is None else [data[i:i + chunk] for i in range(0, len(data), chunk)]
        for p in pieces:
            o = off[d]
            if drop is not None and drop[0] == d and o < drop[2] and o + len(p) > drop[1]:
                a, b = max(o, drop[1]), min(o + len(p), drop[2])
                if a > o:
                    take(tc.data(d, o, [p[:a - o]], [1], [0.0]))
                if a == drop[1]:  # one gap event for the whole hole, as TCP reassembly gives it
                    take(tc.gap(d, a, drop[2] - drop[1], 2, 0.0))
                if o + len(p) > b:
                    take(tc.data(d, b, [p[b - o:]], [3], [0.0]))
            else:
                take(tc.data(d, o, [p], [1], [0.0]))
            off[d] += len(p)
    return tc.s, plain, lost


MESSAGES = [(0, b"A-ASSOCIATE-RQ" * 10), (1, b"A-ASSOCIATE-AC" * 20), (0, bytes(range(256)) * 300),
            (1, b"status" * 5), (0, b"\x05\x00" * 40000)]
CASES = {
    "tls13": (V13, None, 0),
    "tls12-gcm": (V12, "ECDHE-RSA-AES256-GCM-SHA384", 0),
    "tls12-chacha": (V12, "ECDHE-RSA-CHACHA20-POLY1305", 0),
    "tls12-cbc-etm": (V12, "ECDHE-RSA-AES128-SHA256", 0),
    "tls12-cbc-mte": (V12, "ECDHE-RSA-AES256-SHA", NO_ETM),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_decrypt_every_split(pki, tmp_path, case):
    version, ciphers, options = CASES[case]
    ex = Exchange(pki, tmp_path, version, ciphers, options, MESSAGES)
    kl = load_keylog(str(ex.keylog))
    for chunk in (None, 1, 7, 1000, 16389):
        s, plain, lost = follow(ex, kl, chunk)
        assert plain == ex.sent and lost == [0, 0], chunk
        assert s.decrypted and s.decrypt_failures == [0, 0]
    assert s.sni == "localhost" and s.handshake_complete
    assert s.cipher_suite is not None and s.version == (0x0304 if version == V13 else 0x0303)
    assert [c.subject for c in s.certificates if c.sender == "server"] == [pki.server.subject]
    # without keys: the handshake facts, no plaintext
    s0, plain0, _ = follow(ex, None)
    assert plain0 == [bytearray(), bytearray()] and not s0.decrypted
    assert s0.cipher_suite == s.cipher_suite
    assert bool(s0.certificates) == (version == V12)


@pytest.mark.parametrize("case", ["tls13", "tls12-gcm", "tls12-chacha", "tls12-cbc-mte"])
def test_gap_resumes(pki, tmp_path, case):
    """Bytes lost across record headers: decryption resumes at the next record, and the
    plaintext lost is counted exactly (AEAD) or nearly (CBC padding)."""
    version, ciphers, options = CASES[case]
    ex = Exchange(pki, tmp_path, version, ciphers, options, MESSAGES)
    kl = load_keylog(str(ex.keylog))
    n = len(ex.streams[0])
    start, end = n // 2, n // 2 + 40000  # inside the big messages: several records lost
    s, plain, lost = follow(ex, kl, 1500, drop=(0, start, end))
    [gap] = s.gaps
    assert gap.resumed is True and gap.records_lost >= 2
    sent = bytes(ex.sent[0])
    assert sent.startswith(bytes(plain[0][:1000]))
    assert sent.endswith(bytes(plain[0][-1000:]))
    if "cbc" not in case:
        assert len(plain[0]) + lost[0] == len(sent)
    else:
        assert abs(len(plain[0]) + lost[0] - len(sent)) <= 16 * (gap.records_lost + 1)
    assert plain[1] == ex.sent[1]


def test_gap_inside_one_record_keeps_framing(pki, tmp_path):
    ex = Exchange(pki, tmp_path, V13, None, 0, MESSAGES)
    kl = load_keylog(str(ex.keylog))
    # find a record of the client's stream and lose 100 bytes in its middle
    rs = RecordStream()
    recs = [r for r in rs.feed(0, [bytes(ex.streams[0])], [1], [0.0]) if type(r) is TlsRecord]
    big = next(r for r in recs[5:] if r.length > 1000)
    s, plain, lost = follow(ex, kl, None, drop=(0, big.offset + 200, big.offset + 300))
    [gap] = s.gaps
    assert gap.records_lost == 1 and gap.resumed is True
    assert lost[0] == big.length - 17 and len(plain[0]) + lost[0] == len(ex.sent[0])


def test_client_certificate_in_tls13_with_keys(pki, tmp_path):
    ex = Exchange(pki, tmp_path, V13, None, 0, MESSAGES[:2], client_cert=True)
    s, plain, _ = follow(ex, load_keylog(str(ex.keylog)))
    assert s.client_certificate_requested is True and s.client_certificate_sent is True
    assert [c.subject for c in s.certificates if c.sender == "client"][0] == pki.client.subject
    s0, _, _ = follow(ex, None)
    assert s0.client_certificate_requested is None and s0.certificates_encrypted


def test_record_stream_boundaries():
    recs = b"".join(bytes([23, 3, 3]) + len(p).to_bytes(2, "big") + p for p in (b"a" * 10, b"b" * 300, b"c"))
    for cut in range(1, len(recs)):
        rs = RecordStream()
        out = rs.feed(0, [recs[:cut]], [1], [0.0]) + rs.feed(cut, [recs[cut:]], [2], [1.0])
        assert [r.fragment[:1] for r in out] == [b"a", b"b", b"c"]
        assert [r.frame for r in out] == [1 if cut >= 15 else 2, 1 if cut >= 320 else 2, 2]
    # a gap that swallows a header: framing found again at the next plausible header pair
    rs = RecordStream()
    out = rs.feed(0, [recs[:12]], [1], [0.0]) + rs.gap(12, 20, 2, 0.0) + rs.feed(32, [recs[32:] + recs], [3], [0.0])
    kinds = [type(x) for x in out]
    assert RecordGap in kinds and RecordResync in kinds
    assert [x.fragment[:1] for x in out if type(x) is TlsRecord][-3:] == [b"a", b"b", b"c"]
    # not TLS at all
    assert type(RecordStream().feed(0, [b"\x01\x00\x00\x00\x00\xcc"], [1], [0.0])[0]) is NotTls


def test_keylog(tmp_path):
    p = tmp_path / "k.log"
    p.write_text("# comment\nCLIENT_RANDOM " + "ab" * 32 + " " + "cd" * 48 + "\nnonsense\n"
                 "CLIENT_TRAFFIC_SECRET_0 " + "01" * 32 + " " + "02" * 32 + "\n")
    kl = load_keylog(str(p))
    assert kl.master_secret(bytes.fromhex("ab" * 32)) == bytes.fromhex("cd" * 48)
    assert kl.tls13_secrets(bytes.fromhex("01" * 32)) == {"CLIENT_TRAFFIC_SECRET_0": bytes.fromhex("02" * 32)}
    assert kl.bad_lines == [3]
    p.write_text("hello\n")
    with pytest.raises(KeyLogError, match="not an NSS key log"):
        load_keylog(str(p))
    with pytest.raises(KeyLogError, match="cannot read"):
        load_keylog(str(tmp_path / "missing"))


def test_bcp195_weakness():
    assert suite_weakness(0xC02F) is None  # ECDHE-RSA-AES128-GCM-SHA256
    assert suite_weakness(0x000A)[0] == "warning"  # 3DES
    assert suite_weakness(0x009C)[0] == "note"  # static RSA
    assert suite_weakness(0xC013)[0] == "note"  # CBC


def test_transform_factory_as_the_engine_drives_it(pki, tmp_path):
    """One TlsTransform per connection from TlsLayer.factory, fed each StreamData and finished
    at the close (the engine's StreamTransform seam): plaintext events with their offsets."""
    from types import SimpleNamespace

    from dicomtrace.tcp import StreamData
    from dicomtrace.tls import TlsLayer

    ex = Exchange(pki, tmp_path, V13, None, 0, MESSAGES)
    layer = TlsLayer((104,), keylog=load_keylog(str(ex.keylog)))
    conn = SimpleNamespace(id=1, client_port=40000, server_port=2762, first_frame=1,
                           half=(SimpleNamespace(isn=1), SimpleNamespace(isn=1)))
    stage = None
    got = [bytearray(), bytearray()]
    off = [0, 0]
    for frame, (d, data) in enumerate(ex.flights, 1):
        ev = StreamData(conn, d, off[d], data, frame, float(frame))
        off[d] += len(data)
        stage = stage or layer.factory(conn, ev)
        for out in stage.feed(ev):
            assert type(out) is StreamData and out.offset == len(got[out.direction])
            got[out.direction] += out.data
    assert stage.finish() == []
    assert got == ex.sent
    [s] = layer.finish()
    assert s.decrypted and s.conn is conn
