"""Issue #12: the record walk in strides and the plain walk read every capture alike.

Every shared, public and golden lab capture (and the bench capture, when it has been built)
is read with DICOMTRACE_WALK_PATH=stride (the default) and =record (one Python step per
record, the reference): the batches (first frame, offsets, lengths, times, the frames'
bytes), the frame count and the problems must be identical, and so must the count pass of
dicomtrace.parallel (whole file and half of it) on the plain pcap files.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from dicomtrace.capture import CaptureError, open_capture
from dicomtrace.parallel import count_records

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "golden"))
import make as golden  # noqa: E402

CAPTURES = dict(golden.captures())
BENCH = Path(__file__).resolve().parents[2] / "bench" / "data" / "store-1g.pcap"
if BENCH.is_file():
    CAPTURES["bench/store-1g.pcap"] = BENCH


def read(path: Path, walk: str, monkeypatch):
    """The batches of a read with the given walk, one at a time; then the reader."""
    monkeypatch.setenv("DICOMTRACE_WALK_PATH", walk)
    try:
        reader = open_capture(str(path))
    except CaptureError as e:
        yield ("refused", str(e))
        return
    for b in reader.batches():
        yield (b.first_frame, b.offsets.tolist(), b.caplens.tolist(), b.origlens.tolist(),
               b.times.tolist(), b.linktypes.tolist(),
               bytes(b.data[b.offsets[0]:b.offsets[-1] + b.caplens[-1]]) if len(b) else b"")
    reader.close()
    yield ("end", reader.frames, reader.problems, reader.first_time, reader.last_time)


@pytest.mark.parametrize("name", sorted(CAPTURES))
def test_stride_walk_reads_as_the_plain_walk(name, monkeypatch):
    path = CAPTURES[name]
    stride = read(path, "stride", monkeypatch)
    plain = read(path, "record", monkeypatch)
    n = 0
    while True:  # a batch of each at a time: the bench capture is never held whole
        a = next(stride, None)
        b = next(plain, None)
        assert a == b, f"{name}: batch {n} differs"
        if a is None:
            break
        n += 1
    assert n > 1
    if path.suffix != ".pcap":
        return
    size = os.path.getsize(path)
    for stop in (size, size // 2):
        got = []
        for walk in ("stride", "record"):
            monkeypatch.setenv("DICOMTRACE_WALK_PATH", walk)
            got.append(count_records(str(path), 24, stop))
        assert got[0] == got[1], f"{name}: the count pass to {stop} differs"
