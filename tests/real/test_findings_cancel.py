"""dimse-cancelled: findscu --cancel 1 against a pynetdicom C-FIND SCP that honours C-CANCEL
(final status 0xFE00), and its clean counterpart (the same query run to the end)."""

from __future__ import annotations

import json
import time

import lab


def find_scp(port: int):
    from pydicom.dataset import Dataset
    from pynetdicom import AE, evt
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

    def on_find(event):
        for i in range(20):
            if event.is_cancelled:
                yield 0xFE00, None
                return
            ds = Dataset()
            ds.QueryRetrieveLevel = "STUDY"
            ds.PatientID = f"P{i}"
            ds.StudyInstanceUID = f"1.2.3.{i}"
            time.sleep(0.05)
            yield 0xFF00, ds
        yield 0x0000, None

    ae = AE(ae_title="FINDSCP")
    ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
    return ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_FIND, on_find)])


def run_find(tmp_path, name, extra):
    port = lab.free_port()
    pcap = tmp_path / f"{name}.pcap"
    server = find_scp(port)
    try:
        with lab.Capture(pcap, "lo", f"tcp port {port}"):
            lab.run([lab.dcmtk("findscu"), "-S", "-aec", "FINDSCP", "-k", "QueryRetrieveLevel=STUDY",
                     "-k", "PatientID=", "-k", "StudyInstanceUID=", *extra, "127.0.0.1", str(port)],
                    timeout=60, check=False)
    finally:
        server.shutdown()
    res = lab.run_dicomtrace("analyze", str(pcap), "--format", "json", "--port", str(port))
    return json.loads(res.stdout)


def test_cancelled_find_is_a_note_naming_the_cancel(tmp_path):
    doc = run_find(tmp_path, "cancel", ["--cancel", "1"])
    (a,) = doc["associations"]
    (op,) = a["operations"]
    assert op["command"] == "C-FIND" and op["status"] == 0xFE00 and op["status_category"] == "cancel"
    assert op.get("cancel_frame"), "the C-CANCEL-RQ frame is recorded"
    (f,) = [f for f in doc["findings"] if f["code"] == "dimse-cancelled"]
    assert f["severity"] == "note" and f["association"] == a["id"]
    assert (op.get("response_last_frame") or op["response_frame"]) in f["frames"]
    assert "0xFE00" in f["message"]
    assert not [f for f in doc["findings"] if f["severity"] in ("error", "warning")]


def test_find_run_to_the_end_is_not_cancelled(tmp_path):
    doc = run_find(tmp_path, "full", [])
    (a,) = doc["associations"]
    (op,) = a["operations"]
    assert op["status"] == 0 and op["matches"] == 20
    assert "dimse-cancelled" not in {f["code"] for f in doc["findings"]}
