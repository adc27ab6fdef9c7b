"""Issue #14: TLS handshakes that fail for real, and dcmtk's TLS, each with the right finding,
the alert (RFC 8446 name, who sent it) and the certificate facts.

dcmtk (storescu/echoscu/storescp ``+tls``) and pynetdicom peers with certificates from
tests/tls_lab.py; TLS 1.2 where the alert and the certificates travel in the clear, TLS 1.3
with a key log where they are encrypted.
"""

from __future__ import annotations

import datetime
import ssl
from pathlib import Path

import pytest

import lab
import tls_lab
from tls_lab import analyze, files, pki, work  # noqa: F401 (fixtures)

pytestmark = pytest.mark.usefixtures("dicomtrace_cli")

HOST = "127.0.0.1"
V12, V13 = ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3
UTC = datetime.timezone.utc
FILE_SPECS = [{"sop": "CT", "size": 20 * 1024}]


def storescu_tls(port: int, files, pki, *, trust: Path, extra=()) -> int:
    res = lab.run_storescu(HOST, port, files, aec="PYSCP",
                           extra_args=["+tls", str(pki.client.key), str(pki.client.cert), "+cf", str(trust),
                                       *extra], check=False)
    return res.returncode


def failed(doc: dict) -> dict:
    [f] = [f for f in doc["findings"] if f["code"] == "tls-handshake-failed"]
    assert f["severity"] == "error"
    return f


def test_untrusted_ca(work, pki, files):
    """storescu trusts another CA: it refuses the server's certificate with unknown_ca."""
    pcap = work / "unknown-ca.pcap"
    with lab.PynetdicomSCP(HOST, ssl_context=tls_lab.server_context(pki, version=V12)) as scp:
        with lab.Capture(pcap, "lo", f"tcp port {scp.port}"):
            assert storescu_tls(scp.port, files, pki, trust=pki.other_ca.cert) != 0
    doc = analyze(pcap)
    [t] = doc["tls_connections"]
    assert t["alerts"] == [{"sender": "client", "level": "fatal", "description": "unknown_ca"}]
    assert t["version"] == "TLS 1.2" and t["handshake_complete"] is False
    assert [c["subject"] for c in t["certificates"]] == [pki.server.subject]
    f = failed(doc)
    assert f["details"]["alert"]["description"] == "unknown_ca"
    assert "does not trust the CA" in f["details"]["cause"] and pki.ca.subject in f["details"]["cause"]
    assert pki.server.subject in f["message"] and "the client sent the alert unknown_ca" in f["message"]
    assert doc["associations"] == []


def test_expired_server_certificate(work, pki, files):
    now = datetime.datetime.now(UTC)
    old = tls_lab.leaf(pki.server.cert.parent, "expired", cn="OLDSCP", server=True,
                       not_before=now - datetime.timedelta(days=400), not_after=now - datetime.timedelta(days=35))
    pcap = work / "expired.pcap"
    with lab.PynetdicomSCP(HOST, ssl_context=tls_lab.server_context(pki, old, version=V12)) as scp:
        with lab.Capture(pcap, "lo", f"tcp port {scp.port}"):
            assert storescu_tls(scp.port, files, pki, trust=pki.ca.cert) != 0
    doc = analyze(pcap)
    [t] = doc["tls_connections"]
    assert t["alerts"] == [{"sender": "client", "level": "fatal", "description": "certificate_expired"}]
    f = failed(doc)
    assert "expired on" in f["details"]["cause"] and old.subject in f["details"]["cause"]
    [exp] = [x for x in doc["findings"] if x["code"] == "tls-certificate-expiring"]
    assert exp["severity"] == "error" and exp["details"]["subject"] == old.subject


def test_certificate_expiring_soon(work, pki, files):
    now = datetime.datetime.now(UTC)
    soon = tls_lab.leaf(pki.server.cert.parent, "soon", cn="SOONSCP", server=True,
                        not_after=now + datetime.timedelta(days=12))
    pcap = work / "soon.pcap"
    with lab.PynetdicomSCP(HOST, ssl_context=tls_lab.server_context(pki, soon, version=V12)) as scp:
        with lab.Capture(pcap, "lo", f"tcp port {scp.port}"):
            assert storescu_tls(scp.port, files, pki, trust=pki.ca.cert) == 0
    doc = analyze(pcap)
    [exp] = [x for x in doc["findings"] if x["code"] == "tls-certificate-expiring"]
    assert exp["severity"] == "warning" and "12 day(s) after the capture" in exp["message"]
    assert not [x for x in doc["findings"] if x["code"] == "tls-handshake-failed"]
    assert doc["tls_connections"][0]["handshake_complete"] is True


@pytest.mark.parametrize("version", [V12, V13], ids=["tls12", "tls13"])
def test_client_certificate_required(work, pki, files, version):
    """storescp +tls requires a client certificate (dcmtk's default); a pynetdicom client
    sends none.  In TLS 1.3 the alert (certificate_required) is encrypted: the key log opens it."""
    d = work / f"nocert-{version.name}"
    d.mkdir(exist_ok=True)
    keylog = d / "keys.log"
    pcap = d / "nocert.pcap"
    port = lab.free_port()
    with lab.StoreSCP(d / "rx", port, extra_args=["+tls", str(pki.server.key), str(pki.server.cert),
                                                  "+cf", str(pki.ca.cert)], log_dir=d):
        with lab.Capture(pcap, "lo", f"tcp port {port}"):
            ctx = tls_lab.client_context(pki, keylog=keylog, version=version, cert=False)
            assert not tls_lab.tls_store(HOST, port, files, ctx, aec="STORESCP")
    doc = analyze(pcap, "--tls-keylog", keylog)
    [t] = doc["tls_connections"]
    assert t["client_certificate_requested"] is True and t["client_certificate_sent"] is False
    f = failed(doc)
    assert f["details"]["cause"] == "the server requires a client certificate and the client sent none"
    assert f["details"]["alert"]["sender"] == "server"
    want = "handshake_failure" if version == V12 else "certificate_required"
    assert f["details"]["alert"]["description"] == want
    assert [c["subject"] for c in t["certificates"] if c["sender"] == "server"][0] == pki.server.subject


def test_no_common_cipher(work, pki, files):
    pcap = work / "nocipher.pcap"
    sctx = tls_lab.server_context(pki, version=V12, ciphers="ECDHE-RSA-AES256-GCM-SHA384")
    cctx = tls_lab.client_context(pki, version=V12, ciphers="ECDHE-RSA-CHACHA20-POLY1305", cert=False)
    with lab.PynetdicomSCP(HOST, ssl_context=sctx) as scp:
        with lab.Capture(pcap, "lo", f"tcp port {scp.port}"):
            assert tls_lab.tls_store(HOST, scp.port, files, cctx) is None
    doc = analyze(pcap)
    [t] = doc["tls_connections"]
    assert t["version"] is None and t["alerts"][0]["sender"] == "server"
    assert t["alerts"][0]["description"] == "handshake_failure"
    f = failed(doc)
    assert f["details"]["cause"].startswith("no cipher suite (or group) in common")
    assert "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256" in f["details"]["cause"]


def test_dcmtk_tls_both_sides(work, pki, files):
    """storescu +tls -> storescp +tls (each verifies the other): a complete handshake with a
    client certificate; without keys, the connection's facts; echoscu +tls too."""
    d = work / "dcmtk"
    d.mkdir(exist_ok=True)
    pcap = d / "dcmtk.pcap"
    port = lab.free_port()
    tls = ["+tls", str(pki.server.key), str(pki.server.cert), "+cf", str(pki.ca.cert)]
    with lab.StoreSCP(d / "rx", port, extra_args=tls, log_dir=d) as scp:
        with lab.Capture(pcap, "lo", f"tcp port {port}"):
            assert storescu_tls(port, files, pki, trust=pki.ca.cert, extra=["-aec", "STORESCP"]) == 0
            lab.run_echoscu(HOST, port, aec="STORESCP", extra_args=[
                "+tls", str(pki.client.key), str(pki.client.cert), "+cf", str(pki.ca.cert)])
    assert len(scp.received()) == 1
    doc = analyze(pcap)
    assert len(doc["tls_connections"]) == 2
    for t in doc["tls_connections"]:
        assert t["handshake_complete"] is True and t["decrypted"] is False
        assert t["version"] in ("TLS 1.2", "TLS 1.3")
        if t["version"] == "TLS 1.2":
            assert t["client_certificate_requested"] is True and t["client_certificate_sent"] is True
    assert not [f for f in doc["findings"] if f["code"] == "tls-handshake-failed"]


def test_dcmtk_server_decrypted(work, pki, files):
    """pynetdicom (key log) -> storescp +tls: the DICOM inside, decrypted, is what storescp got."""
    d = work / "dcmtk-decrypt"
    d.mkdir(exist_ok=True)
    keylog, pcap, port = d / "keys.log", d / "tls.pcap", lab.free_port()
    tls = ["+tls", str(pki.server.key), str(pki.server.cert), "+cf", str(pki.ca.cert), "-ic", "+B"]
    with lab.StoreSCP(d / "rx", port, extra_args=tls, log_dir=d) as scp:
        with lab.Capture(pcap, "lo", f"tcp port {port}"):
            statuses = tls_lab.tls_store(HOST, port, files, tls_lab.client_context(pki, keylog=keylog, cert=False),
                                         aec="STORESCP")
    assert statuses == [0]
    doc = analyze(pcap, "--tls-keylog", keylog)
    [a] = doc["associations"]
    assert a["tls"]["decrypted"] is True and a["outcome"] == "released"
    assert [(o["command"], o["status"]) for o in a["operations"]] == [("C-ECHO", 0), ("C-STORE", 0)]
    out = d / "export"
    lab.run_dicomtrace("export", pcap, "-o", out, "--tls-keylog", keylog)
    [exported] = list(out.rglob("*.dcm"))
    [received] = scp.received()
    off_e, off_r = lab.dataset_offset_of(exported), lab.dataset_offset_of(received)
    assert exported.read_bytes()[off_e:] == received.read_bytes()[off_r:]


def test_tls_and_plain_on_each_others_ports(work, pki, files):
    """echoscu in the clear to a TLS port, and echoscu +tls to a plain storescp."""
    d = work / "mismatch"
    d.mkdir(exist_ok=True)
    pcap = d / "mismatch.pcap"
    tls_port, plain_port = lab.free_port(), lab.free_port()
    tls = ["+tls", str(pki.server.key), str(pki.server.cert), "+cf", str(pki.ca.cert)]
    with lab.StoreSCP(d / "rx1", tls_port, extra_args=tls, log_dir=d, name="tls-scp"), \
            lab.StoreSCP(d / "rx2", plain_port, log_dir=d, name="plain-scp"):
        with lab.Capture(pcap, "lo", f"tcp port {tls_port} or tcp port {plain_port}"):
            assert lab.run_echoscu(HOST, tls_port, aec="STORESCP", check=False).returncode != 0
            assert lab.run_echoscu(HOST, plain_port, aec="STORESCP", check=False, extra_args=[
                "+tls", str(pki.client.key), str(pki.client.cert), "+cf", str(pki.ca.cert)]).returncode != 0
    doc = analyze(pcap, "--tls-port", str(tls_port), "--port", str(plain_port))
    codes = {f["code"]: f for f in doc["findings"]}
    assert f"port {tls_port}" in codes["tls-plaintext-on-tls-port"]["message"]
    assert f"port {plain_port}" in codes["tls-on-plaintext-port"]["message"]
    assert "tls-handshake-failed" not in codes
