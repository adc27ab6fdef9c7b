"""export.part10.write_spans: spans of one buffer written with writev(2), no view per piece."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import textwrap

import pytest

from dicomtrace.export.part10 import write_pieces, write_spans


def spans(seed: int, n: int, size: int = 4 << 20):
    rnd = random.Random(seed)
    buf = rnd.randbytes(size)
    starts, ends, pos = [], [], 0
    for _ in range(n):
        pos += rnd.randrange(0, 80)
        end = min(size, pos + rnd.randrange(0, 1500))
        starts.append(pos)
        ends.append(end)
        pos = end
    return memoryview(buf), starts, ends


def test_spans_are_written_as_their_views(tmp_path):
    for seed, n in ((1, 0), (2, 1), (3, 1023), (4, 1024), (5, 1025), (6, 2500)):
        buf, starts, ends = spans(seed, n)
        path = tmp_path / f"{seed}.bin"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        try:
            write_spans(fd, buf, starts, ends)
        finally:
            os.close(fd)
        assert path.read_bytes() == b"".join(buf[a:b] for a, b in zip(starts, ends))


class Run:
    """What a PDV run hands an exporter: a sequence that can also give its spans."""

    def __init__(self, buf, starts, ends):
        self.args = (buf, starts, ends)

    def spans(self):
        return self.args

    def __iter__(self):
        raise AssertionError("the spans are written without making views")


def test_pieces_that_are_spans_go_to_writev_directly(tmp_path):
    buf, starts, ends = spans(7, 3000)
    fd = os.open(tmp_path / "out", os.O_WRONLY | os.O_CREAT)
    try:
        write_pieces(fd, Run(buf, starts, ends))
    finally:
        os.close(fd)
    assert (tmp_path / "out").read_bytes() == b"".join(buf[a:b] for a, b in zip(starts, ends))


def test_a_short_write_goes_on_with_the_rest_and_then_fails_as_the_system_says(tmp_path):
    """A file size limit (RLIMIT_FSIZE, SIGXFSZ ignored) cuts a writev short: what fits is
    written, in order, and the next write fails with EFBIG, as a full disk would with ENOSPC."""
    script = textwrap.dedent(f"""
        import os, resource, signal, sys
        sys.path.insert(0, {str(os.path.dirname(__file__))!r})
        from test_export_spans import spans
        from dicomtrace.export.part10 import write_spans
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, resource.RLIM_INFINITY))
        buf, starts, ends = spans(8, 1500)
        fd = os.open({str(tmp_path / "cut")!r}, os.O_WRONLY | os.O_CREAT)
        try:
            write_spans(fd, buf, starts, ends)
        except OSError as e:
            print(e.errno, e.strerror)
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    import errno
    assert r.stdout.split()[0] == str(errno.EFBIG), r.stdout
    buf, starts, ends = spans(8, 1500)
    assert (tmp_path / "cut").read_bytes() == b"".join(buf[a:b] for a, b in zip(starts, ends))[:100_000]


@pytest.mark.parametrize("sop_class,sop_instance,ts,ae", [
    ("1.2.840.10008.5.1.4.1.1.2", "1.2.3.4.5", "1.2.840.10008.1.2.1", "STORESCU"),
    ("1.2.840.10008.5.1.4.1.1.2", "1.2.3.4", "1.2.840.10008.1.2", None),  # even lengths, no AE
    ("1.2.840.10008.1.1", "1.2.840.bad.uid", "1.2.840.10008.1.2.1", "A"),  # invalid, but ASCII
    ("1.2", "1." + "2" * 62, "1.2.840.10008.1.2.4.50", "SIXTEEN_CHARS_AE"),  # 64 characters
    ("1.2", "1." + "2" * 70, "1.2.840.10008.1.2.1", None),  # too long: pydicom's way
    ("1.2", "1.2.ä", "1.2.840.10008.1.2.1", None),  # not ASCII: pydicom's way
])
def test_file_meta_is_what_pydicom_writes(sop_class, sop_instance, ts, ae):
    """PS3.10 7.1: the file meta information encoded here is byte for byte pydicom's
    write_file_meta_info (with the standard's required elements), and reads back."""
    import io
    import warnings

    import pydicom

    from dicomtrace.export.part10 import _pydicom_meta, file_meta

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours, theirs = file_meta(sop_class, sop_instance, ts, ae), _pydicom_meta(sop_class, sop_instance, ts, ae)
        assert ours == theirs
        meta = pydicom.dcmread(io.BytesIO(ours)).file_meta
        assert meta.MediaStorageSOPInstanceUID == sop_instance and meta.TransferSyntaxUID == ts
