"""Issue #14: TLS under loss and reordering, and across capture gaps.

* storescp ``+tls`` in one network namespace, a key-logging pynetdicom client in the other,
  over a veth with nftables drops and reordering (tests/lab/ NetnsPair), captured on the
  client's veth: everything decrypts, and the exported data sets are the bytes storescp stored;
* a loopback TLS 1.2 (AES-GCM) and a TLS 1.3 capture with one client segment in the middle of
  an object deleted (editcap -d): the record split by the gap is reported, decryption resumes
  at the next record (by the explicit nonce in TLS 1.2 GCM, by trying the sequence numbers the
  lost bytes allow in TLS 1.3), so only the object hit is partial.
"""

from __future__ import annotations

import hashlib
import json
import ssl
import sys
from pathlib import Path

import pytest

import lab
import tls_lab
from tls_lab import analyze, files, pki, work  # noqa: F401 (fixtures)

pytestmark = pytest.mark.usefixtures("dicomtrace_cli")

HERE = Path(__file__).resolve().parents[1]  # tests/, where tls_lab.py is
HOST = "127.0.0.1"
LOSS = [lab.LossRule("a", 2.0, "output"), lab.LossRule("b", 2.0, "output"),
        lab.LossRule("a", 1.0, "input")]
FILE_SPECS = [{"sop": "CT", "size": 60 * 1024}, {"sop": "MR", "size": 900 * 1024},
              {"sop": "CT", "size": 300 * 1024}]


def dataset(path: Path) -> bytes:
    return path.read_bytes()[lab.dataset_offset_of(path):]


def export(pcap: Path, out: Path, keylog: Path) -> dict[str, Path]:
    lab.run_dicomtrace("export", pcap, "-o", out, "--tls-keylog", keylog, "--format", "json")
    return {p.name: p for p in out.rglob("*") if p.suffix in (".dcm", ".partial")}


@pytest.mark.netns
@pytest.mark.parametrize("version", ["TLSv1_2", "TLSv1_3"])
def test_loss_and_reordering(work, pki, files, version):
    d = work / f"lossy-{version}"
    d.mkdir(exist_ok=True)
    pcap, keylog = d / "lossy.pcap", d / "keys.log"
    port = 2762
    with lab.NetnsPair(mtu=1500, loss=LOSS, reorder_percent=5.0, reorder_src="a") as net:
        with lab.Capture(pcap, net.if_a, f"tcp port {port}", netns=net.ns_a):
            with lab.StoreSCP(d / "rx", port, netns=net.ns_b, log_dir=d, extra_args=[
                    "+tls", str(pki.server.key), str(pki.server.cert), "+cf", str(pki.ca.cert), "-ic", "+B"]) as scp:
                res = lab.run([sys.executable, HERE / "tls_lab.py", "store", net.ip_b, port,
                               pki.ca.cert.parent, keylog, version, *files], netns=net.ns_a, timeout=120)
        counters = net.nft_counters("a") + net.nft_counters("b")
    assert json.loads(res.stdout) == [0] * len(files)
    doc = analyze(pcap, "--tls-keylog", keylog)
    [t] = doc["tls_connections"]
    assert t["decrypted"] and t["decrypt_failures"] == {"client": 0, "server": 0}, t
    assert t["gaps"] == []
    assert t["version"] == version.replace("TLSv1_", "TLS 1.")
    [a] = doc["associations"]
    assert [o["status"] for o in a["operations"]] == [0] * (len(files) + 1)
    tcp = a["tcp"]
    resent = tcp["client_to_server"]["retransmitted_segments"] + tcp["server_to_client"]["retransmitted_segments"]
    assert resent > 0, counters  # the loss really happened
    got = export(pcap, d / "export", keylog)
    assert sorted(hashlib.sha256(dataset(p)).hexdigest() for p in got.values()) == \
        sorted(hashlib.sha256(dataset(p)).hexdigest() for p in scp.received())


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3], ids=["tls12", "tls13"])
def test_capture_gap(work, pki, files, version):
    d = work / f"gap-{version.name}"
    d.mkdir(exist_ok=True)
    pcap, keylog = d / "full.pcap", d / "keys.log"
    sctx = tls_lab.server_context(pki, version=version,
                                  ciphers="ECDHE-RSA-AES128-GCM-SHA256" if version == ssl.TLSVersion.TLSv1_2 else None)
    with lab.PynetdicomSCP(HOST, ssl_context=sctx, output_dir=d / "rx") as scp:
        with lab.Capture(pcap, "lo", f"tcp port {scp.port}"):
            statuses = tls_lab.tls_store("127.0.0.1", scp.port, files,
                                         tls_lab.client_context(pki, keylog=keylog, version=version, cert=False),
                                         max_pdu=16382)
    assert statuses == [0] * len(files)
    full = analyze(pcap, "--tls-keylog", keylog)
    [a] = full["associations"]
    big = a["operations"][2]  # the 900 KB MR
    # a client segment well inside the big object's data set
    rows = lab._tcp_frames(pcap, "tcp.len > 1000", extra_fields=["tcp.len"])
    client_port = a["requestor"]["port"]
    inside = [r[0] for r in rows if r[3] == client_port
              and big["request_frame"] < r[0] < big["request_last_frame"]]
    assert len(inside) >= 3, rows
    victim = inside[len(inside) // 2]
    cut = lab.editcap(pcap, d / "gap.pcap", "-F", "pcap", frames=[victim])

    doc = analyze(cut, "--tls-keylog", keylog)
    [t] = doc["tls_connections"]
    [gap] = t["gaps"]
    assert gap["sender"] == "client" and gap["decryption_resumed"] is True, gap
    assert gap["records_lost"] is not None and gap["records_lost"] >= 1
    [a2] = doc["associations"]
    assert [o["status"] for o in a2["operations"]] == [0] * (len(files) + 1)
    assert [o["complete"] for o in doc["objects"]] == [True, False, True]
    assert "tcp-data-missing" in {f["code"] for f in doc["findings"]}
    got = export(cut, d / "export", keylog)
    whole = {hashlib.sha256(dataset(p)).hexdigest() for p in got.values() if p.suffix == ".dcm"}
    originals = {hashlib.sha256(dataset(Path(f))).hexdigest() for f in files}
    assert len(whole) == 2 and whole <= originals
    assert len([p for p in got.values() if p.suffix == ".partial"]) == 1
    text = lab.run_dicomtrace("analyze", cut, "--tls-keylog", keylog).stdout.decode()
    text = " ".join(text.split())  # (the terminal wraps its lines where their lengths say)
    assert "decryption resumed" in text
