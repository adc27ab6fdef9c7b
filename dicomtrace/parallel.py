"""Work split by position in the capture, stitched at the boundaries (issues #12, #16).

A capture point's capture (its ring files in order, or one large plain pcap file) is cut
into parts (:func:`cut`): a ring's whole files, or record-aligned byte ranges of a single
plain pcap file (pcapng and gzip files are never cut inside).  Each part is one task
(:func:`run_part`), run in this process (:class:`Inline`), on a local pool
(:class:`LocalPool`) or on a Dask cluster (:class:`dicomtrace.scale.run.DaskPool`); tasks
never talk to each other.  A task

- numbers its frames as one run over the whole capture would: a cheap first pass counts
  the records of every part but the last (:func:`count_tasks`, record headers only;
  part 0 needs none and runs beside it, its continuation numbering on from its own end);
- in a part after the first, **skips** each connection's segments until its first SYN
  (a connection already open at the part's start belongs to an earlier task), noting the
  frames it skipped;
- at its end, **continues** into the following parts with the connections still in its
  TCP table (closed ones too, for the stray segments that follow a close), until all have
  closed, a grace of :data:`GRACE` s of capture time has passed and nothing more is asked
  for, or a new SYN hands a connection's address pair over to the task it belongs to.

:func:`merge_parts` then proves, part after part, that every connection is analysed once
and whole, as one run would: a connection belongs to the task in whose part its first
packet lies; every skipped segment lies within an earlier task's continuation of that
address pair; a connection opened in a part on an address pair an earlier task still
followed is dropped (a retransmitted SYN) unless that task saw it open a new connection
there; one opened after the earlier continuation ended must be a new SYN by the rule of
the TCP stage (another initial sequence number).  What cannot be proved asks for a re-run
of a task (adopt a connection no earlier task saw, follow a pair further), and in the end
for one serial run: the result is always the one-process result.
"""

from __future__ import annotations

import mmap
import os
import struct
import time
from dataclasses import dataclass, field, replace

import numpy as np

from dicomtrace.capture import CaptureError, CaptureProblem
from dicomtrace.capture.multi import MultiReader, Piece, Sensor, sensor_path
from dicomtrace.capture.reader import MAX_FRAME, PCAP_HEADER, PCAP_MAGICS, open_capture
from dicomtrace.capture.walk import headers, record_walk
from dicomtrace.config import AnalysisConfig
from dicomtrace.engine import Engine
from dicomtrace.model.association import Analysis
from dicomtrace.model.links import link_operations
from dicomtrace.net import NetStats, Segments, decode_batch
from dicomtrace.net.decode import TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN
from dicomtrace.pipeline import CaptureSummary
from dicomtrace.settings import number

# (bytes: no part is smaller than DICOMTRACE_MIN_PART, dicomtrace/settings.py, 64 MiB
# unless set; tests set it to force small parts)
GRACE = 0.2  # s of capture time a continuation reads on after its last connection closed
ROUNDS = 3  # re-runs of tasks before one serial run settles it
_WINDOW = 8 << 20  # bytes of a file mapped at a time while counting records (mapped pages count in a
# process's resident size: 64 MiB windows made a count task peak at 109 MB)
MIN_COUNT = 16 << 20  # bytes: a stretch of a file counted by one task at least
MEANWHILE_POLL = 0.005  # s between looks at the tasks, waiting for the first done
BAR_EVERY = 0.2  # s between updates of the pool's one progress bar


# -- planning ---------------------------------------------------------------------------

@dataclass(slots=True)
class Part:
    """One task's share of a capture: pieces read in order, frames numbered from
    ``first_frame``."""

    first_frame: int
    pieces: list[Piece]


@dataclass(slots=True)
class Plan:
    """A capture (a path, or a :class:`Sensor`'s files read as one) cut into parts."""

    sources: object  # str or Sensor
    parts: list[Part]

    def reader(self, k: int, after: bool = False, first: int | None = None):
        """A reader of part ``k``, or (``after``) of everything after it, its first frame
        numbered ``first``."""
        if after:
            pieces = [p for q in self.parts[k + 1:] for p in q.pieces]
        else:
            pieces, first = self.parts[k].pieces, self.parts[k].first_frame
        if isinstance(self.sources, Sensor):
            return MultiReader(self.sources, pieces, first)
        # a single file: one piece a part, and everything after part k is one range
        return Piece(self.sources, pieces[0].start, None if after else pieces[0].stop).open(first)

    @property
    def files(self) -> list[str]:
        return [self.sources] if isinstance(self.sources, str) else list(self.sources.files)


def _pcap_header(path: str):
    """(endian, record limit, fraction limit) of a plain (uncompressed) pcap file, else None."""
    try:
        with open(path, "rb") as f:
            head = f.read(PCAP_HEADER)
    except OSError:
        return None
    if len(head) < PCAP_HEADER or head[:4] not in PCAP_MAGICS:
        return None
    e, tick = PCAP_MAGICS[head[:4]]
    snaplen = struct.unpack_from(e + "I", head, 16)[0]
    limit = max(snaplen, 65535) if 0 < snaplen <= MAX_FRAME else MAX_FRAME
    return e, limit, 1_000_000 if tick == 1e-6 else 1_000_000_000


def _record_start_near(path: str, offset: int, header, chain: int = 16) -> int | None:
    """The first offset at or after ``offset`` where ``chain`` plausible pcap record headers
    follow one another (a guess; the count pass proves it, :func:`count_records`)."""
    e, limit, frac_max = header
    size = os.path.getsize(path)
    unpack = struct.Struct(e + "IIII").unpack_from
    with open(path, "rb") as f:
        f.seek(offset)
        buf = f.read(min(size - offset, 2 * limit + chain * (limit + 16) + 64))
    for p in range(0, max(0, len(buf) - 16)):
        q, sec0, ok = p, None, True
        for _ in range(chain):
            if q + 16 > len(buf):
                ok = q == len(buf) and offset + q == size
                break
            sec, frac, cap, orig = unpack(buf, q)
            if cap > limit or frac >= frac_max or (orig and orig < cap) or \
                    (sec0 is not None and abs(sec - sec0) > 86400):
                ok = False
                break
            sec0 = sec
            q += 16 + cap
        if ok:
            return offset + p
    return None


def count_records(path: str, start: int, stop: int):
    """Walk the record headers of a plain pcap file from ``start`` (a record's offset) to
    ``stop``: (records, offset reached, first and last record seconds), or None when a
    header looks damaged (the reader's rules: impossible length or fraction, a jump of more
    than a day), so that the reader might not hand on one frame a record.  The records are
    found by the reader's walk (in strides, capture/walk.py) and their headers checked a
    window at a time.  Runs as a task."""
    header = _pcap_header(path)
    if header is None:
        return None
    e, limit, frac_max = header
    walk = record_walk()
    size = os.path.getsize(path)
    n, pos, first, last = 0, start, None, None
    with open(path, "rb") as f:
        while pos < stop:
            base = pos - pos % mmap.ALLOCATIONGRANULARITY
            length = min(_WINDOW, size - base)
            if pos + 16 > base + length:
                break
            with mmap.mmap(f.fileno(), length, offset=base, access=mmap.ACCESS_READ) as m:
                offs, p, broken = walk(m, pos - base, length, limit, e, stop - base)
                if broken:
                    return None
                # a record that starts before ``stop`` but runs past the window is checked
                # here too (and walked in the next window)
                more = p < stop - base and p + 16 <= length
                hdr = headers(m, np.append(offs, p) if more else offs, e)
            if len(hdr):
                sec = hdr[:, 0]
                jumps = np.abs(np.diff(sec, prepend=sec[0] if last is None else last))
                if (hdr[:, 1] >= frac_max).any() or (jumps > 86400).any():
                    return None
                if len(offs):
                    first = int(sec[0]) if first is None else first
                    last = int(sec[len(offs) - 1])
                    n += len(offs)
            if base + p == pos:
                break
            pos = base + p
    return n, pos, first, last


def count_frames(piece: Piece) -> int | None:
    """The frames the reader hands on for a whole file (any format): a count task."""
    header = _pcap_header(piece.path)
    if header is not None:
        size = os.path.getsize(piece.path)
        counted = count_records(piece.path, PCAP_HEADER, size)
        if counted is not None and counted[1] == size:
            return counted[0]
    n = 0
    try:
        reader = open_capture(piece.path)
    except CaptureError:
        return 0  # skipped by the reading too
    try:
        for b in reader.batches():
            n += len(b)
    except CaptureError:
        pass  # the rest of the file is skipped by the reading too
    finally:
        reader.close()
    return n


def _count_task(kind: str, *args):
    return count_frames(*args) if kind == "file" else count_records(*args)


def cut(sources, n: int, min_part: int | None = None) -> list[list[Piece]]:
    """Cut a capture into at most ``n`` parts of about equal size (at least ``min_part``
    bytes each): a ring's files between files, a single plain pcap file at a record start."""
    if min_part is None:
        min_part = number("DICOMTRACE_MIN_PART")
    files = [sources] if isinstance(sources, str) else list(sources.files)
    sizes = [os.path.getsize(p) for p in files]
    total = sum(sizes)
    parts = max(1, min(n, total // max(1, min_part)))
    if parts == 1 or sources == "-":
        return [[Piece(p) for p in files]]
    cuts: list[tuple[int, int]] = []  # (file index, byte offset; 0: before the file)
    acc = 0
    for i, (path, size) in enumerate(zip(files, sizes)):
        for k in range(1, parts):
            c = k * total / parts
            if not acc <= c < acc + size:
                continue
            local = int(c - acc)
            header = _pcap_header(path) if len(files) == 1 else None
            at = _record_start_near(path, local, header) if header and local > PCAP_HEADER else None
            if at is not None and PCAP_HEADER < at < size:
                cuts.append((i, at))
            elif local < size / 2 and i > 0:
                cuts.append((i, 0))
            elif i + 1 < len(files):
                cuts.append((i + 1, 0))
        acc += size
    bounds = [(0, 0)] + sorted(set(c for c in cuts if c != (0, 0))) + [(len(files), 0)]
    out = []
    for (i, start), (j, stop) in zip(bounds, bounds[1:]):
        pieces = []
        while i < j or (i == j and stop):
            pieces.append(Piece(files[i], start or None, stop if i == j else None))
            if i == j:
                break
            i, start = i + 1, 0
        if pieces:
            out.append(pieces)
    return out


def count_tasks(cuts: list, n: int):
    """The count tasks for cut captures (:func:`cut`'s parts, one list per capture): one a
    whole file of every part but the last, and a range in up to ``n`` stretches at once,
    each from a guessed record start that the stretch before it must end on exactly.
    Returns (tasks, where each result goes)."""
    tasks, where = [], []
    for i, parts in enumerate(cuts):
        for k, pieces in enumerate(parts[:-1]):
            for j, p in enumerate(pieces):
                if p.start is None and p.stop is None:
                    tasks.append((_count_task, ("file", p)))
                    where.append((i, k, j))
                    continue
                a, b = p.start or PCAP_HEADER, p.stop or os.path.getsize(p.path)
                marks = [a] + [_record_start_near(p.path, a + (b - a) * m // n, _pcap_header(p.path))
                               for m in range(1, n if b - a >= n * MIN_COUNT else 1)] + [b]
                if None in marks or marks != sorted(set(marks)):
                    marks = [a, b]
                for x, y in zip(marks, marks[1:]):
                    tasks.append((_count_task, ("range", p.path, x, y)))
                    where.append((i, k, j, y))
    return tasks, where


def finish_plans(all_sources: list, cuts: list, where, counted) -> list[Plan] | None:
    """The plans, frames numbered from the counts; None when a cut inside a file could not be
    proved (such a capture is then cut between files only, in ``cuts``: count again)."""
    bad = set()
    frames: dict = {}
    last_sec: dict = {}
    for (i, k, j), c in _joined(where, counted):
        p = cuts[i][k][j]
        if p.start is None and p.stop is None:
            frames[(i, k, j)] = c
        elif c is None or (p.stop is not None and c[1] != p.stop) or \
                (p.start and not _continues(p, last_sec.get(p.path))):
            bad.add(i)
        else:
            frames[(i, k, j)] = c[0]
            last_sec[p.path] = c[3]
    for i, parts in enumerate(cuts):  # the last part's first record, against the one before
        p = parts[-1][0]
        if i not in bad and p.start and not _continues(p, last_sec.get(p.path)):
            bad.add(i)
    for i in bad:  # between files only
        cuts[i] = _whole_files(cuts[i])
    if bad:
        return None
    plans = []
    for i, (sources, parts) in enumerate(zip(all_sources, cuts)):
        first, out, in_file = 1, [], {}
        for k, pieces in enumerate(parts):
            placed = []
            for j, p in enumerate(pieces):
                placed.append(replace(p, skip=in_file.get(p.path, 0) if p.start else 0))
                if k + 1 < len(parts):
                    in_file[p.path] = in_file.get(p.path, 0) + frames[(i, k, j)]
            out.append(Part(first, placed))
            if k + 1 < len(parts):
                first += sum(frames[(i, k, j)] for j in range(len(pieces)))
        plans.append(Plan(sources, out))
    return plans


def first_part(sources, parts: list[list[Piece]]) -> Plan:
    """The plan as far as part 0 needs it: its frames from 1, no count of the others (its
    continuation numbers on from its own last frame), so it can start before the count."""
    return Plan(sources, [Part(1, parts[0])] + [Part(0, pieces) for pieces in parts[1:]])


def plan_parts(all_sources: list, n: int, mapper, min_part: int | None = None) -> list[Plan]:
    """Cut every capture into parts and number their frames: the count tasks
    (:func:`count_tasks`) run by ``mapper``, as the analysis tasks are."""
    cuts = [cut(s, n, min_part) for s in all_sources]
    while True:
        tasks, where = count_tasks(cuts, n)
        plans = finish_plans(all_sources, cuts, where, mapper(tasks) if tasks else [])
        if plans is not None:
            return plans


def _joined(where, counted):
    """The count of each piece from the counts of its stretches (None when a stretch did
    not end where the next begins, or a day passes between two)."""
    out: dict = {}
    for w, c in zip(where, counted):
        key = w[:3]
        if len(w) == 3:
            out[key] = c
            continue
        prev = out.get(key, (0, None, None, None))
        if prev is None or c is None or c[1] != w[3] or \
                (prev[3] is not None and c[2] is not None and abs(c[2] - prev[3]) > 86400):
            out[key] = None
        else:
            out[key] = (prev[0] + c[0], c[1], prev[2] if prev[2] is not None else c[2],
                        c[3] if c[3] is not None else prev[3])
    return list(out.items())


def _continues(p: Piece, before: int | None) -> bool:
    """Whether the record at ``p.start`` is no jump of more than a day from the record
    before it (seconds ``before``): the reader of the whole file would not have judged it
    damaged either."""
    e = _pcap_header(p.path)[0]
    with open(p.path, "rb") as f:
        f.seek(p.start)
        head = f.read(16)
    return before is not None and len(head) == 16 and abs(struct.unpack(e + "I", head[:4])[0] - before) <= 86400


def _whole_files(parts: list[list[Piece]]) -> list[list[Piece]]:
    """The same cut with every file whole (in the part where it begins)."""
    out, seen = [], set()
    for pieces in parts:
        whole = [Piece(p.path) for p in pieces if p.path not in seen]
        seen |= {p.path for p in pieces}
        if whole:
            out.append(whole)
    return out


# -- a task -----------------------------------------------------------------------------

def flow_pairs(segs: Segments):
    """The address pair (both directions alike) of every segment: (pairs, index of each
    segment's pair)."""
    if segs.src.dtype == object:  # IPv6 addresses do not fit: the slow way
        pairs, inverse = {}, []
        for key in zip(segs.src.tolist(), segs.sport.tolist(), segs.dst.tolist(), segs.dport.tolist()):
            a, b = (key[0] << 16) | key[1], (key[2] << 16) | key[3]
            inverse.append(pairs.setdefault((min(a, b), max(a, b)), len(pairs)))
        return list(pairs), np.asarray(inverse, dtype=np.int64)
    a = (segs.src.astype(np.int64) << 16) | segs.sport
    b = (segs.dst.astype(np.int64) << 16) | segs.dport
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    if (lo == lo[0]).all() and (hi == hi[0]).all():  # one connection (bulk transfer)
        return [(int(lo[0]), int(hi[0]))], np.zeros(len(lo), dtype=np.int64)
    _, first, inverse = np.unique(lo * 0x9E3779B1 ^ hi, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    if (lo[first][inverse] != lo).any() or (hi[first][inverse] != hi).any():  # a hash collision
        rows = np.stack([lo, hi], axis=1)
        uniq, inverse = np.unique(rows, axis=0, return_inverse=True)
        return [(int(x), int(y)) for x, y in uniq.tolist()], inverse.reshape(-1)
    return [(int(lo[i]), int(hi[i])) for i in first.tolist()], inverse


def conn_pair(c) -> tuple[int, int]:
    a, b = (c.client_ip << 16) | c.client_port, (c.server_ip << 16) | c.server_port
    return (min(a, b), max(a, b))


def _syn(segs: Segments) -> np.ndarray:
    return (segs.flags & (TCP_SYN | TCP_ACK)) == TCP_SYN


class SkipOpen:
    """A part after the first: each address pair's segments count from its first SYN (a
    connection open at the part's start is an earlier task's); the skipped frames are
    noted (pair -> [first, last]).  Pairs in ``adopt`` are taken whole (the merge found
    that no earlier task has them: the connection began before the capture)."""

    def __init__(self, adopt=()):
        self.started = set(adopt)
        self.skipped: dict[tuple, list[int]] = {}

    def __call__(self, segs: Segments) -> Segments:
        if not len(segs):
            return segs
        pairs, inverse = flow_pairs(segs)
        if all(p in self.started for p in pairs):
            return segs
        syn = _syn(segs)
        keep = np.ones(len(segs), dtype=bool)
        for j, p in enumerate(pairs):
            if p in self.started:
                continue
            idx = np.flatnonzero(inverse == j)
            s = idx[syn[idx]]
            drop = idx[idx < s[0]] if len(s) else idx
            if len(drop):
                seen = self.skipped.setdefault(p, [int(segs.frame[drop[0]]), 0])
                seen[1] = int(segs.frame[drop[-1]])
                keep[drop] = False
            if len(s):
                self.started.add(p)
        return segs.subset(np.flatnonzero(keep))


class Continuation:
    """After a part's end: the segments of the address pairs in the TCP table, until every
    connection on them has closed and ``GRACE`` s have passed, and at least to the frames
    ``extend`` asks for (pair -> frame); a new SYN (the TCP stage opens a new connection)
    hands a pair over.  ``stop_frame``: the last frame looked at; ``handovers``: pair ->
    frame of the new connection."""

    def __init__(self, plan: Plan, k: int, extend: dict | None = None):
        self.plan, self.k = plan, k
        self.extend = dict(extend or {})
        self.stop_frame: int | None = None  # set from the part's reader
        self.handovers: dict[tuple, int] = {}

    def __call__(self, tcp, part):
        """Read on after ``part`` (the part's reader, done): frames numbered on from its
        last one, so that a part needs no count of its own."""
        last_time, self.stop_frame = part.last_time, part.frames
        followed = {}
        for c in tcp.connections:
            followed[conn_pair(c)] = c  # the latest connection on each pair
        if not followed:
            return
        reader = self.plan.reader(self.k, after=True, first=part.frames + 1)
        scratch = NetStats()
        need = max(self.extend.values(), default=0)
        done_at = None  # capture time when the last followed connection was closed
        try:
            for batch in reader.batches():
                if not len(batch):
                    continue
                end_frame = batch.first_frame + len(batch) - 1
                segs = decode_batch(batch, scratch)
                segs = self._wanted(segs, followed)
                # a connection closes only on a FIN or a RST: fed up to each, the end is seen
                closing = np.flatnonzero(segs.flags & (TCP_FIN | TCP_RST)) + 1
                pos = 0
                while True:
                    active = [c for p, c in followed.items() if p not in self.handovers]
                    if not active:
                        return
                    stop = len(segs)
                    if all(c.closed_reported for c in active) and self.stop_frame >= need:
                        if done_at is None:
                            done_at = last_time if last_time is not None else float(batch.times[0])
                        j0 = self.stop_frame + 1 - batch.first_frame
                        late = np.flatnonzero(batch.times[j0:] > done_at + GRACE)
                        if len(late):  # the grace ends in this batch: read no further
                            cut_frame = batch.first_frame + j0 + int(late[0])
                            stop = pos + int(np.searchsorted(segs.frame[pos:], cut_frame))
                            end_frame = cut_frame - 1
                    k = int(np.searchsorted(closing, pos, side="right"))
                    upto = min(stop, int(closing[k]) if k < len(closing) else stop)
                    n0 = len(tcp.connections)
                    if upto > pos:
                        yield segs.subset(np.arange(pos, upto))
                        last_time = float(segs.time[upto - 1])
                    for c in tcp.connections[n0:]:
                        self.handovers.setdefault(conn_pair(c), c.first_frame)
                    pos = upto
                    if pos < stop:
                        self.stop_frame = int(segs.frame[pos]) - 1
                        continue
                    self.stop_frame = end_frame
                    if stop < len(segs) or end_frame < batch.first_frame + len(batch) - 1:
                        return
                    break
            self.stop_frame = None  # read to the end of the capture
        finally:
            reader.close()

    @staticmethod
    def _wanted(segs: Segments, followed) -> Segments:
        if not len(segs):
            return segs
        pairs, inverse = flow_pairs(segs)
        wanted = [j for j, p in enumerate(pairs) if p in followed]
        return segs.subset(np.flatnonzero(np.isin(inverse, wanted)))


@dataclass
class PartResult:
    """What a task hands back (it pickles)."""

    analysis: Analysis
    objects: list | None
    net: NetStats
    problems: list
    first_time: float | None
    last_time: float | None
    compressed: bool
    linktypes: set
    files: list
    format: str
    skipped: dict = field(default_factory=dict)
    stop_frame: int | None = None  # last frame looked at (None: the end of the capture)
    handovers: dict = field(default_factory=dict)
    given: tuple = ((), {})  # the (adopt, extend) the task ran with


def run_part(plan: Plan, k: int, config: AnalysisConfig, series: bool = False, export_options=None,
             tag: str = "", progress=None, adopt=(), extend=None, dicom: bool = True) -> PartResult:
    """Task ``k`` of ``plan``: its part, and its continuation (see the module's docstring).
    Runs in another process (a pool's or a Dask worker's): arguments and result pickle.
    ``progress``: a progress bar of the reading (output/progress.py), or the number of this
    task's counters in a pool's one bar (:class:`SlotProgress`)."""
    exporter = None
    if export_options is not None:
        from dicomtrace.export.part10 import Part10Exporter

        exporter = Part10Exporter(export_options, tag=f"{tag}p{k}")
    if isinstance(progress, int):  # a slot of the pool's one bar
        progress = SlotProgress(progress)
    last = k + 1 == len(plan.parts)
    reader = plan.reader(k)
    skip = SkipOpen(adopt) if k > 0 else None
    after = Continuation(plan, k, extend) if not last else None
    try:
        engine = Engine(config, [exporter] if exporter is not None else [], series=series, dicom=dicom,
                        select=skip, after=after, link=False, progress=progress)
        analysis = engine.run(reader)
    finally:
        reader.close()
    return PartResult(analysis, exporter.close_open() if exporter is not None else None,
                      engine.net, list(reader.problems), reader.first_time, reader.last_time,
                      reader.compressed, set(reader.linktypes), list(getattr(reader, "files", ())),
                      reader.format, skip.skipped if skip is not None else {},
                      after.stop_frame if after is not None else None,
                      after.handovers if after is not None else {}, (set(adopt), dict(extend or {})))


# -- the merge --------------------------------------------------------------------------

@dataclass
class Needs:
    """What the merge could not prove: re-run tasks with these."""

    adopt: dict = field(default_factory=dict)  # task -> pairs to take whole
    extend: dict = field(default_factory=dict)  # task -> {pair: frame to follow at least to}

    def __bool__(self) -> bool:
        return bool(self.adopt or self.extend)


def _fresh(c, old) -> bool:
    """Whether ``c`` (opened by a SYN in a later part) is a new connection by the TCP
    stage's rule, after ``old`` on the same pair: another initial sequence number from the
    same side, nothing of ``old`` still held back."""
    if c.oriented_by != "syn" or c.half[0].isn is None:
        return False
    side = old.half[0] if (old.client_ip, old.client_port) == (c.client_ip, c.client_port) else old.half[1]
    if any(h.ooo or h.zero_window_start is not None for h in old.half) or not old.closed_reported:
        return False
    return side.isn is None or side.isn != c.half[0].isn


def verify(plan: Plan, results: list[PartResult]):
    """The connections of one run, from the tasks' results (see the module's docstring):
    (accepted connections, needs).  Raises nothing; ``needs`` is empty when proved."""
    needs = Needs()
    cov: dict[tuple, tuple] = {}  # pair -> (last frame covered or None: to the end, conn, task)
    accepted = []
    for k, r in enumerate(results):
        nxt = plan.parts[k + 1].first_frame if k + 1 < len(plan.parts) else None
        for p, (first, last) in r.skipped.items():
            if p not in cov:
                needs.adopt.setdefault(k, set()).add(p)
                continue
            end, _c, owner = cov[p]
            if end is not None and last > end:
                needs.extend.setdefault(owner, {})[p] = max(last, needs.extend.get(owner, {}).get(p, 0))
        latest = {}
        for c in sorted(r.analysis.connections, key=lambda c: c.first_frame):
            if nxt is not None and c.first_frame >= nxt:
                continue  # opened in the continuation: a later task's
            p = conn_pair(c)
            if p in cov:
                end, old, owner = cov[p]
                if end is None or c.first_frame <= end:
                    if end is not None and c.last_frame > end:
                        needs.extend.setdefault(owner, {})[p] = max(
                            c.last_frame, needs.extend.get(owner, {}).get(p, 0))
                    continue  # the earlier task's connection (a retransmitted SYN)
                if not _fresh(c, old):
                    needs.extend.setdefault(owner, {})[p] = max(
                        c.last_frame, needs.extend.get(owner, {}).get(p, 0))
                    continue
            accepted.append(c)
            latest[p] = c
        for p, c in latest.items():
            h = r.handovers.get(p)
            end = h - 1 if h is not None else r.stop_frame
            cov[p] = (end, c, k)
    return accepted, needs


def merge_parts(plan: Plan, results: list[PartResult], ports, link: bool = True):
    """One analysis from the results of a plan's tasks, numbered as one run would:
    connections and associations in order of their first frame, C-MOVEs linked.  Returns
    (analysis, exported objects or None, needs): analysis None when ``needs`` asks for
    re-runs."""
    accepted, needs = verify(plan, results)
    if needs:
        return None, None, needs
    keep = {id(c) for c in accepted}
    conns = sorted(accepted, key=lambda c: c.first_frame)
    for i, c in enumerate(conns, 1):
        c.id = i
    assocs = sorted((x for r in results for x in r.analysis.associations if id(x.conn) in keep),
                    key=lambda x: x.conn.id)
    for i, a in enumerate(assocs, 1):
        a.id = i
    if link:
        link_operations(assocs)
    tls = sorted((s for r in results for s in r.analysis.tls_connections if id(s.conn) in keep),
                 key=lambda s: s.conn.id)
    plain = [p for r in results for p in r.analysis.plain_on_tls_port if id(p.conn) in keep]
    objects = None
    if results[0].objects is not None:
        mine = {id(a) for a in assocs}
        objects = []
        for r in results:
            for o in r.objects:
                if id(o.association) in mine:
                    objects.append(o)
                else:
                    o.temp.unlink(missing_ok=True)
    first = results[0].analysis
    return (Analysis(assocs, conns, summary(plan, results), ports, tls_connections=tls,
                     plain_on_tls_port=plain, tls_ports=first.tls_ports), objects, needs)


def discard(results: list[PartResult]) -> None:
    """Results not used (a re-run replaces them): their exported files go."""
    for r in results:
        for o in r.objects or ():
            o.temp.unlink(missing_ok=True)


def summary(plan: Plan, results: list[PartResult]) -> CaptureSummary:
    """The capture summary of one run over every part."""
    net = NetStats()
    for r in results:
        s = r.net
        net.frames += s.frames
        net.bytes += s.bytes
        net.tcp_segments += s.tcp_segments
        net.non_ip += s.non_ip
        net.non_tcp += s.non_tcp
        net.ipv4_fragments += s.ipv4_fragments
        net.malformed += s.malformed
        if net.first_fragment_frame is None:
            net.first_fragment_frame = s.first_fragment_frame
        if net.first_malformed_frame is None:
            net.first_malformed_frame = s.first_malformed_frame
        for lt, n in s.unsupported_links.items():
            net.unsupported_links[lt] = net.unsupported_links.get(lt, 0) + n
    problems = [p for r in results for p in r.problems]
    problems += [CaptureProblem("warning", msg) for msg in net.problems()]
    files = []
    for r in results:
        for f in r.files:
            if files and files[-1].path == f.path:  # one file split between parts
                prev = files[-1]
                prev.frames += f.frames
                prev.last_time = f.last_time if f.frames else prev.last_time
                prev.first_time = prev.first_time if prev.first_time is not None else f.first_time
            else:
                files.append(f)
    firsts = [r.first_time for r in results if r.first_time is not None]
    lasts = [r.last_time for r in results if r.last_time is not None]
    return CaptureSummary(
        path=plan.sources if isinstance(plan.sources, str) else sensor_path(plan.sources.files),
        format=results[0].format, packets=net.frames, bytes=net.bytes,
        first_time=firsts[0] if firsts else None, last_time=lasts[-1] if lasts else None,
        compressed=any(r.compressed for r in results),
        linktypes=sorted({t for r in results for t in r.linktypes}), problems=problems, files=files)


# -- running ----------------------------------------------------------------------------

_SLOTS = None  # the tasks' progress counters, shared with a pool's processes (forked)


class SlotProgress:
    """The engine's progress interface for task ``slot`` of a pool: what it has read (bytes,
    packets, associations found) goes to its counters, which :func:`pool_map` sums into one
    bar."""

    def __init__(self, slot: int):
        self.slot = slot

    def __call__(self, read: int, packets: int, found: int) -> None:
        if _SLOTS is not None:
            i = 3 * self.slot
            _SLOTS[i], _SLOTS[i + 1], _SLOTS[i + 2] = read, packets, found

    def close(self) -> None:
        pass


class Inline:
    """Tasks run in this process as they are submitted (the executor of ``--jobs 1``)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass

    def submit(self, fn, args):
        return _Done(fn(*args))

    def gather(self, handles, meanwhile=None) -> list:
        if meanwhile is not None:
            meanwhile()
        return [h.get() for h in handles]


class _Done:
    def __init__(self, value):
        self.value = value

    def get(self):
        return self.value


class LocalPool:
    """A pool of ``processes`` local processes (forked).  ``slots``: the number of tasks
    with progress counters (:class:`SlotProgress`), shown summed in the one bar that
    ``progress()`` makes while :meth:`gather` waits."""

    def __init__(self, processes: int, slots: int = 0, progress=None):
        self.processes, self.slots, self.progress = processes, slots, progress
        self.bar = None

    def __enter__(self):
        import multiprocessing

        global _SLOTS
        ctx = multiprocessing.get_context("fork")
        if self.progress is not None and self.slots:
            _SLOTS = ctx.Array("q", 3 * self.slots, lock=False)
        self.pool = ctx.Pool(self.processes)
        return self

    def __exit__(self, *exc) -> None:
        global _SLOTS
        try:
            if self.bar is not None:
                self.bar.close()
            self.pool.terminate()
        finally:
            _SLOTS = None

    def submit(self, fn, args):
        return self.pool.apply_async(fn, args)

    def gather(self, handles, meanwhile=None) -> list:
        """The results in order; the one bar's counters shown while waiting.  ``meanwhile``:
        run here once the first task is done (this process's own work after the tasks:
        with every core busy analysing until then, it would only take time from them)."""
        if _SLOTS is None and meanwhile is None:
            return [h.get() for h in handles]
        if _SLOTS is not None and self.bar is None:
            self.bar = self.progress()  # after the fork: its refresh thread stays here
        shown = 0.0
        for h in handles:
            while not h.ready():
                h.wait(BAR_EVERY if meanwhile is None else MEANWHILE_POLL)
                if meanwhile is not None and any(x.ready() for x in handles):
                    meanwhile()
                    meanwhile = None
                if _SLOTS is not None and time.monotonic() - shown >= BAR_EVERY:
                    counts = list(_SLOTS)
                    self.bar(sum(counts[0::3]), sum(counts[1::3]), sum(counts[2::3]))
                    shown = time.monotonic()
        if _SLOTS is not None:  # (the last counts)
            counts = list(_SLOTS)
            self.bar(sum(counts[0::3]), sum(counts[1::3]), sum(counts[2::3]))
        if meanwhile is not None:  # (every task was done at once)
            meanwhile()
        return [h.get() for h in handles]


def pool_map(tasks, processes: int, progress=None):
    """Run ``(function, args)`` tasks on a pool of ``processes``, results in task order.
    ``progress``: makes the one progress bar (output/progress.py) of all the tasks, whose
    ``SlotProgress(i)`` (task i's) counters it shows summed while waiting."""
    if processes <= 1 or len(tasks) <= 1:
        return [fn(*args) for fn, args in tasks]
    with LocalPool(min(processes, len(tasks)), len(tasks), progress) as pool:
        return pool.gather([pool.submit(fn, args) for fn, args in tasks])


def auto_jobs(paths) -> int:
    """Two processes pay for themselves on large capture files (not stdin, not live)."""
    if isinstance(paths, str) or paths is None:
        paths = [paths] if paths and paths != "-" else []
    try:
        size = sum(os.path.getsize(p) for p in paths if os.path.isfile(p))
    except OSError:
        return 1
    return min(2, os.cpu_count() or 1) if paths and size >= (256 << 20) else 1
