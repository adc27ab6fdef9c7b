"""TLS handshake messages (RFC 8446 4, RFC 5246 7.4): ClientHello, ServerHello with their
extensions (server_name, ALPN, supported_versions, encrypt_then_mac), Certificate (decoded with
the ``cryptography`` package), CertificateRequest, and alerts (RFC 8446 6).

:class:`HandshakeReader` reassembles the handshake messages of one direction across records
(a message may span records, a record may hold several).  Parsers are lenient: a malformed
message yields what could be read and a ``problem`` string, never an exception.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dicomtrace.tls.names import (
    ALERT_LEVELS, EXT_ALPN, EXT_ENCRYPT_THEN_MAC, EXT_EXTENDED_MASTER_SECRET, EXT_SERVER_NAME,
    EXT_SUPPORTED_VERSIONS, alert_name,
)

CLIENT_HELLO, SERVER_HELLO, NEW_SESSION_TICKET, ENCRYPTED_EXTENSIONS = 1, 2, 4, 8
CERTIFICATE, SERVER_KEY_EXCHANGE, CERTIFICATE_REQUEST, SERVER_HELLO_DONE = 11, 12, 13, 14
CERTIFICATE_VERIFY, CLIENT_KEY_EXCHANGE, FINISHED, KEY_UPDATE = 15, 16, 20, 24
MAX_MESSAGE = 1 << 20  # a handshake message larger than this is not believed
# ServerHello.random of a HelloRetryRequest: SHA-256 of "HelloRetryRequest", as RFC 8446 4.1.3
# spells it out (written out here: hashlib, with OpenSSL, is 5 ms of start-up)
HELLO_RETRY_RANDOM = bytes.fromhex("cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c")


class _Reader:
    """Bounds-checked reading of a handshake body; reading past the end raises ``_Short``."""

    __slots__ = ("b", "i", "end")

    def __init__(self, b, i=0, end=None):
        self.b, self.i, self.end = b, i, len(b) if end is None else end

    def take(self, n: int) -> bytes:
        if self.i + n > self.end:
            raise _Short()
        v = self.b[self.i:self.i + n]
        self.i += n
        return bytes(v)

    def int(self, n: int) -> int:
        return int.from_bytes(self.take(n), "big")

    def vector(self, length_bytes: int) -> "_Reader":
        n = self.int(length_bytes)
        if self.i + n > self.end:
            raise _Short()
        r = _Reader(self.b, self.i, self.i + n)
        self.i += n
        return r

    def left(self) -> int:
        return self.end - self.i


class _Short(Exception):
    pass


@dataclass
class Hello:
    """What a ClientHello or ServerHello said."""

    legacy_version: int = 0
    random: bytes = b""
    session_id: bytes = b""
    cipher_suites: list[int] = field(default_factory=list)  # offered (client) or [chosen]
    versions: list[int] = field(default_factory=list)  # supported_versions (chosen, for a server)
    sni: str | None = None
    alpn: list[str] = field(default_factory=list)
    encrypt_then_mac: bool = False
    extended_master_secret: bool = False
    extensions: list[int] = field(default_factory=list)
    hello_retry: bool = False
    problem: str | None = None


def _extensions(r: _Reader, hello: Hello, server: bool) -> None:
    if not r.left():
        return
    exts = r.vector(2)
    while exts.left() >= 4:
        etype = exts.int(2)
        body = exts.vector(2)
        hello.extensions.append(etype)
        if etype == EXT_SERVER_NAME and not server and body.left():
            names = body.vector(2)
            while names.left() >= 3:
                kind = names.int(1)
                name = names.vector(2)
                if kind == 0:
                    hello.sni = name.take(name.left()).decode("ascii", "replace")
        elif etype == EXT_ALPN and body.left():
            protos = body.vector(2)
            while protos.left():
                p = protos.vector(1)
                hello.alpn.append(p.take(p.left()).decode("ascii", "replace"))
        elif etype == EXT_SUPPORTED_VERSIONS:
            if server:
                if body.left() >= 2:
                    hello.versions = [body.int(2)]
            elif body.left():
                vs = body.vector(1)
                while vs.left() >= 2:
                    hello.versions.append(vs.int(2))
        elif etype == EXT_ENCRYPT_THEN_MAC:
            hello.encrypt_then_mac = True
        elif etype == EXT_EXTENDED_MASTER_SECRET:
            hello.extended_master_secret = True


def _hello_start(body, h: Hello) -> "_Reader":
    """The fields both hellos begin with (RFC 8446 4.1.2, 4.1.3): legacy_version, random,
    legacy_session_id.  Returns the reader positioned after them."""
    r = _Reader(body)
    h.legacy_version = r.int(2)
    h.random = r.take(32)
    sid = r.vector(1)
    h.session_id = sid.take(sid.left())
    return r


def parse_client_hello(body) -> Hello:
    """ClientHello (RFC 8446 4.1.2)."""
    h = Hello()
    try:
        r = _hello_start(body, h)
        cs = r.vector(2)
        while cs.left() >= 2:
            h.cipher_suites.append(cs.int(2))
        comp = r.vector(1)
        comp.take(comp.left())
        _extensions(r, h, server=False)
    except _Short:
        h.problem = "ClientHello is truncated"
    return h


def parse_server_hello(body) -> Hello:
    """ServerHello (RFC 8446 4.1.3), or a HelloRetryRequest (same shape, special random)."""
    h = Hello()
    try:
        r = _hello_start(body, h)
        h.hello_retry = h.random == HELLO_RETRY_RANDOM
        h.cipher_suites = [r.int(2)]
        r.int(1)  # legacy_compression_method
        _extensions(r, h, server=True)
    except _Short:
        h.problem = "ServerHello is truncated"
    return h


@dataclass
class CertificateInfo:
    """One certificate of a chain, as the contract's ``certificates`` items describe it."""

    sender: str
    subject: str
    issuer: str
    not_before: str
    not_after: str
    key: str
    sans: list[str]
    not_before_ts: float = 0.0
    not_after_ts: float = 0.0
    self_signed: bool = False
    problem: str | None = None

    def to_json(self) -> dict:
        return {"sender": self.sender, "subject": self.subject, "issuer": self.issuer,
                "not_before": self.not_before, "not_after": self.not_after, "key": self.key,
                "sans": list(self.sans)}


def describe_certificate(der: bytes, sender: str) -> CertificateInfo:
    """Subject, issuer, validity, key type and size, subject alternative names (RFC 5280)."""
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa

    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError as exc:
        return CertificateInfo(sender, "", "", "", "", "", [], problem=f"not a DER X.509 certificate ({exc})")
    try:
        subject = cert.subject.rfc4514_string()
        issuer = cert.issuer.rfc4514_string()
    except ValueError:
        subject = issuer = "(undecodable name)"
    nb, na = cert.not_valid_before_utc, cert.not_valid_after_utc
    try:
        pk = cert.public_key()
        if isinstance(pk, rsa.RSAPublicKey):
            key = f"RSA {pk.key_size}"
        elif isinstance(pk, ec.EllipticCurvePublicKey):
            key = f"EC {pk.curve.name} ({pk.key_size})"
        elif isinstance(pk, ed25519.Ed25519PublicKey):
            key = "Ed25519"
        elif isinstance(pk, ed448.Ed448PublicKey):
            key = "Ed448"
        elif isinstance(pk, dsa.DSAPublicKey):
            key = f"DSA {pk.key_size}"
        else:
            key = type(pk).__name__
    except (ValueError, TypeError) as exc:
        key = f"undecodable ({exc})"
    sans: list[str] = []
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        sans = [f"DNS:{n}" for n in ext.get_values_for_type(x509.DNSName)]
        sans += [f"IP:{n}" for n in ext.get_values_for_type(x509.IPAddress)]
        sans += [f"URI:{n}" for n in ext.get_values_for_type(x509.UniformResourceIdentifier)]
    except (x509.ExtensionNotFound, ValueError):
        pass
    return CertificateInfo(sender, subject, issuer, nb.strftime("%Y-%m-%dT%H:%M:%SZ"),
                           na.strftime("%Y-%m-%dT%H:%M:%SZ"), key, sans, nb.timestamp(),
                           na.timestamp(), cert.subject == cert.issuer)


def parse_certificate(body, sender: str, tls13: bool) -> tuple[list[CertificateInfo], str | None]:
    """Certificate (RFC 5246 7.4.2; RFC 8446 4.4.2 adds a request context and per-entry
    extensions).  Returns the chain, first the sender's own, and a problem or None."""
    certs: list[CertificateInfo] = []
    try:
        r = _Reader(body)
        if tls13:
            r.vector(1)
        lst = r.vector(3)
        while lst.left() >= 3:
            der = lst.vector(3)
            certs.append(describe_certificate(der.take(der.left()), sender))
            if tls13:
                lst.vector(2)
    except _Short:
        return certs, "Certificate message is truncated"
    return certs, None


@dataclass
class Alert:
    """An alert (RFC 8446 6): who sent it, level, RFC 8446 name, frame, whether it was read
    from an encrypted record (decrypted) or guessed from an encrypted record's size."""

    sender: str
    level: str | None
    description: str
    frame: int
    time: float
    encrypted: bool = False
    guessed: bool = False

    def to_json(self) -> dict:
        return {"sender": self.sender, "level": self.level, "description": self.description}


def parse_alert(fragment, sender: str, frame: int, t: float, encrypted: bool = False) -> Alert | None:
    if len(fragment) < 2:
        return None
    return Alert(sender, ALERT_LEVELS.get(fragment[0]), alert_name(fragment[1]), frame, t, encrypted)


class HandshakeReader:
    """Handshake messages of one direction, reassembled across records (RFC 8446 5.1)."""

    def __init__(self):
        self.buf = bytearray()
        self.broken = False

    def feed(self, data) -> list[tuple[int, bytes]]:
        """Add handshake-record bytes; return the (type, body) of each message completed."""
        if self.broken:
            return []
        self.buf += data
        out = []
        buf = self.buf
        pos = 0
        while len(buf) - pos >= 4:
            n = int.from_bytes(buf[pos + 1:pos + 4], "big")
            if n > MAX_MESSAGE:
                self.broken = True
                break
            if len(buf) - pos - 4 < n:
                break
            out.append((buf[pos], bytes(buf[pos + 4:pos + 4 + n])))
            pos += 4 + n
        del buf[:pos]
        return out

    def lost(self) -> None:
        """A record of this direction's handshake was lost: what follows cannot be framed."""
        self.buf.clear()
        self.broken = True
