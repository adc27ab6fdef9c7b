"""pcap and pcapng readers working in bounded chunks.

The file is read ``chunk_size`` bytes at a time (never mmapped whole), pcap record
headers are walked in strides where their lengths repeat (capture/walk.py) and each
chunk's frames are handed on as one :class:`FrameBatch`.  gzip is recognised by its magic bytes, so a compressed
capture can have any name, and ``-`` reads standard input as it arrives.

Formats: pcap (https://www.tcpdump.org/manpages/pcap-savefile.5.html, both byte
orders, micro- and nanosecond magic) and pcapng (draft-ietf-opsawg-pcapng:
SHB, IDB, EPB, SPB, OPB; other blocks are skipped).
"""

from __future__ import annotations

import contextlib
import os
import stat
import struct
import sys
import zlib
from typing import BinaryIO, Iterator

import numpy as np

from dicomtrace.capture.frames import CaptureError, CaptureProblem, FrameBatch
from dicomtrace.capture.walk import (BACKOFF_MAX, STRIDE_FIRST, STRIDE_MAX, STRIDE_MIN, headers,
                                     record_walk, walk_path)

CHUNK_SIZE = 4 << 20  # bytes read at a time into a fresh buffer (stdin, pipes, gzip)
# bytes of a regular file mapped at a time: twice as many as read into a buffer, since a map's
# pages are dropped from memory once the reader is MAP_KEEP bytes past them
# (_MappedSource.release), so memory holds about one chunk and a half of the file; a batch of
# 8 MiB rather than 4 halves what every stage pays per batch (-0.05 s of CPU a GB in one
# process; docs/performance.md)
MAP_CHUNK = 8 << 20
# bytes behind the read position whose pages stay: export's writer thread writes views of
# them up to 8 MB behind the parsing (export/part10.py, _Writer.LIMIT), and a page dropped
# before it is written is faulted in again (dropping right behind cost export 0.25 s of
# system time a GB; keeping 4 MiB, export --jobs 1 took 0.72-0.82 s of system time, keeping
# 8 MiB 0.56-0.58 s, at the same peak of 71 MB; analyze --jobs 1: 66 -> 70 MB)
MAP_KEEP = 8 << 20
MAX_FRAME = 1 << 20  # no link layer we read carries frames larger than this
MAX_BLOCK = 16 << 20
MAP_MIN = 0  # files of at least this size are read through a memory map

PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("<", 1e-6),
    b"\xa1\xb2\xc3\xd4": (">", 1e-6),
    b"\x4d\x3c\xb2\xa1": ("<", 1e-9),
    b"\xa1\xb2\x3c\x4d": (">", 1e-9),
}
PCAP_HEADER = 24  # bytes of a pcap file's global header
PCAPNG_SHB = 0x0A0D0D0A
BLOCK_IDB, BLOCK_OPB, BLOCK_SPB, BLOCK_NRB, BLOCK_ISB, BLOCK_EPB = 1, 2, 3, 4, 5, 6
KNOWN_BLOCKS = {BLOCK_IDB, BLOCK_OPB, BLOCK_SPB, BLOCK_NRB, BLOCK_ISB, BLOCK_EPB,
                PCAPNG_SHB, 0x0000000A, 0x00000BAD, 0x40000BAD}


class _Source:
    """Reads a binary stream in pieces; ``read`` returns b"" only at the end."""

    gzip = None  # the _GzipSource underneath, when the capture is compressed

    def __init__(self, raw, prefix: bytes = b""):
        self._raw = raw
        self._prefix = prefix
        self._read = getattr(raw, "read1", raw.read)

    def read(self, n: int) -> bytes:
        if self._prefix:
            out, self._prefix = self._prefix, b""
            return out
        return self._read(n)

    def readinto(self, view: memoryview) -> int:
        """Fill ``view`` with what is available now (0 only at the end): the file's bytes go
        straight into the caller's buffer, no intermediate bytes object."""
        if self._prefix:
            n = min(len(self._prefix), len(view))
            view[:n] = self._prefix[:n]
            self._prefix = self._prefix[n:]
            return n
        into = getattr(self._raw, "readinto1", None) or getattr(self._raw, "readinto", None)
        if into is None:
            data = self._read(len(view))
            view[:len(data)] = data
            return len(data)
        return into(view) or 0

    def close(self) -> None:
        try:
            self._raw.close()
        except OSError:
            pass


class _MappedSource:
    """A regular file read through memory maps (``mmap``): each buffer the reader asks
    for is a map of that stretch of the file, so the page cache is read in place, never
    copied into a buffer of ours (on the bench capture that saves about 0.2 s a GB).  A
    stretch's map lives while a payload view handed on from it does, as a buffer read
    with ``readinto`` would: memory follows the data still needed, not the file."""

    def __init__(self, raw, size: int, head: bytes = b"", shift: int = 0):
        self._raw = raw
        self.size = size  # bytes of this source: the file's, or a part's after ``head``
        self.pos = 0  # the bytes peeked at are read again through the map
        # a part of a file (dicomtrace.parallel): the pcap header ``head``, then the file's
        # bytes from offset len(head) + shift on
        self.head = head
        self.shift = shift
        self._maps: list = []  # (map, file offset, length, bytes released) not all released yet

    def shrunk(self, reader: "CaptureReader") -> int:
        """The size to read up to: a file cut shorter while it is read (a ring buffer's
        oldest file being overwritten) is read up to its new end, and that is said."""
        end = self.size + self.shift  # the file offset read up to
        try:
            now = os.fstat(self._raw.fileno()).st_size
        except OSError:
            now = end
        if now < end:
            reader.problem(f"the file shrank from {end} to {now} bytes while it was read "
                           "(overwritten by a running capture?); read up to its new end",
                           severity="error", offset=now)
            self.size = now - self.shift
        return self.size

    def window(self, start: int, size: int) -> memoryview:
        """This source's bytes from ``start`` on, at most ``size`` of them."""
        size = min(size, self.size - start)
        if start < len(self.head):  # a part's header and its first bytes: copied, once
            head = self.head[start:]
            rest = size - len(head)
            return memoryview(head + (bytes(self._map(len(self.head) + self.shift, rest)) if rest > 0 else b""))
        return self._map(start + self.shift, size)

    def _map(self, start: int, size: int) -> memoryview:
        """The file's bytes ``[start, start + size)``, mapped."""
        import mmap

        base = start - start % mmap.ALLOCATIONGRANULARITY
        m = mmap.mmap(self._raw.fileno(), size + start - base, access=mmap.ACCESS_READ, offset=base)
        with contextlib.suppress(AttributeError, OSError):
            m.madvise(mmap.MADV_SEQUENTIAL)
        self._maps.append((m, base, len(m), 0))
        return memoryview(m)[start - base:]

    def release(self, upto: int) -> None:
        """Drop from this process the pages of the maps made so far that lie before this
        source's byte ``upto`` (``madvise`` MADV_DONTNEED), so that the resident size
        follows the chunk being read, not every chunk a view still keeps mapped (a PDU
        begun in it, the export writer's queue); a map wholly dropped is let go of here
        (unmapped when its last view goes).

        Safe for whatever views of them still live: each map is a read-only MAP_SHARED map
        of a regular file, so its pages hold nothing but the file's bytes; MADV_DONTNEED
        only removes them from this process's page tables, and the next touch of one maps
        it again from the page cache (or reads it from the file): the same bytes, at the
        cost of a minor fault.  A map of private or anonymous memory would lose its data
        that way; these have none of their own."""
        import mmap

        upto += self.shift
        kept = []
        for m, base, length, done in self._maps:
            # whole pages, up to the map's end (whose last page may be partial)
            cut = length if upto - base >= length else upto - base - (upto - base) % mmap.PAGESIZE
            if cut > done:
                with contextlib.suppress(OSError, ValueError):
                    m.madvise(mmap.MADV_DONTNEED, done, cut - done)
                done = cut
            if done < length:
                kept.append((m, base, length, done))
        self._maps = kept

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._raw.close()


def _mapped(raw, head: bytes, part: tuple | None = None) -> "_MappedSource | None":
    """A memory-mapped source for a regular, uncompressed file of some size; ``part``
    (start, stop or None): only the pcap header and the bytes ``[start, stop)``."""
    try:
        st = os.fstat(raw.fileno())
    except (OSError, AttributeError, ValueError):
        return None
    if not stat.S_ISREG(st.st_mode) or (st.st_size < MAP_MIN and part is None) \
            or head[:2] == b"\x1f\x8b":
        return None
    try:
        if part is None:
            return _MappedSource(raw, st.st_size)
        start, stop = part
        header = os.pread(raw.fileno(), PCAP_HEADER, 0)
        end = st.st_size if stop is None else min(stop, st.st_size)
        return _MappedSource(raw, PCAP_HEADER + max(0, end - start), header, start - PCAP_HEADER)
    except (OSError, ValueError):
        return None


def _peek_source(raw: BinaryIO, n: int) -> tuple[bytes, _Source]:
    """Read the first ``n`` bytes (or fewer at EOF) and give back a source
    that still yields them."""
    head = b""
    rd = getattr(raw, "read1", raw.read)
    while len(head) < n:
        more = rd(n - len(head))
        if not more:
            break
        head += more
    return head, _Source(raw, head)


class _GzipSource(_Source):
    """Inflates gzip (RFC 1952, several members allowed) piece by piece with zlib, so
    that everything before a corrupt or truncated stretch is still delivered; the
    problem is kept in ``error`` with the decompressed offset where it happened."""

    RAW_PIECE = 1 << 16

    def __init__(self, src: _Source):
        self._src = src
        self._z = zlib.decompressobj(wbits=31)
        self._pending = b""
        self.produced = 0
        self.error: str | None = None
        self._eof = False

    def read(self, n: int) -> bytes:
        out = []
        size = 0
        while size < n and not self._eof:
            raw = self._pending or self._src.read(self.RAW_PIECE)
            self._pending = b""
            if not raw:
                if not self._z.eof:
                    self.error = "gzip data ends before its end marker (file cut short)"
                self._eof = True
                break
            saved = self._z.copy()
            try:
                data = self._z.decompress(raw)
            except zlib.error as e:
                # inflate the piece again in small steps to keep what precedes the damage
                self.error = f"gzip data is corrupt ({e})"
                self._eof = True
                z, data = saved, b""
                for i in range(0, len(raw), 256):
                    try:
                        data += z.decompress(raw[i:i + 256])
                    except zlib.error:
                        break
                out.append(data)
                size += len(data)
                break
            if self._z.eof:
                rest = self._z.unused_data
                if rest and rest[:2] == b"\x1f\x8b":  # another member follows
                    self._z = zlib.decompressobj(wbits=31)
                    self._pending = rest
                elif rest.strip(b"\x00"):
                    self.error = f"{len(rest)} bytes of trailing garbage after the gzip data ignored"
            out.append(data)
            size += len(data)
        self.produced += size
        return b"".join(out)

    def readinto(self, view: memoryview) -> int:
        data = self.read(len(view))
        view[:len(data)] = data
        return len(data)

    def close(self) -> None:
        self._src.close()


def open_capture(path: str, *, chunk_size: int | None = None, start: int | None = None,
                 stop: int | None = None, first_frame: int = 1) -> "CaptureReader":
    """Open a capture file (``-`` for standard input), gzip or not.

    ``chunk_size``: bytes read at a time (default :data:`MAP_CHUNK` for a file read through
    memory maps, else :data:`CHUNK_SIZE`).  ``start``/``stop``: only the records in bytes
    ``[start, stop)`` of a plain pcap file (``start`` must be where a record begins),
    numbered from ``first_frame`` on; problems name file offsets as in a read of the whole
    file.  Raises :class:`CaptureError` with
    a one-line message when it is not a capture at all.
    """
    if path == "-":
        raw: BinaryIO = sys.stdin.buffer.raw if hasattr(sys.stdin.buffer, "raw") else sys.stdin.buffer
        shown = "<stdin>"
    else:
        shown = path
        try:
            raw = open(path, "rb", buffering=0)
        except OSError as e:
            raise CaptureError(f"cannot open {path}: {e.strerror or e}") from None
        if os.path.isdir(path):
            raise CaptureError(f"{path} is a directory, not a capture file")
    head, src = _peek_source(raw, 4)
    part = None if start is None and stop is None else (start or PCAP_HEADER, stop)
    if path != "-" and len(head) == 4:
        src = _mapped(raw, head, part) or src
        if part is not None and type(src) is not _MappedSource:
            raise CaptureError(f"{shown}: only a plain pcap file is read in parts")
    if chunk_size is None:
        chunk_size = MAP_CHUNK if type(src) is _MappedSource else CHUNK_SIZE
    compressed = head[:2] == b"\x1f\x8b"
    if compressed:
        gz = _GzipSource(src)
        head, src = _peek_source(gz, 4)
        if len(head) < 4 and gz.error:
            raise CaptureError(f"{shown}: {gz.error}")
        src.gzip = gz
    if not head:
        raise CaptureError(f"{shown}: the file is empty, not a capture")
    head = head[:4]
    if len(head) < 4:
        raise CaptureError(f"{shown}: too short to be a capture ({len(head)} bytes)")
    if head in PCAP_MAGICS:
        reader = PcapReader(src, shown, head, chunk_size, compressed)
        reader.origin = (start if start is not None else PCAP_HEADER) - PCAP_HEADER
        reader.frames = first_frame - 1
        return reader
    if start is not None or stop is not None:
        raise CaptureError(f"{shown}: only a plain pcap file is read in parts")
    if struct.unpack("<I", head)[0] == PCAPNG_SHB:
        return PcapngReader(src, shown, chunk_size, compressed)
    if head == b"\xa1\xb2\xcd\x34" or head == b"\x34\xcd\xb2\xa1":
        raise CaptureError(f"{shown}: modified (Kuznetzov) pcap format is not supported; "
                           "convert it with `editcap -F pcap`")
    kind = "text" if all(32 <= c < 127 or c in (9, 10, 13) for c in head) else "unknown data"
    raise CaptureError(f"{shown}: not a pcap or pcapng capture (starts with {kind}: {head!r})")


class CaptureReader:
    """Common part of the readers: chunked reading and problem reporting."""

    format = "?"

    def __init__(self, src: _Source, path: str, chunk_size: int, compressed: bool):
        self.src = src
        self.path = path
        self.chunk_size = chunk_size
        self.compressed = compressed
        self.problems: list[CaptureProblem] = []
        self.frames = 0  # frames delivered so far
        self.first_time: float | None = None
        self.last_time: float | None = None
        self.linktypes: set[int] = set()
        self.read_bytes = 0
        self._gzip_reported = False

    def problem(self, message: str, *, frame: int | None = None, offset: int | None = None,
                severity: str = "warning") -> None:
        self.problems.append(CaptureProblem(severity, message, frame, offset))

    def _refill(self, buf, pos: int):
        """A fresh buffer holding ``buf[pos:]`` (the start of a record not yet complete)
        followed by up to ``chunk_size`` new bytes, read in place with ``readinto``; None at
        the end of the capture.  Earlier buffers are never touched again: the payload views
        handed on from them stay valid."""
        src = self.src
        if type(src) is _MappedSource:
            tail = len(buf) - pos
            start = src.pos - tail
            n = min(self.chunk_size, src.shrunk(self) - src.pos)
            if src.pos < len(src.head):
                # a part's pcap header alone first: what follows it is mapped, not copied
                # (a first chunk copied with the header was two transient chunks of memory)
                n = min(n, len(src.head) - src.pos)
            if n <= 0:
                src.release(src.size)  # the end: the last batch has been taken
                return None
            src.pos += n
            self.read_bytes += n
            more = src.window(start, tail + n)
            src.release(start - MAP_KEEP)
            return more
        gz = getattr(src, "gzip", None)
        tail = len(buf) - pos
        nbuf = bytearray(tail + self.chunk_size)
        nbuf[:tail] = memoryview(buf)[pos:]
        try:
            with memoryview(nbuf) as view:
                n = self.src.readinto(view[tail:])
        except OSError as e:
            self.problem(f"reading stopped: {e}", severity="error", offset=self.read_bytes)
            n = 0
        self.read_bytes += n
        if gz is not None and gz.error and not self._gzip_reported:
            self._gzip_reported = True
            self.problem(f"{gz.error}; what came before is analysed",
                         severity="error", offset=gz.produced)
        if not n:
            return None
        if n < self.chunk_size:
            del nbuf[tail + n:]
        return nbuf

    def batches(self) -> Iterator[FrameBatch]:
        raise NotImplementedError

    def close(self) -> None:
        self.src.close()

    def _make_batch(self, buf: bytes, offs, caps, origs, times, links) -> FrameBatch:
        n = len(offs)
        batch = FrameBatch(
            data=buf,
            offsets=np.asarray(offs, dtype=np.int64),
            caplens=np.asarray(caps, dtype=np.int64),
            origlens=np.asarray(origs, dtype=np.int64),
            times=np.asarray(times, dtype=np.float64),
            linktypes=np.asarray(links, dtype=np.int32) if not isinstance(links, int)
            else np.full(n, links, dtype=np.int32),
            first_frame=self.frames + 1,
        )
        if n:
            if self.first_time is None:
                self.first_time = float(batch.times[0])
            self.last_time = float(batch.times[-1])
        self.frames += n
        return batch


class PcapReader(CaptureReader):
    """Classic libpcap savefile."""

    format = "pcap"

    def __init__(self, src, path, head, chunk_size, compressed):
        super().__init__(src, path, chunk_size, compressed)
        self.endian, self.tick = PCAP_MAGICS[head]
        self.snaplen = 0
        self.linktype = 0
        self.origin = 0  # file offset - 24 of the first record read (a part of the file)

    def batches(self) -> Iterator[FrameBatch]:
        e = self.endian
        buf = b""
        while len(buf) < 24:
            more = self._refill(buf, 0)
            if more is None:
                break
            buf = more
        if len(buf) < 24:
            raise CaptureError(f"{self.path}: pcap global header truncated "
                               f"({len(buf)} of 24 bytes)")
        _magic, vmaj, vmin, _zone, _sig, snaplen, network = struct.unpack_from(e + "IHHiIII", buf, 0)
        self.snaplen = snaplen
        self.linktype = network & 0x0FFFFFFF & 0xFFFF
        self.linktypes.add(self.linktype)
        limit = max(snaplen, 65535) if 0 < snaplen <= MAX_FRAME else MAX_FRAME
        frac_max = 1_000_000 if self.tick == 1e-6 else 1_000_000_000
        base = self.origin  # file offset of buf[0] (buf[24:] at the first record read)
        pos = 24
        self._last_sec = None  # seconds of the last record delivered
        resync_from = None  # (reference seconds,) while looking for a record after damage
        deferred = final = False
        walk = record_walk()
        while True:
            end = len(buf)
            if resync_from is not None:
                nxt = self._resync(buf, pos, end, limit, frac_max, resync_from[0])
                if nxt is None:  # keep a tail where the next record may begin
                    pos = max(pos, end - limit - 32)
                else:
                    pos, resync_from = nxt, None
            if resync_from is None:
                # only the captured length is needed to find the next record; the other
                # header fields are gathered, and checked, for the whole batch below
                offs, pos, broken = walk(buf, pos, end, limit, e)
                out, pos, resync_from, again, deferred = self._checked(
                    buf, base, offs, pos, broken, end, limit, frac_max, snaplen, final)
                yield from out
                if again:  # damage resolved inside this buffer: walk on from pos
                    continue
            more = self._refill(buf, pos) if not final else None
            if more is None and deferred and not final:
                final = True  # the end: a time jump undecided so far is a real one
                continue
            if more is None:
                rest = len(buf) - pos
                if rest and resync_from is not None:
                    pass  # already reported: no plausible record after the bad one
                elif rest:
                    if rest >= 16:
                        _s, _f, cap, _o = struct.unpack_from(e + "IIII", buf, pos)
                        msg = (f"last record truncated: claims {cap} bytes, only {rest - 16} "
                               "left in the file (capture cut short)")
                    else:
                        msg = f"last record header truncated ({rest} of 16 bytes; capture cut short)"
                    self.problem(msg, frame=self.frames + 1, offset=base + pos)
                break
            base += pos
            buf = more
            pos = 0

    def _checked(self, buf, base, idx, pos, broken, end, limit, frac_max, snaplen, final):
        """Check the record headers of a walked batch (``idx``: their offsets in ``buf``)
        as a whole (numpy).  Returns
        ``(batches, next position, (resync reference seconds,) or None, walk again, wait for
        more data)``: the
        frames up to the first damaged record, and where reading goes on.  A record header
        is damaged when its fraction of a second is impossible or its time jumps more than a
        day from its predecessor's; the
        record before a damaged header is dropped too when the next good record starts
        inside its original length (its captured length was wrong: a zeroed length makes its
        data read as a header).  A time jump that no record near the old time follows is a
        real jump in time, not damage."""
        e = self.endian
        n = len(idx)
        if n:
            hdr = headers(buf, idx, e)
            sec, frac, caps, orig = hdr[:, 0], hdr[:, 1], hdr[:, 2], hdr[:, 3]
            prev = np.empty(n, dtype=np.int64)
            prev[0] = sec[0] if self._last_sec is None else self._last_sec
            prev[1:] = sec[:-1]
            structural = frac >= frac_max
            bad = structural | (np.abs(sec - prev) > 86400)
        else:
            bad = structural = np.zeros(0, dtype=bool)
        while True:
            k = int(np.argmax(bad)) if bad.any() else (n if broken else None)
            if k is None:
                if not n:
                    return [], pos, None, False, False
                self._last_sec = int(sec[-1])
                return [self._batch(buf, idx, hdr)], pos, None, False, False
            ref = int(sec[k - 1]) if k > 0 else self._last_sec
            start = int(idx[k - 1]) + 16 if k > 0 else (int(idx[0]) + 1 if n else pos + 1)
            nxt = self._resync(buf, start, end, limit, frac_max, ref)
            if nxt is None and k < n and not structural[k]:
                if not final and end - start < limit + 48:
                    # too little is buffered to tell damage from a jump: wait for more data
                    keep = max(k - 1, 0)
                    if keep:
                        self._last_sec = int(sec[keep - 1])
                    return ([self._batch(buf, idx[:keep], hdr[:keep])] if keep else [],
                            int(idx[keep]), None, False, True)
                bad[k] = False  # a real jump in time: nothing after it continues the old time
                continue
            keep = k
            if k > 0 and nxt is not None and caps[k - 1] < nxt - start <= orig[k - 1]:
                keep = k - 1
            if keep < k:
                what = (f"record claims {int(caps[keep])} captured bytes of {int(orig[keep])}, but "
                        "its data runs on")
            elif k < n:
                what = f"damaged record header (claims {int(hdr[k, 2])} of {int(hdr[k, 3])} bytes)"
            else:
                cap = struct.unpack_from(e + "I", buf, pos + 8)[0]
                what = f"record claims {cap} captured bytes (snap length {snaplen})"
            lost = ("skipped to the next plausible record" if nxt is not None
                    else "looking for the next plausible record")
            self.problem(f"{what}; {lost}", frame=self.frames + keep + 1,
                         offset=base + (int(idx[keep]) if keep < n else pos))
            out = []
            if keep:
                self._last_sec = int(sec[keep - 1])
                out.append(self._batch(buf, idx[:keep], hdr[:keep]))
            if nxt is None:
                return out, max(start, end - limit - 32), (ref,), False, False
            return out, nxt, None, True, False

    def _batch(self, buf, idx, hdr) -> FrameBatch:
        caps = hdr[:, 2]
        return self._make_batch(buf, idx + 16, caps, np.maximum(hdr[:, 3], caps),
                                hdr[:, 0] + hdr[:, 1] * self.tick, self.linktype)

    def _resync(self, buf, start, end, limit, frac_max, last_sec) -> int | None:
        """Find the next offset where two consecutive plausible record headers start."""
        unpack = struct.Struct(self.endian + "IIII").unpack_from

        def plausible(p):
            if p + 16 > end:
                return False
            sec, frac, cap, orig = unpack(buf, p)
            if cap > limit or frac >= frac_max or (orig and orig < cap):
                return False
            if last_sec is not None and abs(sec - last_sec) > 86400:
                return False
            return True

        for p in range(start, end - 16):
            if plausible(p):
                nxt = p + 16 + unpack(buf, p)[2]
                if nxt == end or plausible(nxt):
                    return p
        return None


def _with_runs(buf, runs, offs, caps, origs, times, links):
    """The columns of a pcapng chunk's records: those taken one block at a time (the
    lists) and the runs of EPBs taken in strides (:meth:`PcapngReader._epb_stride`), their
    fields gathered here at once, in the order of the file."""
    at, starts, blens, counts = (np.array(c, dtype=np.int64) for c in list(zip(*runs))[:4])
    n = int(counts.sum())
    run = np.repeat(np.arange(len(runs)), counts)
    within = np.arange(n, dtype=np.int64) - (np.cumsum(counts) - counts)[run]
    blocks = starts[run] + within * blens[run]
    rows = np.ndarray((len(buf) - 19,), "V20", buf, 0, (1,))[blocks + 8]  # ifc, hi, lo, cap, orig
    fields = None
    for endian in {r[4] for r in runs}:
        these = rows.view(endian + "u4").reshape(n, 5).astype(np.int64)
        fields = these if fields is None else np.where(
            (np.array([r[4] == endian for r in runs])[run])[:, None], these, fields)
    lts, ticks, toffs = (np.array(c) for c in list(zip(*(r[5] for r in runs)))[:3])
    stamps = (fields[:, 1].astype(np.uint64) << np.uint64(32)) | fields[:, 2].astype(np.uint64)
    cap = fields[:, 3]
    strided = (blocks + 28, cap, np.maximum(fields[:, 4], cap),
               stamps * ticks[run] + toffs[run], lts[run])
    single = (np.array(offs, dtype=np.int64), np.array(caps, dtype=np.int64),
              np.array(origs, dtype=np.int64), np.array(times, dtype=np.float64),
              np.array(links, dtype=np.int32))
    ones = len(single[0])
    # a run taken when ``at`` records were in the lists comes before the list's record ``at``
    to_run = at[run] + np.arange(n)
    to_single = np.arange(ones) + np.concatenate([[0], np.cumsum(counts)])[
        np.searchsorted(at, np.arange(ones), "right")]
    out = []
    for a, b in zip(single, strided):
        col = np.empty(ones + n, dtype=a.dtype)
        col[to_single] = a
        col[to_run] = b
        out.append(col)
    return out


class PcapngReader(CaptureReader):
    """pcapng: sections, interfaces and packet blocks."""

    format = "pcapng"

    def __init__(self, src, path, chunk_size, compressed):
        super().__init__(src, path, chunk_size, compressed)
        self.endian = "<"
        self.interfaces: list[tuple[int, float, float, int]] = []  # linktype, tick, offset, snaplen
        self.sections = 0
        self._resyncing = False
        self._missing_ifaces: dict[int, list[int]] = {}

    def batches(self) -> Iterator[FrameBatch]:
        buf = b""
        pos = 0
        base = 0
        eof = False
        last_time = 0.0
        first = True
        strides = walk_path() == "stride"
        while True:
            offs, caps, origs, times, links = [], [], [], [], []
            runs = []  # EPBs taken in strides: (records before them in the lists, start,
            #            block length, count, endian, interface)
            done = 0  # records in ``runs``
            run_blen = 0  # the length of the last EPB taken one at a time
            k, wait, backoff = STRIDE_FIRST, 0, 0
            end = len(buf)
            while pos + 12 <= end:
                btype, blen = struct.unpack_from(self.endian + "II", buf, pos)
                if btype == PCAPNG_SHB:
                    bom = buf[pos + 8:pos + 12]
                    if bom == b"\x4d\x3c\x2b\x1a":
                        self.endian = "<"
                    elif bom == b"\x1a\x2b\x3c\x4d":
                        self.endian = ">"
                    else:
                        if first:
                            raise CaptureError(f"{self.path}: pcapng section header has a bad "
                                               "byte-order magic")
                        self.problem("section header with a bad byte-order magic; skipped",
                                     offset=base + pos)
                        pos = self._resync(buf, pos + 4, end)
                        continue
                    blen = struct.unpack_from(self.endian + "I", buf, pos + 4)[0]
                bad = blen < 12 or blen % 4 or blen > MAX_BLOCK
                if bad and first:
                    raise CaptureError(f"{self.path}: pcapng section header has an impossible "
                                       f"length {blen}")
                if not bad and self._resyncing and pos + blen <= end:
                    bad = btype not in KNOWN_BLOCKS or struct.unpack_from(
                        self.endian + "I", buf, pos + blen - 4)[0] != blen
                if bad:
                    if not self._resyncing:
                        self.problem(f"pcapng block with impossible length {blen}; skipping to "
                                     "the next valid block", offset=base + pos,
                                     frame=self.frames + done + len(offs) + 1)
                    self._resyncing = True
                    pos = self._resync(buf, pos + 4, end)
                    continue
                if pos + blen > end:
                    break
                self._resyncing = False
                first = False
                e = self.endian
                if btype == BLOCK_EPB or btype == BLOCK_OPB:
                    if blen < 32:
                        self.problem(f"packet block too short ({blen} bytes)", offset=base + pos)
                        pos += blen
                        continue
                    if btype == BLOCK_EPB:
                        ifc, hi, lo, cap, orig = struct.unpack_from(e + "IIIII", buf, pos + 8)
                    else:
                        ifc, _drops, hi, lo, cap, orig = struct.unpack_from(e + "HHIIII", buf, pos + 8)
                    frame = self.frames + done + len(offs) + 1
                    if ifc >= len(self.interfaces):
                        self._unknown_interface(ifc, frame, base + pos)
                        pos += blen
                        continue
                    if cap > blen - 32:
                        self.problem(f"packet claims {cap} captured bytes in a {blen}-byte block; "
                                     "skipped", frame=frame, offset=base + pos)
                        pos += blen
                        continue
                    lt, tick, toff, _snap = self.interfaces[ifc]
                    ts = ((hi << 32) | lo) * tick + toff
                    last_time = ts
                    offs.append(pos + 28)
                    caps.append(cap)
                    origs.append(orig if orig >= cap else cap)
                    times.append(ts)
                    links.append(lt)
                    if strides and btype == BLOCK_EPB:
                        pos += blen
                        if blen != run_blen:
                            run_blen = blen
                            continue
                        if wait:
                            wait -= 1
                            continue
                        # two EPBs of one length: guess that more follow (capture/walk.py)
                        m = self._epb_stride(buf, pos, end, blen, ifc, k)
                        if not m:
                            backoff = min(2 * backoff + 1, BACKOFF_MAX)
                            wait = backoff
                            continue
                        runs.append((len(offs), pos, blen, m, e, self.interfaces[ifc]))
                        done += m
                        hi, lo = struct.unpack_from(e + "II", buf, pos + (m - 1) * blen + 12)
                        last_time = ((hi << 32) | lo) * tick + toff
                        pos += m * blen
                        backoff = 0
                        k = min(2 * k if m == k else max(2 * m, STRIDE_MIN * 4), STRIDE_MAX)
                        continue
                elif btype == BLOCK_SPB:
                    if not self.interfaces:
                        self.problem("simple packet block before any interface; skipped",
                                     offset=base + pos)
                    else:
                        orig = struct.unpack_from(e + "I", buf, pos + 8)[0]
                        lt, _tick, _toff, snap = self.interfaces[0]
                        cap = min(orig, blen - 16, snap or orig)
                        offs.append(pos + 12)
                        caps.append(cap)
                        origs.append(max(orig, cap))
                        times.append(last_time)
                        links.append(lt)
                elif btype == BLOCK_IDB:
                    self._interface(buf, pos, blen)
                elif btype == PCAPNG_SHB:
                    self.sections += 1
                    self.interfaces = []
                run_blen = 0
                pos += blen
            if runs:
                offs, caps, origs, times, links = _with_runs(buf, runs, offs, caps, origs, times, links)
            if len(offs):
                yield self._make_batch(buf, offs, caps, origs, times, links)
            if eof:
                break
            more = self._refill(buf, pos)
            if more is None:
                eof = True
                rest = len(buf) - pos
                if rest:
                    if first:
                        raise CaptureError(f"{self.path}: pcapng section header truncated")
                    self.problem(f"last block truncated ({rest} bytes left; capture cut short)",
                                 offset=base + pos, frame=self.frames + 1)
                if first and not rest and not self.sections:
                    raise CaptureError(f"{self.path}: pcapng section header truncated")
                break
            base += pos
            buf = more
            pos = 0

    def _epb_stride(self, buf, start: int, end: int, blen: int, ifc: int, most: int) -> int:
        """How many of the next (up to ``most``) blocks from ``start`` on are enhanced packet
        blocks of ``blen`` bytes on interface ``ifc`` whose captured length fits, as the
        per-block path would take them: their first 12 bytes read through one strided view
        and compared with the guess as ``bytes``, their captured lengths in one vector."""
        n = min(most, (end - start) // blen)
        if n < STRIDE_MIN:
            return 0
        want = struct.pack(self.endian + "III", BLOCK_EPB, blen, ifc) * n
        got = np.ndarray((n,), "V12", buf, start, (blen,)).tobytes()
        if got != want:
            n = int((np.frombuffer(got, np.uint8) != np.frombuffer(want, np.uint8)).argmax()) // 12
            if not n:
                return 0
        over = np.ndarray((n,), self.endian + "u4", buf, start + 20, (blen,)) > blen - 32
        j = int(over.argmax())
        return j if over[j] else n

    def _unknown_interface(self, ifc: int, frame: int, offset: int) -> None:
        """One warning per missing interface (with a count), not one per packet."""
        seen = self._missing_ifaces.get(ifc)
        if seen is None:
            self.problem(f"packets for interface {ifc}, which no interface block describes, "
                         "are skipped", frame=frame, offset=offset)
            self._missing_ifaces[ifc] = [len(self.problems) - 1, 1]
        else:
            seen[1] += 1
            p = self.problems[seen[0]]
            self.problems[seen[0]] = CaptureProblem(
                p.severity, f"{seen[1]} packets for interface {ifc}, which no interface block "
                "describes, were skipped (the first here)", p.frame, p.offset)

    def _interface(self, buf: bytes, pos: int, blen: int) -> None:
        e = self.endian
        lt, _res, snap = struct.unpack_from(e + "HHI", buf, pos + 8)
        tick, toff = 1e-6, 0.0
        p, stop = pos + 16, pos + blen - 4
        while p + 4 <= stop:
            code, olen = struct.unpack_from(e + "HH", buf, p)
            if code == 0:
                break
            val = buf[p + 4:p + 4 + olen]
            if code == 9 and olen >= 1:
                v = val[0]
                tick = 2.0 ** -(v & 0x7F) if v & 0x80 else 10.0 ** -v
            elif code == 14 and olen == 8:
                toff = float(struct.unpack(e + "q", val)[0])
            p += 4 + ((olen + 3) & ~3)
        self.interfaces.append((lt, tick, toff, snap))
        self.linktypes.add(lt)

    def _resync(self, buf: bytes, start: int, end: int) -> int:
        """Next 4-byte-aligned (relative to ``start``) offset that looks like a block."""
        e = self.endian
        p = start
        while p + 12 <= end:
            btype, blen = struct.unpack_from(e + "II", buf, p)
            if btype in KNOWN_BLOCKS and 12 <= blen <= MAX_BLOCK and blen % 4 == 0:
                if p + blen <= end and struct.unpack_from(e + "I", buf, p + blen - 4)[0] == blen:
                    return p
            p += 4
        return p
