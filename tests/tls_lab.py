"""TLS for the lab: a certificate authority, server and client certificates made with the
``cryptography`` package (PEM files, as dcmtk's ``+tls KEY CERT`` / ``+cf CA`` want them), and
``ssl`` contexts for pynetdicom peers that write an NSS key log (``keylog_filename``)."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

import pytest

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

import lab

UTC = datetime.timezone.utc


@dataclass
class Identity:
    key: Path
    cert: Path
    subject: str
    not_after: datetime.datetime


@dataclass
class Pki:
    ca: Identity
    server: Identity
    client: Identity
    other_ca: Identity  # a CA nobody trusts


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "dicomtrace lab"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write(directory: Path, stem: str, key, cert) -> tuple[Path, Path]:
    kp, cp = directory / f"{stem}.key", directory / f"{stem}.pem"
    kp.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()))
    cp.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return kp, cp


def make_ca(directory: Path, stem: str, cn: str):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                           critical=True)
            .sign(key, hashes.SHA256()))
    kp, cp = _write(directory, stem, key, cert)
    return key, cert, Identity(kp, cp, cert.subject.rfc4514_string(), cert.not_valid_after_utc)


def make_leaf(directory: Path, stem: str, cn: str, ca_key, ca_cert, *, server: bool,
              not_before: datetime.datetime | None = None, not_after: datetime.datetime | None = None,
              dns: tuple[str, ...] = ("localhost",), rsa_bits: int | None = 2048) -> Identity:
    key = rsa.generate_private_key(65537, rsa_bits) if rsa_bits else ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(UTC)
    nb = not_before or now - datetime.timedelta(days=1)
    na = not_after or now + datetime.timedelta(days=365)
    sans = [x509.DNSName(n) for n in dns] + [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(nb).not_valid_after(na)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server
                                                  else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    kp, cp = _write(directory, stem, key, cert)
    return Identity(kp, cp, cert.subject.rfc4514_string(), na)


_CACHE: dict[Path, tuple] = {}


def make_pki(directory: Path) -> Pki:
    """A CA with a server certificate (localhost, 127.0.0.1) and a client certificate, and
    an unrelated CA."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert, ca = make_ca(directory, "ca", "dicomtrace lab CA")
    _, _, other = make_ca(directory, "other-ca", "untrusted CA")
    server = make_leaf(directory, "server", "STORESCP", ca_key, ca_cert, server=True)
    client = make_leaf(directory, "client", "STORESCU", ca_key, ca_cert, server=False)
    _CACHE[directory] = (ca_key, ca_cert)
    return Pki(ca, server, client, other)


def leaf(pki_dir: Path, stem: str, **kw) -> Identity:
    """Another certificate from the lab CA of ``make_pki(pki_dir)`` (expired, short-lived...)."""
    ca_key, ca_cert = _CACHE[pki_dir]
    return make_leaf(pki_dir, stem, kw.pop("cn", stem), ca_key, ca_cert, **kw)


def server_context(pki: Pki, identity: Identity | None = None, *, keylog: Path | None = None,
                   version: ssl.TLSVersion | None = None, require_client: bool = False,
                   ciphers: str | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ident = identity or pki.server
    ctx.load_cert_chain(ident.cert, ident.key)
    if version is not None:
        ctx.minimum_version = ctx.maximum_version = version
    if ciphers:
        ctx.set_ciphers(ciphers)
    if require_client:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(pki.ca.cert)
    if keylog is not None:
        ctx.keylog_filename = str(keylog)
    return ctx


def client_context(pki: Pki, *, keylog: Path | None = None, version: ssl.TLSVersion | None = None,
                   ciphers: str | None = None, cert: bool = True, trust: Identity | None = None,
                   check_hostname: bool = True) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations((trust or pki.ca).cert)
    ctx.check_hostname = check_hostname
    if cert:
        ctx.load_cert_chain(pki.client.cert, pki.client.key)
    if version is not None:
        ctx.minimum_version = ctx.maximum_version = version
    if ciphers:
        ctx.set_ciphers(ciphers)
    if keylog is not None:
        ctx.keylog_filename = str(keylog)
    return ctx


# --------------------------------------------------------------------------
# peers
# --------------------------------------------------------------------------

def tls_store(host: str, port: int, files, ctx: ssl.SSLContext | None, *, aec: str = "PYSCP",
              server_hostname: str = "localhost", max_pdu: int = 16382) -> list[int] | None:
    """One pynetdicom association over TLS (in the clear when ``ctx`` is None): a C-ECHO, then
    a C-STORE per file.  The C-STORE statuses, or None when no association was established."""
    try:
        return lab.pynetdicom_store(host, port, files, aec=aec, max_pdu=max_pdu, echo=True,
                                    tls_args=(ctx, server_hostname) if ctx is not None else None)
    except (lab.LabError, RuntimeError):  # RuntimeError: pynetdicom, the association was lost
        return None


# --------------------------------------------------------------------------
# what the TLS test modules share (import the fixtures into the module)
# --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def work(tmp_path_factory, request) -> Path:
    """The module's work directory (kept with DICOMTRACE_LAB_KEEP)."""
    return lab.work_dir(tmp_path_factory, request.module.__name__.removeprefix("test_"))


@pytest.fixture(scope="module")
def pki(work) -> Pki:
    return make_pki(work / "pki")


@pytest.fixture(scope="module")
def files(work, request) -> list[Path]:
    """DICOM files made from the module's ``FILE_SPECS``."""
    return [f.path for f in lab.make_dicom_files(work / "files", request.module.FILE_SPECS)]


def analyze(pcap: Path, *extra) -> dict:
    """``dicomtrace analyze --format json`` of a capture."""
    import json

    return json.loads(lab.run_dicomtrace("analyze", pcap, "--format", "json", *extra).stdout)


def _main(argv: list[str]) -> int:
    """``python tls_lab.py store HOST PORT PKI_DIR KEYLOG VERSION FILE...``: a key-logging TLS
    pynetdicom client, for runs inside a network namespace."""
    import json

    cmd, host, port, pki_dir, keylog, version, *files = argv
    assert cmd == "store"
    pki_dir = Path(pki_dir)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(pki_dir / "ca.pem")
    ctx.check_hostname = False
    ctx.keylog_filename = keylog
    if version != "any":
        v = ssl.TLSVersion[version]
        ctx.minimum_version = ctx.maximum_version = v
    print(json.dumps(tls_store(host, int(port), files, ctx)))
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(_main(sys.argv[1:]))
