"""Walking the record headers of a pcap buffer: where each record starts.

A pcap record is a 16-byte header (seconds, fraction, captured length, original length;
https://www.tcpdump.org/manpages/pcap-savefile.5.html) and its captured bytes, so records
are chained: only the captured length of one says where the next begins.  Bulk traffic is
almost all records of one length (full-size data segments), broken every few dozen records
by an ACK of another.  :func:`walk_strides` guesses that the next records repeat the last
length, or the last period of lengths (45 data segments and an ACK, say), computes the
guessed offsets, reads the captured lengths there with one numpy operation and takes the
prefix that matches at once; the record that breaks a guess, and traffic without repeats,
go one Python step at a time as in :func:`walk_plain`, the reference
(``DICOMTRACE_WALK_PATH=record``).  Both give exactly the same records: a guess only
decides which lengths are compared, and every record taken has had its own length read.

A walk takes ``(buf, pos, end, limit, endian, last)`` and returns ``(offsets, pos,
broken)``: the offsets (int64) of the records that start at ``pos`` and after, before
``last`` (default ``end``), whose data ends by ``end``; where the walk stopped; and whether
it stopped at a captured length over ``limit``.  It checks nothing else: the callers check
the headers of the records found as a whole (:func:`headers`).
"""

from __future__ import annotations

import functools
import struct

import numpy as np

from dicomtrace.settings import choice

_CAP_AT = {e: struct.Struct(e + "I").unpack_from for e in "<>"}
STRIDE_MIN = 4  # records a stride must be able to hold to be tried
STRIDE_FIRST = 64  # records guessed by the first stride; then twice the last run, or more
STRIDE_MAX = 4096
PERIOD_FIRST = 512  # records guessed by the first period; then as for strides
PERIOD_MAX = 4096
BACKOFF_MAX = 64  # records (runs, for periods) without a guess after guesses that failed at once


def _u32_at_every_byte(buf, endian: str) -> np.ndarray:
    """A view (no copy) of ``buf`` whose item ``i`` is the unsigned 32-bit integer at byte
    offset ``i``."""
    return np.ndarray((max(len(buf) - 3, 0),), endian + "u4", buf, 0, (1,))


def headers(buf, offsets: np.ndarray, endian: str) -> np.ndarray:
    """The 16-byte record headers at ``offsets`` as an (n, 4) int64 array: seconds,
    fraction, captured length, original length (one gather)."""
    if not len(offsets):
        return np.zeros((0, 4), dtype=np.int64)
    rows = np.ndarray((len(buf) - 15,), "V16", buf, 0, (1,))  # 16 bytes at every offset
    return rows[offsets].view(endian + "u4").reshape(-1, 4).astype(np.int64)


def walk_plain(buf, pos: int, end: int, limit: int, endian: str, last: int | None = None):
    """The reference walk: one Python step per record, no guesses."""
    return walk_strides(buf, pos, end, limit, endian, last, guesses=False)


def walk_strides(buf, pos: int, end: int, limit: int, endian: str, last: int | None = None,
                 guesses: bool = True):
    """The walk in strides.  The records walked are kept as runs of one length (16 +
    captured length) and count; after each record taken one Python step at a time:

    - when the last runs repeat the ones before them (a run of data segments and an ACK,
      twice), guess that this period goes on: the guessed offsets are computed with numpy,
      the captured lengths there read with one gather and compared with the guess;
    - else, after two records of one length (or a record that broke a stride of that
      length), guess that up to ``k`` more repeat it: the captured lengths at the guessed
      offsets are read through one strided view, their low bytes compared with ``lstrip``
      and the whole words of the prefix that matches with one ``bytes`` comparison.

    The records up to the first that differs from the guess are taken at once; that one is
    walked a step.  How far a guess reaches follows what matched (twice the last match,
    doubling while whole guesses match); a guess that fails at once makes the next ones of
    its kind wait a few records (doubling up to :data:`BACKOFF_MAX`), so that traffic
    without repeats costs little more than the plain walk."""
    cap_at = _CAP_AT[endian]
    if last is None:
        last = end
    first = pos
    steps: list[int] = []  # the records as runs: length (16 + captured length), count
    counts: list[int] = []
    top = -1  # steps[-1]
    caps = None  # the captured lengths at every byte offset (a view), made when first needed
    low = 0 if endian == "<" else 3  # where the low byte of a length is
    guess = -1  # the length a stride guesses
    word = lowbyte = b""
    k, pk = STRIDE_FIRST, PERIOD_FIRST  # how many records a stride, a period guesses
    wait = backoff = pwait = pbackoff = 0
    broken = False
    while pos + 16 <= end and pos < last:
        cap = cap_at(buf, pos + 8)[0]
        if cap > limit:
            broken = True
            break
        step = 16 + cap
        if pos + step > end:
            break
        pos += step
        if step == top:
            counts[-1] += 1
            if step != guess:
                guess = step
                word = struct.pack(endian + "I", cap)
                lowbyte = word[low:low + 1]
        else:
            steps.append(step)
            counts.append(1)
            top = step
            if not guesses:
                continue
            if pwait:
                pwait -= 1
            elif len(steps) >= 5:
                # this record starts the third repetition of the last q runs?
                for q in (2, 3):
                    if len(steps) > 2 * q and step == steps[-1 - q] \
                            and steps[-1 - q:-1] == steps[-1 - 2 * q:-1 - q] \
                            and counts[-1 - q:-1] == counts[-1 - 2 * q:-1 - q]:
                        break
                else:
                    q = 0
                if q:
                    if caps is None:
                        caps = _u32_at_every_byte(buf, endian)
                    period = steps[-1 - q:-1], counts[-1 - q:-1]
                    m, n = _period(caps, pos, end, last, *period, pk)
                    if m:
                        pos = _take_period(steps, counts, *period, m, pos)
                        top = steps[-1]
                        pbackoff = 0
                        pk = min(2 * pk if m == n else max(2 * m, PERIOD_FIRST), PERIOD_MAX)
                        continue
                    if n:
                        pbackoff = min(2 * pbackoff + 1, BACKOFF_MAX)
                        pwait = pbackoff
        if guess < 0 or not guesses:
            continue
        if wait:
            wait -= 1
            continue
        # records i < n start before ``last`` and end by ``end``
        n = min(k, (end - pos) // guess, (last - pos + guess - 1) // guess)
        if n < STRIDE_MIN:
            continue
        if caps is None:
            caps = _u32_at_every_byte(buf, endian)
        got = caps[pos + 8:pos + 8 + n * guess:guess].tobytes()
        m = n - len(got[low::4].lstrip(lowbyte))
        if got[:4 * m] != word * m:  # a length that differs from the guess in a high byte
            m = int(np.flatnonzero(np.frombuffer(got, endian + "u4")[:m] != guess - 16)[0])
        if not m:
            backoff = min(2 * backoff + 1, BACKOFF_MAX)
            wait = backoff
            continue
        if top == guess:
            counts[-1] += m
        else:
            steps.append(guess)
            counts.append(m)
            top = guess
        pos += m * guess
        backoff = 0
        k = min(2 * k if m == n else max(2 * m, STRIDE_MIN * 4), STRIDE_MAX)
    del caps
    if not steps:
        return np.zeros(0, dtype=np.int64), pos, broken
    lengths = np.repeat(np.array(steps, dtype=np.int64), counts)
    offs = np.empty(len(lengths), dtype=np.int64)
    offs[0] = first
    np.cumsum(lengths[:-1], out=offs[1:])
    offs[1:] += first
    return offs, pos, broken


def _period(caps, pos, end, last, psteps, pcounts, most):
    """Check the guess that the records from ``pos`` on repeat the runs ``psteps`` x
    ``pcounts`` (lengths and counts), one record of the first run being taken already:
    (records that match, records guessed)."""
    starts, ends, expect = _period_guess(tuple(psteps), tuple(pcounts))
    # records i < n start before ``last`` and end by ``end``
    n = min(most, int(ends.searchsorted(end - pos, "right")),
            int(starts.searchsorted(last - pos, "left")))
    if n < STRIDE_MIN:
        return 0, 0
    differ = caps[starts[:n] + (pos + 8)] != expect[:n]
    m = int(differ.argmax())
    return (m if differ[m] else n), n


@functools.lru_cache(maxsize=16)
def _period_guess(psteps: tuple, pcounts: tuple):
    """The records of a period guess (:func:`_period`), up to :data:`PERIOD_MAX`: their
    starts and ends from the guess's start, and their captured lengths."""
    one = np.repeat(np.array(psteps, dtype=np.int64), pcounts)
    lengths = np.tile(one, PERIOD_MAX // len(one) + 2)[1:PERIOD_MAX + 1]
    ends = np.cumsum(lengths)
    return ends - lengths, ends, (lengths - 16).astype(np.uint32)


def _take_period(steps, counts, psteps, pcounts, m, pos) -> int:
    """Add ``m`` records of the runs ``psteps`` x ``pcounts`` repeated to the runs (the
    last run, of one record, is the first of the period); the position after them."""
    more = min(m, pcounts[0] - 1)  # the first run goes on
    counts[-1] += more
    pos += more * psteps[0]
    m -= more
    rsteps, rcounts = psteps[1:] + psteps[:1], pcounts[1:] + pcounts[:1]  # from the second run on
    whole, m = divmod(m, sum(rcounts))
    steps.extend(rsteps * whole)
    counts.extend(rcounts * whole)
    pos += whole * sum(s * c for s, c in zip(rsteps, rcounts))
    for s, c in zip(rsteps, rcounts):
        if not m:
            break
        c = min(c, m)
        steps.append(s)
        counts.append(c)
        pos += s * c
        m -= c
    return pos


def walk_path() -> str:
    """``DICOMTRACE_WALK_PATH``: ``stride`` (default) or ``record`` (the reference, one
    Python step per pcap record or pcapng block)."""
    return choice("DICOMTRACE_WALK_PATH")


def record_walk(path: str | None = None):
    """The pcap walk to use: ``path`` (``stride`` or ``record``) or :func:`walk_path`'s."""
    return walk_strides if (path or walk_path()) == "stride" else walk_plain
