"""Issue #10, "counts and words", on real traffic (pynetdicom and dcmtk peers on loopback,
tcpdump) and on the public captures (../shared/captures/public, skipped when absent).

One capture, three associations:

1. storescu sends three CTs to a pynetdicom storage SCP that refuses the first
   (0xA700 out of resources) and stores the other two: "Objects stored" counts 2, the
   refused one beside it (terminal, JSON ``object_counts`` and each object's
   ``outcome``, HTML);
2. a pynetdicom requestor proposes CT Image Storage to an SCP that supports only MR,
   sees the context rejected in the A-ASSOCIATE-AC and aborts: the abort names the
   rejection as its likely cause and is linked to it (``caused_by``);
3. a pynetdicom C-FIND SCP answering an ASCII query that carries no Specific Character
   Set with ISO_IR 100 identifiers: no character set claim.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset

import lab

CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
STUDY_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
PUBLIC = lab.SHARED_CAPTURES / "public"


def cli(*args) -> subprocess.CompletedProcess:
    return lab.run([sys.executable, "-m", "dicomtrace", *map(str, args)], timeout=120,
                   cwd=lab.REPO_ROOT)


@pytest.fixture(scope="module")
def words(tmp_path_factory):
    from pynetdicom import AE, evt

    d = lab.work_dir(tmp_path_factory, "findings-words")
    files = lab.make_dicom_files(d / "files", [lab.DicomSpec(sop="CT", size=8192, name=f"w{i}")
                                               for i in range(3)])
    store_port, mr_port, find_port = lab.free_port(), lab.free_port(), lab.free_port()
    seen = []

    def on_store(event):
        seen.append(event.request.MessageID)
        return 0xA700 if len(seen) == 1 else 0x0000

    def on_find(event):
        ident = Dataset()
        ident.SpecificCharacterSet = "ISO_IR 100"
        ident.QueryRetrieveLevel = "STUDY"
        ident.PatientName = "Someone"
        ident.StudyInstanceUID = "1.2.3.4"
        yield 0xFF00, ident

    scp = AE(ae_title="REFUSER")
    scp.add_supported_context(CT)
    mr_only = AE(ae_title="MRONLY")
    mr_only.add_supported_context(MR)
    finder = AE(ae_title="FINDER")
    finder.add_supported_context(STUDY_FIND)
    servers = []
    pcap = d / "words.pcap"
    bpf = f"tcp port {store_port} or tcp port {mr_port} or tcp port {find_port}"
    try:
        servers.append(scp.start_server(("127.0.0.1", store_port), block=False,
                                        evt_handlers=[(evt.EVT_C_STORE, on_store)]))
        servers.append(mr_only.start_server(("127.0.0.1", mr_port), block=False))
        servers.append(finder.start_server(("127.0.0.1", find_port), block=False,
                                           evt_handlers=[(evt.EVT_C_FIND, on_find)]))
        with lab.Capture(pcap, "lo", bpf):
            lab.run_storescu("127.0.0.1", store_port, [f.path for f in files], aec="REFUSER", extra_args=["--no-halt"],
                             check=False)
            ae = AE(ae_title="NEEDSCT")
            ae.add_requested_context(CT)
            # pynetdicom aborts by itself when the A-ASSOCIATE-AC accepts nothing it asked
            assoc = ae.associate("127.0.0.1", mr_port, ae_title="MRONLY")
            if assoc.is_established:
                time.sleep(0.05)
                assoc.abort()
            assert assoc.is_aborted or not assoc.is_established
            ae = AE(ae_title="ASKER")
            ae.add_requested_context(STUDY_FIND)
            assoc = ae.associate("127.0.0.1", find_port, ae_title="FINDER")
            query = Dataset()
            query.QueryRetrieveLevel = "STUDY"
            query.PatientName = "Someone"
            query.StudyInstanceUID = ""
            assert "SpecificCharacterSet" not in query
            list(assoc.send_c_find(query, STUDY_FIND))
            assoc.release()
    finally:
        for s in servers:
            s.shutdown()
    assert len(seen) == 3, seen
    ports = f"{store_port},{mr_port},{find_port}"
    doc = json.loads(cli("analyze", pcap, "--port", ports, "--format", "json").stdout)
    by_ae = {a["called_ae"]: a for a in doc["associations"]}
    assert set(by_ae) == {"REFUSER", "MRONLY", "FINDER"}, by_ae
    return {"pcap": pcap, "ports": ports, "doc": doc, "by": by_ae, "dir": d}


def of(doc, a, code=None):
    return [f for f in doc["findings"] if f["association"] == a["id"]
            and (code is None or f["code"] == code)]


def test_objects_stored_counts_what_the_receiver_confirmed(words):
    doc, a = words["doc"], words["by"]["REFUSER"]
    assert [op["status"] for op in a["operations"]] == [0xA700, 0, 0]
    assert doc["object_counts"] == {"stored": 2, "refused": 1, "failed": 0, "unanswered": 0,
                                    "incomplete": 0}
    assert [o["outcome"] for o in doc["objects"]] == ["refused", "stored", "stored"]
    out = cli("analyze", words["pcap"], "--port", words["ports"]).stdout.decode()
    (line,) = [x for x in out.splitlines() if x.startswith("Objects stored:")]
    assert line.startswith("Objects stored: 2 in ") and line.endswith("; not stored: 1 refused"), line
    html = words["dir"] / "words.html"
    cli("report", words["pcap"], "--port", words["ports"], "-o", html)
    assert "Objects stored (confirmed by the receiver): 2, 1 refused." in html.read_text()


def test_abort_after_a_rejected_context_names_the_rejection(words):
    doc, a = words["doc"], words["by"]["MRONLY"]
    assert a["outcome"] == "aborted" and a["abort"]["sent_by"] == "requestor"
    assert [pc["result"] for pc in a["presentation_contexts"]] == [3]
    (root,) = of(doc, a, "no-accepted-presentation-context")
    (abort,) = of(doc, a, "association-aborted")
    assert abort["caused_by"] == root["id"] and root["caused_by"] is None
    assert "right after the A-ASSOCIATE-AC" in abort["message"]
    assert "no-accepted-presentation-context" in abort["hint"]
    assert "timeout" not in abort["hint"]  # not the generic requestor-abort advice
    # the root comes first, its consequence right after it
    ids = [f["id"] for f in doc["findings"]]
    assert ids.index(abort["id"]) == ids.index(root["id"]) + 1
    out = cli("analyze", words["pcap"], "--port", words["ports"]).stdout.decode()
    lines = out.splitlines()
    i = next(n for n, x in enumerate(lines) if "no-accepted-presentation-context" in x)
    assert any("association-aborted" in x and x.startswith("    └ ") for x in lines[i + 1:i + 20])


def test_ascii_query_without_character_set_gets_no_character_set_claim(words):
    doc, a = words["doc"], words["by"]["FINDER"]
    (op,) = a["operations"]
    assert op["command"] == "C-FIND" and op["status"] == 0 and op["matches"] == 1
    for f in of(doc, a, "cfind-key-mismatch"):
        assert "Character Set" not in f["message"], f


def test_public_figure16_has_no_character_set_claim():
    path = PUBLIC / "Figure16_captured_packet.pcapng"
    if not path.exists():
        pytest.skip(f"{path} absent")
    doc = json.loads(cli("analyze", path, "--format", "json").stdout)
    assert not [f for f in doc["findings"] if "Character Set" in f["message"]]


def test_public_figure10e_counts_every_refused_attempt():
    path = PUBLIC / "Figure10_(e).pcapng"
    if not path.exists():
        pytest.skip(f"{path} absent")
    doc = json.loads(cli("analyze", path, "--format", "json").stdout)  # no --port 40404
    (f,) = [f for f in doc["findings"] if f["code"] == "connection-refused"]
    assert f["details"] == {"client": "127.0.0.1", "server": "127.0.0.1", "port": 40404,
                            "attempts": 5}
    assert f["message"].startswith("5 connection attempt(s)")
    # tshark as referee: five SYNs to 40404 answered by RST before the association
    out = lab.tshark("-n", "-r", str(path), "-Y", "tcp.dstport == 40404 && tcp.flags.syn == 1 "
                     "&& tcp.flags.ack == 0", "-T", "fields", "-e", "frame.number")
    assert len(out.split()) == 6  # five refused, then the association's SYN


def test_unanswered_request_whose_data_set_never_arrived_does_not_blame_the_responder():
    """tests/golden/captures/abort.pcap (make_captures.py): C-STOREs cut off by aborts
    (either side) and by a reset in the middle of their data sets."""
    path = lab.REPO_ROOT / "tests" / "golden" / "captures" / "abort.pcap"
    doc = json.loads(cli("analyze", path, "--format", "json").stdout)
    by_id = {f["id"]: f for f in doc["findings"]}
    cut = [f for f in doc["findings"] if f["code"] == "request-unanswered"
           and f.get("details", {}).get("request_incomplete")]
    assert len(cut) >= 2, [f["code"] for f in doc["findings"]]
    for f in cut:
        assert f["severity"] == "warning"
        assert "never fully reached the acceptor" in f["message"]
        assert "hung" not in f["hint"] and "crashed" not in f["hint"]
        root = by_id[f["caused_by"]]
        assert root["code"] in ("association-aborted", "tcp-reset"), root
        incomplete = [g for g in doc["findings"] if g["code"] == "object-incomplete"
                      and g["association"] == f["association"]]
        assert incomplete and all(g["caused_by"] == root["id"] for g in incomplete)


@pytest.fixture(scope="module")
def odd_bytes(tmp_path_factory):
    """pynetdicom stores a CT whose Study Instance UID has letters in it (invalid for VR UI),
    and echoscu calls with an AE title holding a control byte (0x01): what pydicom would
    warn about, and a label the report's graphs must still draw (plots.label_text)."""
    d = lab.work_dir(tmp_path_factory, "findings-odd-bytes")
    (info,) = lab.make_dicom_files(d / "files", [lab.DicomSpec(sop="CT", size=4096, name="odd")])
    ds = dcmread(info.path)
    ds.StudyInstanceUID = "1.2.840.bad.uid"
    bad = d / "bad-uid.dcm"
    ds.save_as(bad, enforce_file_format=True)
    pcap = d / "odd.pcap"
    with lab.PynetdicomSCP(aet="PYSCP") as scp, lab.StoreSCP(d / "rx", aet="ANY-SCP", log_dir=d) as echo_scp:
        with lab.Capture(pcap, "lo", f"tcp port {scp.port} or tcp port {echo_scp.port}"):
            assert lab.pynetdicom_store("127.0.0.1", scp.port, [bad]) == [0]
            lab.run_echoscu("127.0.0.1", echo_scp.port, aet="CTRL\x01AE", aec="ANY-SCP",
                            check=False)
    return {"pcap": pcap, "ports": f"{scp.port},{echo_scp.port}", "dir": d}


def test_library_warnings_become_findings_not_stderr(odd_bytes):
    pcap, ports = odd_bytes["pcap"], odd_bytes["ports"]
    res = cli("analyze", pcap, "--port", ports, "--format", "json")
    assert res.stderr == b"", res.stderr.decode()
    doc = json.loads(res.stdout)
    (f,) = [f for f in doc["findings"] if f["code"] == "dataset-problem"]
    assert "1.2.840.bad.uid" in f["message"] and f["message_ids"] == [1]
    assert any(a["calling_ae"] and "\x01" in a["calling_ae"] for a in doc["associations"]) or \
        any(g["code"] == "ae-title-anomaly" for g in doc["findings"])
    for args in (("report", pcap, "--port", ports, "-o", odd_bytes["dir"] / "odd.html"),
                 ("export", pcap, "--port", ports, "-o", odd_bytes["dir"] / "export"),
                 ("analyze", pcap, "--port", ports)):
        res = cli(*args)
        assert res.stderr == b"" or b"Warning" not in res.stderr, res.stderr.decode()
        assert b"Warning" not in res.stdout and b"Traceback" not in res.stderr
