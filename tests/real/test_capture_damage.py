"""Damaged pcap records (issue #10): one bad record header in the middle of a file loses that
record and nothing after it.

Hand-damaged copies of the loopback store capture (tests/conftest.py): a record whose captured
length is zeroed (its data would be read as the next header: on loopback the zero MAC addresses
make a header at time 0), one whose fraction of a second is impossible, one whose time is zeroed.
Read in process with small chunks too, so that damage also falls next to chunk boundaries; the
frames delivered must be exactly the original's without the damaged record.
"""

from __future__ import annotations

import json
import struct

import pytest

import lab
from dicomtrace.capture import open_capture


def records(data: bytes) -> list[int]:
    """Offsets of the record headers of a little-endian pcap."""
    offs, pos = [], 24
    while pos + 16 <= len(data):
        offs.append(pos)
        pos += 16 + struct.unpack_from("<I", data, pos + 8)[0]
    return offs


def frames(path, chunk_size: int = 4 << 20):
    reader = open_capture(str(path), chunk_size=chunk_size)
    out = []
    for b in reader.batches():
        for o, c, t in zip(b.offsets.tolist(), b.caplens.tolist(), b.times.tolist()):
            out.append((bytes(b.data[o:o + c]), round(t, 6)))
    reader.close()
    return out, reader.problems


def damage(data: bytes, at: int, how: str) -> bytes:
    out = bytearray(data)
    if how == "caplen-zero":
        struct.pack_into("<I", out, at + 8, 0)
    elif how == "bad-fraction":
        struct.pack_into("<I", out, at + 4, 0xFFFFFFF0)
    elif how == "time-zero":
        struct.pack_into("<I", out, at, 0)
    return bytes(out)


@pytest.mark.parametrize("how", ["caplen-zero", "bad-fraction", "time-zero"])
@pytest.mark.parametrize("chunk_size", [4 << 20, 1 << 16])
def test_damaged_record_loses_only_itself(store_capture, tmp_path, how, chunk_size):
    data = store_capture.pcap.read_bytes()
    assert data[:4] == b"\xd4\xc3\xb2\xa1", "the lab writes little-endian pcap"
    offs = records(data)
    whole, problems = frames(store_capture.pcap, chunk_size)
    assert problems == [] and len(whole) == len(offs)
    # damage records in the middle, at data segments and ACKs, and near 64 KiB boundaries
    picks = sorted({len(offs) // 2, len(offs) // 2 + 1, len(offs) // 3}
                   | {next(i for i, o in enumerate(offs) if o > b) for b in (1 << 16, 5 << 16)})
    for k in picks:
        path = tmp_path / f"{how}-{k}.pcap"
        path.write_bytes(damage(data, offs[k], how))
        got, problems = frames(path, chunk_size)
        assert len(problems) == 1, (k, problems)
        assert problems[0].frame == k + 1 and problems[0].offset == offs[k], (k, problems[0])
        assert got == whole[:k] + whole[k + 1:], f"record {k} ({how}): {len(got)} frames of {len(whole) - 1}"


def test_damaged_capture_reads_as_the_capture_without_that_record(dicomtrace_cli, store_capture, tmp_path):
    """Through the command line: conversations of the damaged copy equal those of the copy with
    that record deleted by editcap (frames after it numbered without it), and a problem says where."""
    data = store_capture.pcap.read_bytes()
    offs = records(data)
    k = len(offs) // 2
    damaged = tmp_path / "damaged.pcap"
    damaged.write_bytes(damage(data, offs[k], "caplen-zero"))
    deleted = lab.editcap(store_capture.pcap, tmp_path / "deleted.pcap", "-F", "pcap", frames=[k + 1])
    res = lab.run_dicomtrace("conversations", damaged, "--format", "json", check=False)
    assert res.returncode == 1, res.stderr  # the capture had a problem (README: exit codes)
    a, b = json.loads(res.stdout), lab.run_conversations(deleted)
    problems = a["capture"].pop("problems")
    assert len(problems) == 1 and problems[0]["frame"] == k + 1, problems
    assert b["capture"].pop("problems") == []
    for doc in (a, b):
        doc["capture"].pop("path")
    assert a["capture"] == b["capture"]
    assert a["connections"] == b["connections"]
    assert b"Traceback" not in res.stderr and len(res.stderr.splitlines()) == 1, res.stderr


def test_file_cut_shorter_while_read_is_read_to_its_new_end(store_capture, tmp_path):
    """A ring buffer's oldest file is truncated and rewritten by a running tcpdump -W: a
    file that shrinks while it is read (through memory maps) is read up to its new end and
    that is said, instead of the process dying of SIGBUS or reading past the end."""
    data = store_capture.pcap.read_bytes()
    offs = records(data)
    path = tmp_path / "ring0"
    path.write_bytes(data)
    cut = offs[len(offs) // 2]  # the new end: a record boundary, well after the first buffer
    assert cut > 3 << 16
    reader = open_capture(str(path), chunk_size=1 << 16)
    n = 0
    for i, b in enumerate(reader.batches()):
        if i == 0:
            with open(path, "r+b") as f:
                f.truncate(cut)
        n += len(b.offsets)
    reader.close()
    assert [p.severity for p in reader.problems] == ["error"]
    assert "shrank" in reader.problems[0].message
    assert n == len(offs) // 2
