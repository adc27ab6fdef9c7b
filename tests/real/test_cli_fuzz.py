"""Issue #10: mutation fuzzing of whole captures through the command line, kept as a
property test.

Mutants of small real captures (tests/golden/captures/echo.pcap, status.pcap: dcmtk and
pynetdicom peers on loopback) go through ``analyze --format json``, ``export`` and
``report`` (the command line's own entry point, in-process, so a run costs milliseconds,
not an interpreter start-up). Mutations:

* truncation of the file at any byte;
* bit flips in DICOM payload bytes (TCP payload of a record);
* hostile PDU lengths (0, 1, 5, 0xFFFFFFFF, random) written over a PDU header at the
  start of a TCP payload, and hostile item lengths (the first item of an
  A-ASSOCIATE-RQ/AC, the first PDV item of a P-DATA-TF);
* damaged record headers: captured length 0, huge, or a wrong original length, and a
  timestamp far in the past or future.

Properties: the exit code is 0, 1 or 2; no traceback, no "internal error" and no Python
warning on standard error (nor any warning raised inside); the JSON is valid against
the contract shipped with the program; every association that ended before the first
damaged record is still reported (same endpoints, AE titles and outcome).

Hypothesis runs derandomized without an example database (CI sees the same examples
every time), bounded to keep the test to well under a minute; set
DICOMTRACE_FUZZ_EXAMPLES=N and DICOMTRACE_FUZZ_RANDOM=1 for a longer random hunt.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import struct
import tempfile
import warnings
from pathlib import Path

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lab
from dicomtrace.cli import main
from dicomtrace.schema import analysis_schema

CAPTURES = [lab.REPO_ROOT / "tests" / "golden" / "captures" / n for n in ("echo.pcap", "status.pcap")]
EXAMPLES = int(os.environ.get("DICOMTRACE_FUZZ_EXAMPLES", "40"))
HOSTILE_LENGTHS = (0, 1, 5, 6, 0x7FFFFFFF, 0xFFFFFFFF)
PDU_TYPES = range(1, 8)

SETTINGS = settings(max_examples=EXAMPLES, deadline=None, database=None,
                    derandomize=not os.environ.get("DICOMTRACE_FUZZ_RANDOM"),
                    suppress_health_check=list(HealthCheck))


def tcp_payload(data: bytes) -> tuple[int, int] | None:
    """(offset, length) of the TCP payload of an Ethernet/IPv4 or IPv6 frame, or None."""
    if len(data) < 14:
        return None
    etype = struct.unpack(">H", data[12:14])[0]
    if etype == 0x0800 and len(data) >= 34:
        ihl = (data[14] & 0x0F) * 4
        if data[23] != 6:
            return None
        tcp = 14 + ihl
    elif etype == 0x86DD and len(data) >= 54:
        if data[20] != 6:
            return None
        tcp = 54
    else:
        return None
    if len(data) < tcp + 20:
        return None
    start = tcp + (data[tcp + 12] >> 4) * 4
    return (start, len(data) - start) if start < len(data) else None


class Original:
    """A capture, its records, and what the unmutated capture's analysis says."""

    def __init__(self, path: Path):
        self.path = path
        self.raw = path.read_bytes()
        self.hdr, self.recs = lab.read_pcap(path)
        self.offsets = []  # file offset of each record header
        off = 24
        for (_h, data) in self.recs:
            self.offsets.append(off)
            off += 16 + len(data)
        self.payloads = [(i, p) for i, (_h, d) in enumerate(self.recs) if (p := tcp_payload(d))]
        self.doc = run_analyze(path)[1]

    def time_of(self, index: int) -> float:
        (sec, frac, _i, _o), _d = self.recs[index]
        return sec + frac / (1e9 if self.hdr["nano"] else 1e6)

    def ended_before(self, index: int) -> list[tuple]:
        """Associations whose last packet precedes record ``index`` (0-based)."""
        t = self.time_of(index) if index < len(self.recs) else float("inf")
        return [assoc_key(a) for a in self.doc["associations"] if a["end_time"] < t]


def assoc_key(a: dict) -> tuple:
    return (a["requestor"]["ip"], a["requestor"]["port"], a["acceptor"]["ip"],
            a["acceptor"]["port"], a["calling_ae"], a["called_ae"], a["outcome"])


def run_cli(*argv) -> tuple[int, str, str, list]:
    out, err = io.StringIO(), io.StringIO()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for cat in (DeprecationWarning, PendingDeprecationWarning, ResourceWarning):
            warnings.simplefilter("ignore", cat)  # not shown to users by default
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main([str(a) for a in argv])
            except SystemExit as e:
                code = e.code
    return code, out.getvalue(), err.getvalue(), list(caught)


def check_clean(code, err: str, caught: list, what: str) -> None:
    assert code in (0, 1, 2), f"{what}: exit {code}\n{err}"
    assert "Traceback" not in err and "internal error" not in err, f"{what}:\n{err}"
    assert not caught, f"{what}: warnings {[str(w.message) for w in caught]}"
    assert "Warning" not in err, f"{what}:\n{err}"
    for line in err.splitlines():  # problems are one line each, naming where
        assert line.strip(), f"{what}: blank line on stderr:\n{err}"


def run_analyze(path) -> tuple[int, dict | None]:
    code, out, err, caught = run_cli("analyze", path, "--format", "json")
    check_clean(code, err, caught, f"analyze {path}")
    if code == 2:
        return code, None
    doc = json.loads(out)
    jsonschema.validate(doc, analysis_schema())
    return code, doc


def mutant(draw, originals: list[Original]):
    """(capture index, mutated bytes, index of the first damaged record, what was done)."""
    k = draw(st.integers(0, len(originals) - 1))
    o = originals[k]
    kind = draw(st.sampled_from(["truncate", "flip", "pdu-length", "item-length", "record-header"]))
    raw = bytearray(o.raw)
    if kind == "truncate":
        cut = draw(st.integers(25, len(raw) - 1))
        first = next((i for i, off in enumerate(o.offsets) if off + 16 + len(o.recs[i][1]) > cut),
                     len(o.recs))
        return k, bytes(raw[:cut]), first, f"truncate at {cut}"
    if kind in ("flip", "pdu-length", "item-length"):
        cands = o.payloads
        if kind != "flip":
            cands = [(i, p) for i, p in cands if o.recs[i][1][p[0]] in PDU_TYPES and p[1] >= 6]
        i, (start, length) = draw(st.sampled_from(cands))
        base = o.offsets[i] + 16 + start
        if kind == "flip":
            flips = draw(st.lists(st.tuples(st.integers(0, length - 1), st.integers(0, 7)),
                                  min_size=1, max_size=8))
            for pos, bit in flips:
                raw[base + pos] ^= 1 << bit
            return k, bytes(raw), i, f"flip bits {flips} in record {i + 1}"
        value = draw(st.one_of(st.sampled_from(HOSTILE_LENGTHS), st.integers(0, 0xFFFFFFFF)))
        pdu_type = o.recs[i][1][start]
        if kind == "pdu-length":
            raw[base + 2:base + 6] = struct.pack(">I", value)
            return k, bytes(raw), i, f"PDU length {value:#x} in record {i + 1}"
        # item length: the first item of an A-ASSOCIATE-RQ/AC (after 68 bytes of fixed fields),
        # or the first PDV item of a P-DATA-TF
        pos = 74 + 2 if pdu_type in (1, 2) else 6
        width = 2 if pdu_type in (1, 2) else 4
        if length < pos + width:
            pos, width = 2, 4
        raw[base + pos:base + pos + width] = value.to_bytes(4, "big")[-width:]
        return k, bytes(raw), i, f"item length {value:#x} in record {i + 1} (PDU type {pdu_type})"
    i = draw(st.integers(0, len(o.recs) - 1))
    off = o.offsets[i]
    e = o.hdr["endian"]
    field = draw(st.sampled_from(["incl0", "incl-huge", "orig", "time"]))
    if field == "incl0":
        raw[off + 8:off + 12] = struct.pack(e + "I", 0)
    elif field == "incl-huge":
        raw[off + 8:off + 12] = struct.pack(e + "I", draw(st.integers(len(raw), 0xFFFFFFFF)))
    elif field == "orig":
        raw[off + 12:off + 16] = struct.pack(e + "I", draw(st.integers(0, 0xFFFFFFFF)))
    else:
        raw[off:off + 4] = struct.pack(e + "I", draw(st.sampled_from([0, 1, 0x7FFFFFFF, 0xFFFFFFFF])))
    return k, bytes(raw), i, f"record {i + 1} header: {field}"


@pytest.fixture(scope="module")
def originals() -> list[Original]:
    return [Original(p) for p in CAPTURES]


@SETTINGS
@given(data=st.data())
def test_mutated_captures_through_the_command_line(originals, data):
    k, raw, first_damaged, what = mutant(data.draw, originals)
    report = data.draw(st.integers(0, 3))
    o = originals[k]
    with tempfile.TemporaryDirectory(prefix="dt-fuzz-") as d:
        path = Path(d) / "mutant.pcap"
        path.write_bytes(raw)
        code, doc = run_analyze(path)
        if code != 2:
            reported = {assoc_key(a) for a in doc["associations"]}
            lost = [key for key in o.ended_before(first_damaged) if key not in reported]
            assert not lost, f"{what}: associations that ended before the damage are gone: {lost}"
        code, _out, err, caught = run_cli("export", path, "-o", Path(d) / "out")
        check_clean(code, err, caught, f"export ({what})")
        if report == 0:  # the report is the slowest: one mutant in four
            code, _out, err, caught = run_cli("report", path, "-o", Path(d) / "r.html")
            check_clean(code, err, caught, f"report ({what})")


def test_unmutated_captures_are_clean(originals):
    for o in originals:
        assert o.doc["associations"], o.path
        assert o.ended_before(len(o.recs)) == [assoc_key(a) for a in o.doc["associations"]]
