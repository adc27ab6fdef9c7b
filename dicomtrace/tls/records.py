"""The TLS record layer (RFC 8446 5.1, RFC 5246 6.2) over one reassembled TCP direction.

:class:`RecordStream` is fed the bytes of one direction in order (with the frame and time of
each piece) and gaps (bytes never captured); it returns :class:`TlsRecord` events, and
:class:`RecordGap` / :class:`RecordResync` where the capture lost bytes.  A gap inside a record
whose header was seen loses only that record: its length says where the next header is.  A gap
that swallows a header loses the framing; the stream then scans for the next plausible record
header (a known content type, version 3.1-3.4, a length within RFC 8446's limit) that is
followed by another plausible header.  It never raises on bad input.
"""

from __future__ import annotations

from bisect import bisect_left

MAX_RECORD = (1 << 14) + 2048  # TLSCiphertext.length limit (RFC 8446 5.2, RFC 5246 6.2.3)
HEADER = 5
SCAN_LIMIT = 1 << 20  # bytes scanned for a record header before giving up on a stream


class TlsRecord:
    """One record: ``content_type`` (20-24), ``version`` (the record header's), ``fragment``
    (the bytes after the header), ``offset`` of the header in the TCP stream, the frame and time
    of the segment that carried the header and of the one that completed the record."""

    __slots__ = ("content_type", "version", "fragment", "offset", "first_frame", "frame", "time")

    def __init__(self, content_type, version, fragment, offset, first_frame, frame, time):
        self.content_type = content_type
        self.version = version
        self.fragment = fragment
        self.offset = offset
        self.first_frame = first_frame
        self.frame = frame
        self.time = time

    @property
    def length(self) -> int:
        return len(self.fragment)

    def __repr__(self) -> str:
        return (f"TlsRecord(type={self.content_type}, version=0x{self.version:04X}, "
                f"length={len(self.fragment)}, offset={self.offset}, frame={self.frame})")


class RecordGap:
    """Bytes ``[offset, offset + size)`` of the direction were never captured.  ``record``:
    (content_type, length) of the record the gap cut into when its header was seen (that record
    is lost, and the framing kept), else None (a header was lost: framing lost until a resync)."""

    __slots__ = ("offset", "size", "record", "framing_lost", "frame", "time")

    def __init__(self, offset, size, record, framing_lost, frame, time):
        self.offset, self.size, self.record = offset, size, record
        self.framing_lost, self.frame, self.time = framing_lost, frame, time

    def __repr__(self) -> str:
        return f"RecordGap(offset={self.offset}, size={self.size}, record={self.record}, lost={self.framing_lost})"


class RecordResync:
    """Framing found again at ``offset`` after ``skipped`` bytes that were not a record start."""

    __slots__ = ("offset", "skipped", "frame", "time")

    def __init__(self, offset, skipped, frame, time):
        self.offset, self.skipped, self.frame, self.time = offset, skipped, frame, time


class NotTls:
    """The bytes at ``offset`` are not a TLS record header (the stream is not, or no longer, TLS)."""

    __slots__ = ("offset", "head", "frame", "time")

    def __init__(self, offset, head, frame, time):
        self.offset, self.head, self.frame, self.time = offset, head, frame, time


def plausible_header(buf, i: int = 0) -> bool | None:
    """True when ``buf[i:i+5]`` can be a record header, False when not, None: too short."""
    n = len(buf) - i
    if n < 1:
        return None
    if not 20 <= buf[i] <= 24:
        return False
    if n < 3:
        return None
    if buf[i + 1] != 3 or not 0 <= buf[i + 2] <= 4:
        return False
    if n < HEADER:
        return None
    length = (buf[i + 3] << 8) | buf[i + 4]
    return 0 < length <= MAX_RECORD


def looks_like_client_hello(head) -> bool | None:
    """Does a stream starting with ``head`` start with a ClientHello (RFC 8446 4.1.2)?
    None: too few bytes to say."""
    ok = plausible_header(head)
    if ok is not True:
        return ok
    if head[0] != 22:
        return False
    if len(head) < 6:
        return None
    return head[5] == 1


class RecordStream:
    """Splits one direction into records.  ``synced``: the stream is known to begin at a
    record boundary (the capture saw the connection's start)."""

    def __init__(self, synced: bool = True):
        self.buf = bytearray()
        self.base = 0  # stream offset of buf[0]
        self.synced = synced
        self.skip = 0  # bytes still to discard of a record a gap cut into
        self.marks: list[int] = []  # stream end offsets of the buffered pieces
        self.mark_info: list[tuple[int, float]] = []  # (frame, time) of each
        self.records = 0
        self.scanned = 0
        self.dead = False  # not TLS: further bytes are ignored
        self.started = False

    # -- input ------------------------------------------------------------
    def _begin(self, offset: int) -> None:
        """The first event of the direction says where its bytes start."""
        if not self.started:
            self.started = True
            self.base = offset

    def feed(self, offset: int, pieces, frames, times) -> list:
        out: list = []
        if self.dead:
            return out
        self._begin(offset)
        for data, frame, t in zip(pieces, frames, times):
            n = len(data)
            if self.skip:
                k = min(self.skip, n)
                self.skip -= k
                self.base += k
                if k == n:
                    continue
                data = data[k:]
                n -= k
            self.buf += data
            self.marks.append(self.base + len(self.buf))
            self.mark_info.append((frame, t))
        self._parse(out)
        return out

    def gap(self, offset: int, size: int, frame: int, t: float) -> list:
        out: list = []
        if self.dead:
            return out
        self._begin(offset)
        if self.skip:
            k = min(self.skip, size)
            self.skip -= k
            self.base += k
            size -= k
            offset += k
            if not size:
                return out
        buf = self.buf
        if self.synced and len(buf) >= HEADER:
            total = HEADER + ((buf[3] << 8) | buf[4])
            remaining = total - len(buf)
            out.append(RecordGap(self.base, len(buf) + size, (buf[0], total - HEADER),
                                 size > remaining, frame, t))
            self._drop(len(buf))
            if size < remaining:
                self.skip = remaining - size
                self.base += size
                return out
            self.base += size
            if size > remaining:
                self.synced = False
            return out
        out.append(RecordGap(self.base, len(buf) + size, None, True, frame, t))
        self._drop(len(buf))
        self.base += size
        self.synced = False
        return out

    # -- parsing ----------------------------------------------------------
    def _drop(self, n: int) -> None:
        if n <= 0:
            return
        del self.buf[:n]
        self.base += n
        k = bisect_left(self.marks, self.base + 1)
        if k:
            del self.marks[:k]
            del self.mark_info[:k]

    def _where(self, end: int) -> tuple[int, float]:
        """Frame and time of the piece holding stream offset ``end - 1``."""
        k = bisect_left(self.marks, end)
        if k >= len(self.marks):
            k = len(self.marks) - 1
        return self.mark_info[k] if k >= 0 else (0, 0.0)

    def _parse(self, out: list) -> None:
        buf = self.buf
        pos = 0
        while True:
            if not self.synced:
                found = self._scan(pos)
                if found is None:  # keep the last few bytes: a header may straddle pieces
                    keep = max(pos, len(buf) - 2 * HEADER - MAX_RECORD)
                    self.scanned += keep - pos
                    pos = keep
                    if self.scanned > SCAN_LIMIT:
                        self.dead = True
                        frame, t = self._where(self.base + len(buf))
                        out.append(NotTls(self.base + pos, bytes(buf[pos:pos + 8]), frame, t))
                        pos = len(buf)
                    break
                frame, t = self._where(self.base + found + 1)
                out.append(RecordResync(self.base + found, self.scanned + found - pos, frame, t))
                self.scanned = 0
                pos = found
                self.synced = True
            ok = plausible_header(buf, pos)
            if ok is None:
                break
            if ok is False:
                frame, t = self._where(self.base + pos + 1)
                if self.records == 0 and pos == 0:
                    self.dead = True
                    out.append(NotTls(self.base + pos, bytes(buf[pos:pos + 8]), frame, t))
                    pos = len(buf)
                    break
                self.synced = False
                continue
            total = HEADER + ((buf[pos + 3] << 8) | buf[pos + 4])
            if len(buf) - pos < total:
                break
            start = self.base + pos
            first_frame, _ = self._where(start + 1)
            frame, t = self._where(start + total)
            out.append(TlsRecord(buf[pos], (buf[pos + 1] << 8) | buf[pos + 2],
                                 bytes(buf[pos + HEADER:pos + total]), start, first_frame, frame, t))
            self.records += 1
            pos += total
        self._drop(pos)

    def _scan(self, pos: int) -> int | None:
        """Index of the first header from ``pos`` on that is followed by another plausible
        header (or by the end of the buffered bytes exactly); None when there is none yet."""
        buf = self.buf
        n = len(buf)
        i = pos
        while i + HEADER <= n:
            j = i
            # a record header: content type 20..24, then 0x03 0x00..0x04
            while j + HEADER <= n and not (20 <= buf[j] <= 24 and buf[j + 1] == 3 and buf[j + 2] <= 4):
                j += 1
            if j + HEADER > n:
                return None
            length = (buf[j + 3] << 8) | buf[j + 4]
            if 0 < length <= MAX_RECORD:
                nxt = j + HEADER + length
                if nxt + HEADER > n:
                    return None  # wait for the following header to confirm
                if plausible_header(buf, nxt):
                    return j
            i = j + 1
        return None
