"""correlate.logs: line formats and association blocks, fed in-process."""

from __future__ import annotations

import calendar

from dicomtrace.correlate.logs import _blocks, parse_line, read_log


def test_line_formats():
    t, level, text = parse_line("2026-12-01 07:29:05,957 INFO: Accepting Association", 2026)
    assert (t, level, text) == (calendar.timegm((2026, 12, 1, 7, 29, 5)) + 0.957, "I",
                                "Accepting Association")
    t, level, text = parse_line("2026-12-01 07:29:05.957 D: Message ID                    : 1", 2026)
    assert level == "D" and text.startswith("Message ID")
    # Orthanc (glog): no year in the line, the capture's is used
    t, level, text = parse_line("W1201 07:29:05.123456 CommandDispatcher.cpp:490] Association "
                                "Received from AET MODALITY on IP 127.0.0.1", 2026)
    assert t == calendar.timegm((2026, 12, 1, 7, 29, 5)) + 0.123456 and level == "W"
    assert text.startswith("Association Received from AET MODALITY")
    assert parse_line("I: Association Received", 2026) == (None, "I", "Association Received")
    assert parse_line("plain text", 2026) == (None, None, "plain text")


def _cut(text: str):
    from dicomtrace.correlate.logs import LogLine

    raws = text.strip("\n").splitlines()
    lines = [LogLine("x.log", i, r, None) for i, r in enumerate(raws, 1)]
    return _blocks(lines, [parse_line(r, 2026)[2].strip() for r in raws])


def test_dcmtk_blocks_operations_and_trailing_dump():
    blocks = _cut("""
D: $dcmtk: dcmqrscp v3.6.7 $
D: Association Received: localhost
I: Association Received (localhost:FINDSCU -> QRSCP)
I: Association Acknowledged (Max Send PDV: 16372)
I: Message ID                    : 1
I: Find SCP Response 1 [status: Pending]
I: Association Release
D: Association Received: localhost
I: Association Received (localhost:ECHOSCU -> WRONGAE)
I: Refusing Association (BadAEService)
D: Reject Parameters:
D: ====================== OUTGOING A-ASSOCIATE-RJ PDU ======================
D: Result: Rejected Permanent
D: ======================= END A-ASSOCIATE-RJ PDU =======================
D: Cleaned up after child (1234)
""")
    assert [(b.role, b.calling, b.called, b.outcome) for b in blocks] == [
        ("acceptor", "FINDSCU", "QRSCP", "released"), ("acceptor", "ECHOSCU", "WRONGAE", "rejected")]
    assert [e[:2] for e in blocks[0].events] == [("start", None), ("accept", None), ("request", 1),
                                               ("release", None)]
    # the RJ dump printed after the refusal belongs to it; the line after does not
    assert [x.number for x in blocks[1].lines] == list(range(8, 15))


def test_orthanc_and_pynetdicom_requestor_blocks():
    blocks = _cut("""
I1201 07:29:05.100000 CommandDispatcher.cpp:490] Association Received from AET MODALITY on IP 127.0.0.1
I1201 07:29:05.101000 CommandDispatcher.cpp:688] Association Acknowledged (Max Send PDV: 16372)
I1201 07:29:05.102000 StoreScp.cpp:320] Received Store Request (MsgID 7, CT)
E1201 07:29:05.103000 FilesystemStorage.cpp:130] Cannot write: disk full
I1201 07:29:05.104000 CommandDispatcher.cpp:900] Association Release
2026-12-01 07:29:06,000 I: Requesting Association
2026-12-01 07:29:06,010 I: Association Accepted
2026-12-01 07:29:06,020 I: Aborting Association
""")
    assert [(b.role, b.calling, b.outcome) for b in blocks] == [("acceptor", "MODALITY", "released"),
                                                               ("requestor", None, "aborted")]
    assert ("request", 7) in [e[:2] for e in blocks[0].events]


def test_read_log_skips_blank_lines_and_decides_timed(tmp_path):
    p = tmp_path / "a.log"
    p.write_bytes(b"2026-12-01 07:29:06,000 I: Requesting Association\n\n\xff garbage\n"
                  b"2026-12-01 07:29:06,010 I: Association Accepted\n")
    log = read_log(str(p), 2026)
    assert log.timed and [x.number for x in log.lines] == [1, 3, 4] and len(log.blocks) == 1
