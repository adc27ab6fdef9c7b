"""`--log FILE` on analyze and report: the peers' own logs beside the wire.

One loopback capture, three servers each writing its log: dcmtk storescp -v (no timestamps)
receives two C-STOREs; dcmtk dcmqrscp -d (no timestamps) refuses an association for a wrong
called AE title, answers a C-FIND and refuses a C-MOVE to an unknown destination (0xA801);
a pynetdicom SCP logs at debug level through Python logging with timestamps SHIFT seconds
ahead of the capture's clock, answers the second C-STORE 0xA700 after logging "disk full",
and rejects an association for a wrong called AE title.

Referee: what each line itself says (the AE titles it names, the Message ID it names) and
what the generating side knows (which association came from which tool).
"""

from __future__ import annotations

import json
import logging
import re
import time

import pytest

import lab
import scenarios as sc
from test_analyze_real import validate

SHIFT = 7.0  # s: the pynetdicom log's clock ahead of the capture's
SCU_SHIFT = -4.5  # s: the storescu log's clock (dcmtk with timestamps) behind it
DCMTK_TIMED = """log4cplus.rootLogger = INFO, console
log4cplus.appender.console = log4cplus::ConsoleAppender
log4cplus.appender.console.layout = log4cplus::PatternLayout
log4cplus.appender.console.layout.ConversionPattern = %D{%Y-%m-%d %H:%M:%S.%q} %5p: %m%n
"""


def shift_times(text: str, seconds: float) -> str:
    """The log as a clock ``seconds`` off would have written it (local times, as dcmtk writes)."""
    import datetime as dt

    def moved(m):
        t = dt.datetime.strptime(m.group(0), "%Y-%m-%d %H:%M:%S.%f") + dt.timedelta(seconds=seconds)
        return t.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    return re.sub(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}", moved, text, flags=re.M)


def dicomtrace(*args):
    res = lab.run_dicomtrace(*args, check=False)
    return res.returncode, res.stdout.decode(), res.stderr.decode()


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    from pynetdicom import AllStoragePresentationContexts, evt

    d = lab.work_dir(tmp_path_factory, "logs")
    files = lab.make_dicom_files(d / "f", [lab.DicomSpec("CT", 30_000, seed=i) for i in range(2)])
    db = sc.index_into_db(files[:1], d / "db")
    st, qr, py = lab.free_port(), lab.free_port(), lab.free_port()
    cfg = sc.write_dcmqrscp_config(d / "dcmqrscp.cfg", qr, db, "QRSCP", {"STORESCP": st})
    (d / "logger.cfg").write_text(DCMTK_TIMED)
    log = logging.getLogger("pynetdicom")
    handler = logging.FileHandler(d / "pynetdicom.log", mode="w")
    fmt = logging.Formatter("%(asctime)s.%(msecs)03d %(levelname).1s: %(message)s",
                            "%Y-%m-%d %H:%M:%S")
    fmt.converter = lambda t: time.gmtime(t + SHIFT)
    handler.setFormatter(fmt)
    level = log.level
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    stores = []

    def on_store(event):
        stores.append(event.request.MessageID)
        if len(stores) == 2:
            log.error("Cannot write %s: disk full", event.request.AffectedSOPInstanceUID)
            return 0xA700
        return 0x0000

    ae = sc.pyae("ARCHIVE")
    ae.require_called_aet = True
    for cx in AllStoragePresentationContexts:
        ae.add_supported_context(cx.abstract_syntax)

    def tool(name, *args):
        return lab.run([lab.dcmtk(name), "-v", "-to", "20", "-ta", "20", "-td", "20",
                        *map(str, args), sc.LOOPBACK, str(qr)], timeout=60, check=False)

    try:
        with lab.Capture(d / "logs.pcap", "lo", sc.bpf_ports(st, qr, py)):
            with lab.StoreSCP(d / "rx", st, aet="STORESCP", log_dir=d), \
                    sc.DcmtkPeer("dcmqrscp", ["-d", "-c", cfg, qr], qr, d, "dcmqrscp"), \
                    sc.pyserver(ae, py, [(evt.EVT_C_STORE, on_store)]):
                lab.run_storescu(sc.LOOPBACK, st, [f.path for f in files], aet="MODALITY",
                                 aec="STORESCP")
                assert tool("echoscu", "-aet", "ECHOSCU", "-aec", "WRONGAE").returncode != 0
                assert tool("findscu", "-S", "-aet", "FINDSCU", "-aec", "QRSCP", "-k",
                            "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID").returncode == 0
                tool("movescu", "-S", "-aet", "MOVELOST", "-aec", "QRSCP", "-aem", "NOWHERE", "-k",
                     "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={files[0].study_instance_uid}")
                # the sender's own log, with timestamps (dcmtk -lc), of the 0xA700 transfer
                scu = lab.run_storescu(sc.LOOPBACK, py, [f.path for f in files], aet="MODALITY2",
                                       aec="ARCHIVE", extra_args=["-lc", d / "logger.cfg"],
                                       check=False, verbose=False)
                # and of an association that never reached the wire (nothing listens there)
                refused = lab.run([lab.dcmtk("echoscu"), "-lc", d / "logger.cfg", sc.LOOPBACK,
                                   str(lab.free_port())], timeout=30, check=False)
                lab.run_storescu(sc.LOOPBACK, py, [files[0].path], aet="MODALITY3",
                                 aec="NOTARCHIVE", check=False)
    finally:
        log.removeHandler(handler)
        log.setLevel(level)
        handler.close()
    (d / "storescu.log").write_text(shift_times(
        (scu.stdout + scu.stderr + refused.stdout + refused.stderr).decode(), SCU_SHIFT))
    logs = [d / "storescp.err", d / "dcmqrscp.err", d / "pynetdicom.log", d / "storescu.log"]
    args = [x for p in logs for x in ("--log", p)]
    rc, out, err = dicomtrace("analyze", d / "logs.pcap", *args, "--format", "json")
    assert rc == 0, err
    doc = json.loads(out)
    validate(doc)
    return d, doc, args


def by_calling(doc) -> dict:
    return {a["calling_ae"]: a for a in doc["associations"]}


def test_every_line_about_an_association_lands_on_it(logged):
    d, doc, _ = logged
    a = by_calling(doc)
    assert set(a) == {"MODALITY", "ECHOSCU", "FINDSCU", "MOVELOST", "MODALITY2", "MODALITY3"}
    owner = {}
    for x in doc["associations"]:
        for line in x["log_lines"]:
            owner[(line["source"], line["line"])] = (x, line)
    files = {p.name: p.read_text().splitlines() for p in (d / "storescp.err", d / "dcmqrscp.err",
                                                          d / "pynetdicom.log", d / "storescu.log")}
    # the storescp log is all about the one association it had
    assert sorted(n for s, n in owner if s == "storescp.err") == list(range(1, len(files["storescp.err"]) + 1))
    assert {owner[("storescp.err", n)][0]["calling_ae"] for n in range(1, 8)} == {"MODALITY"}
    checked = 0
    for source, lines in files.items():
        for n, text in enumerate(lines, 1):
            m = (re.search(r"\(localhost:(\S+) -> \S+\)", text)
                 or re.search(r"Calling Application Name:\s+(\S+)", text))
            if m:
                assert owner[(source, n)][0]["calling_ae"] == m.group(1), (source, n, text)
                checked += 1
            m = re.search(r"\(MsgID (\d+)|Message ID\s+: (\d+)$", text)
            if m:
                assert owner[(source, n)][1]["message_id"] == int(m.group(1) or m.group(2)), (source, n)
                checked += 1
    assert checked >= 10
    # what the applications said beside what the wire shows
    refused = [ln for ln in a["ECHOSCU"]["log_lines"] if "Refusing Association" in ln["text"]]
    assert refused and a["ECHOSCU"]["outcome"] == "rejected"
    move = a["MOVELOST"]["operations"][0]
    assert move["command"] == "C-MOVE" and move["status"] == 0xA801
    unknown = [ln for ln in a["MOVELOST"]["log_lines"] if "unknown AE: 'NOWHERE'" in ln["text"]]
    assert [ln["message_id"] for ln in unknown] == [move["message_id"]]
    failed = next(op for op in a["MODALITY2"]["operations"] if op["status"] == 0xA700)
    full = [ln for ln in a["MODALITY2"]["log_lines"] if "disk full" in ln["text"]]
    assert [ln["message_id"] for ln in full] == [failed["message_id"]]
    assert failed["request_time"] - 0.05 <= full[0]["time"] <= failed["response_time"] + 0.05
    # the sender's side of the same failure, from its own (timestamped) log
    sent = [ln for ln in a["MODALITY2"]["log_lines"] if ln["source"] == "storescu.log"]
    assert sent and any("Requesting Association" in ln["text"] for ln in sent)
    rejecting = [ln for ln in a["MODALITY3"]["log_lines"] if "Rejecting Association" in ln["text"]]
    assert rejecting and a["MODALITY3"]["outcome"] == "rejected"


def test_clock_offsets_and_unattached_lines(logged):
    d, doc, _ = logged
    files = {x["source"]: x for x in doc["logs"]["files"]}
    assert abs(files["pynetdicom.log"]["clock_offset"] + SHIFT) < 0.1, files
    assert files["pynetdicom.log"]["associations_matched"] == 2
    assert abs(files["storescu.log"]["clock_offset"] + SCU_SHIFT) < 0.1, files
    assert files["storescu.log"]["associations_matched"] == 1
    assert files["storescu.log"]["associations_found"] == 2  # the echoscu one never got through
    assert files["storescp.err"]["clock_offset"] is None  # no timestamps: aligned by order
    assert files["dcmqrscp.err"]["associations_matched"] == 3
    # dcmqrscp's start-up lines belong to no association on the wire
    rest = doc["logs"]["unattached"]
    assert {x["source"] for x in rest} == {"dcmqrscp.err", "storescu.log"}
    assert any("dcmqrscp v" in x["text"] for x in rest)
    # an association that never reached the wire: the application's word is the evidence
    assert any("Association Request Failed" in x["text"] and x["source"] == "storescu.log"
               for x in rest)
    assert not any("Association" in x["text"] for x in rest if x["source"] == "dcmqrscp.err")
    # corrected times of the timestamped log fall inside their associations
    for a in doc["associations"]:
        for ln in a["log_lines"]:
            if ln["source"] in ("pynetdicom.log", "storescu.log"):
                assert a["start_time"] - 0.05 <= ln["time"] <= a["end_time"] + 0.05


def test_terminal_shows_lines_in_place(logged):
    d, _, args = logged
    rc, out, err = dicomtrace("analyze", d / "logs.pcap", *args)
    assert rc == 0, err
    section = out[out.index("Association 5"):out.index("Association 6")]
    assert "What the peers logged" in section and "disk full" in section
    assert "clock offset -7.0" in out and "no association on the wire" in out


def test_bad_log_arguments(logged, tmp_path):
    d, _, _ = logged
    rc, out, err = dicomtrace("analyze", d / "logs.pcap", "--log", tmp_path / "none.log")
    assert rc == 2 and err.count("\n") == 1 and "none.log" in err
    rc, out, err = dicomtrace("analyze", d / "logs.pcap", "--log", d / "storescp.err", "--redact")
    assert rc == 2 and "--redact" in err


def test_html_report_shows_lines_in_place(logged, tmp_path):
    from test_report_real import Browser, chromium_path

    if chromium_path() is None:
        pytest.skip("chromium not installed")
    d, doc, args = logged
    html = tmp_path / "logs.html"
    rc, out, err = dicomtrace("report", d / "logs.pcap", *args, "-o", html)
    assert rc == 0, err
    b = Browser()
    try:
        page = b.open(html.as_uri())
        found = page.eval("""JSON.stringify(Array.from(document.querySelectorAll('.log-lines')).map(
            div => { let h = div.previousElementSibling; while (h && h.tagName !== 'H3') h = h.previousElementSibling;
                     return {assoc: div.dataset.association, heading: h ? h.id : null,
                             rows: div.querySelectorAll('tbody tr').length, text: div.innerText}; }))""")
        found = json.loads(found)
        assert page.problems() == [], page.problems()
    finally:
        b.close()
    per = {x["assoc"]: x for x in found}
    ids = {a["calling_ae"]: str(a["id"]) for a in doc["associations"]}
    for a in doc["associations"]:
        x = per[str(a["id"])]
        assert x["heading"] == f"a{a['id']}" and x["rows"] == len(a["log_lines"])
    assert "disk full" in per[ids["MODALITY2"]]["text"]
    assert "unknown AE: 'NOWHERE'" in per[ids["MOVELOST"]]["text"]
    assert "none" in per and "dcmqrscp v" in per["none"]["text"]
