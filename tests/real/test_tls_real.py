"""Issue #14: DICOM over TLS on real traffic.

pynetdicom peers with ``ssl`` contexts that write an NSS key log (``keylog_filename``), TLS 1.2
(ECDHE and RSA key exchange; AES-GCM, AES-CBC with and without encrypt-then-MAC,
ChaCha20-Poly1305) and TLS 1.3, and dcmtk's storescp/storescu/echoscu with ``+tls`` and
certificates made by tests/tls_lab.py, captured with tcpdump on loopback.  With the key log the
analysis and the exported files equal those of the same operations sent in the clear; without
it the connection is still reported with its handshake facts.  tshark is the referee for the
handshake fields it decodes without keys (version, cipher suite, SNI).
"""

from __future__ import annotations

import hashlib
import shutil
import ssl
from pathlib import Path

import pytest

import lab
import tls_lab
from tls_lab import analyze, files, pki, work  # noqa: F401 (fixtures)
from test_analyze_real import validate

pytestmark = pytest.mark.usefixtures("dicomtrace_cli")

HOST = "127.0.0.1"
V12, V13 = ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3
NO_ETM = 1 << 19  # OpenSSL's SSL_OP_NO_ENCRYPT_THEN_MAC: MAC-then-encrypt CBC records
FILE_SPECS = [{"sop": "CT", "size": 30 * 1024}, {"sop": "MR", "size": 150 * 1024},
              {"sop": "CT", "size": 400 * 1024, "explicit_vr": False}]


def export_hashes(pcap: Path, out: Path, *extra) -> list[str]:
    if out.exists():
        shutil.rmtree(out)
    lab.run_dicomtrace("export", pcap, "-o", out, *extra)
    return sorted(hashlib.sha256(p.read_bytes()).hexdigest() for p in out.rglob("*") if p.is_file()
                  and p.suffix in (".dcm", ".partial"))


def dicom_view(doc: dict) -> list:
    """What must be the same in the clear and decrypted: the associations' negotiation,
    operations and statuses, and the (non-TLS) findings."""
    out = []
    for a in doc["associations"]:
        out.append({
            "aes": (a["calling_ae"], a["called_ae"]), "outcome": a["outcome"], "pdus": a["pdus"],
            "contexts": [(c["abstract_syntax"], c["result"], c["transfer_syntax"])
                         for c in a["presentation_contexts"]],
            "operations": [(o["command"], o["message_id"], o["sop_instance_uid"], o.get("dataset_bytes"),
                            o["status"]) for o in a["operations"]],
        })
    # network findings depend on timing (a loaded machine retransmits even on loopback)
    from dicomtrace.findings.codes import lookup

    out.append(sorted(f["code"] for f in doc["findings"]
                      if lookup(f["code"]).area not in ("tls", "network")))
    out.append([(o["sop_instance_uid"], o["bytes"], o["complete"]) for o in doc["objects"]])
    return out


def run_tls(d: Path, name: str, pki, files, *, server_ctx, client_ctx, keylog: Path | None,
            rx: Path | None = None, hostname: str = "localhost"):
    """One TLS association captured on loopback; returns (pcap, statuses or None).  The
    pynetdicom peers lost a TLS association once on a loaded machine (load average 11 on two
    cores; cause not found): a run that does not store everything is made once more."""
    pcap = d / f"{name}.pcap"
    for _ in range(2):
        with lab.PynetdicomSCP(HOST, ssl_context=server_ctx, output_dir=rx) as scp:
            with lab.Capture(pcap, "lo", f"tcp port {scp.port}"):
                statuses = tls_lab.tls_store(HOST, scp.port, files, client_ctx, server_hostname=hostname)
        if statuses == [0] * len(files):
            break
    return pcap, statuses


@pytest.fixture(scope="module")
def clear(work, files):
    """The same operations in the clear: the reference."""
    d = work / "clear"
    d.mkdir(exist_ok=True)
    pcap = d / "clear.pcap"
    with lab.PynetdicomSCP(HOST) as scp:
        with lab.Capture(pcap, "lo", f"tcp port {scp.port}"):
            statuses = tls_lab.tls_store(HOST, scp.port, files, None)
    assert statuses == [0] * len(files)
    doc = analyze(pcap)
    return pcap, doc, export_hashes(pcap, d / "export")


VARIANTS = {
    # name: (version, OpenSSL cipher string (TLS 1.2) or None, extra options, IANA suite)
    "tls13-aes256gcm": (V13, None, 0, "TLS_AES_256_GCM_SHA384"),
    "tls12-ecdhe-aes128gcm": (V12, "ECDHE-RSA-AES128-GCM-SHA256", 0, "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"),
    "tls12-ecdhe-chacha20": (V12, "ECDHE-RSA-CHACHA20-POLY1305", 0, "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256"),
    "tls12-ecdhe-aes256cbc-etm": (V12, "ECDHE-RSA-AES256-SHA384", 0, "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384"),
    "tls12-ecdhe-aes128cbc-mte": (V12, "ECDHE-RSA-AES128-SHA", NO_ETM, "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA"),
    "tls12-rsa-aes256gcm": (V12, "AES256-GCM-SHA384", 0, "TLS_RSA_WITH_AES_256_GCM_SHA384"),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_decrypted_equals_clear(work, pki, files, clear, variant):
    """With the key log, associations, operations, findings and exported files are those of
    the same operations in the clear; the TLS facts are those tshark reads."""
    version, ciphers, options, suite = VARIANTS[variant]
    d = work / variant
    d.mkdir(exist_ok=True)
    keylog = d / "keys.log"
    sctx = tls_lab.server_context(pki, version=version, ciphers=ciphers)
    sctx.options |= options
    cctx = tls_lab.client_context(pki, keylog=keylog, version=version, ciphers=ciphers, cert=False)
    cctx.options |= options
    pcap, statuses = run_tls(d, variant, pki, files, server_ctx=sctx, client_ctx=cctx, keylog=keylog)
    assert statuses == [0] * len(files)

    doc = analyze(pcap, "--tls-keylog", keylog)
    validate(doc)
    _, clear_doc, clear_export = clear
    assert dicom_view(doc) == dicom_view(clear_doc)
    assert export_hashes(pcap, d / "export", "--tls-keylog", keylog) == clear_export
    [t] = doc["tls_connections"]
    assert t["decrypted"] is True and t["association"] == doc["associations"][0]["id"]
    assert t["version"] == ("TLS 1.3" if version == V13 else "TLS 1.2")
    assert t["cipher_suite"] == suite
    assert t["sni"] == "localhost"
    assert t["decrypt_failures"] == {"client": 0, "server": 0}
    assert doc["associations"][0]["tls"] == {"version": t["version"], "cipher_suite": suite,
                                             "decrypted": True}
    # the server certificate: in TLS 1.3 only visible because the key log opened the handshake
    server_certs = [c for c in t["certificates"] if c["sender"] == "server"]
    assert server_certs and server_certs[0]["subject"] == pki.server.subject
    assert server_certs[0]["key"] == "RSA 2048"
    assert "DNS:localhost" in server_certs[0]["sans"]
    weak = [f for f in doc["findings"] if f["code"] == "tls-weak-protocol"]
    assert bool(weak) == ("CBC" in suite or suite.startswith("TLS_RSA_")), weak
    # tshark as referee for what it decodes without keys
    # (-d: the port is a free one picked at random, and tshark may give it to another protocol)
    tls_port = doc["tls_connections"][0]["server"]["port"]
    fields = lab.tshark("-r", str(pcap), "-d", f"tcp.port=={tls_port},tls", "-Y", "tls.handshake.type == 2",
                        "-T", "fields",
                        "-e", "tls.handshake.ciphersuite", "-e", "tls.handshake.extensions.supported_version")
    cs, sv = (fields.strip().split("\t") + [""])[:2]
    assert int(cs, 16) == next(k for k, v in __import__("dicomtrace.tls.names", fromlist=["x"]).CIPHER_SUITES.items()
                               if v.name == suite)
    if version == V13:
        assert sv == "0x0304"
    # without the key log: an encrypted connection with its facts, never nothing
    plain = analyze(pcap)
    validate(plain)
    assert plain["associations"] == []
    [t0] = plain["tls_connections"]
    assert t0["decrypted"] is False and t0["version"] == t["version"] and t0["cipher_suite"] == suite
    assert t0["handshake_complete"] is True
    assert t0["record_bytes"] == t["record_bytes"]
    assert (t0["certificates"] == []) == (version == V13)
    text = lab.run_dicomtrace("analyze", pcap).stdout.decode()
    assert "TLS connections: 1 (none decrypted)" in text and suite in text
    # --no-heuristic: TLS (like DICOM) only on the DICOM and TLS ports
    assert analyze(pcap, "--no-heuristic")["tls_connections"] == []
    port = str(doc["tls_connections"][0]["server"]["port"])
    assert len(analyze(pcap, "--no-heuristic", "--tls-port", port)["tls_connections"]) == 1
    if version == V13:  # the report: the same facts, certificates opened by the key log
        html = d / "report.html"
        lab.run_dicomtrace("report", pcap, "-o", html, "--tls-keylog", keylog)
        page = html.read_text()
        assert 'id="tls"' in page and suite in page and pki.server.subject in page


def test_keylog_without_this_connection(work, pki, files, clear):
    """A key log that lacks the connection's secrets: said once (a note), the rest analysed."""
    d = work / "other-keys"
    d.mkdir(exist_ok=True)
    keylog = d / "keys.log"
    pcap, statuses = run_tls(d, "tls", pki, files, server_ctx=tls_lab.server_context(pki),
                             client_ctx=tls_lab.client_context(pki, cert=False), keylog=None)
    assert statuses
    keylog.write_text("CLIENT_RANDOM " + "00" * 32 + " " + "11" * 48 + "\n")
    doc = analyze(pcap, "--tls-keylog", keylog)
    notes = [f for f in doc["findings"] if f["code"] == "tls-not-decrypted"]
    assert len(notes) == 1 and "no secrets for its client random" in notes[0]["message"]
    assert doc["tls_connections"][0]["keys"] == "missing"
    bad = lab.run_dicomtrace("analyze", pcap, "--tls-keylog", d / "nope.log", check=False)
    assert bad.returncode == 2 and b"Traceback" not in bad.stderr
    assert len(bad.stderr.decode().strip().splitlines()) == 1
