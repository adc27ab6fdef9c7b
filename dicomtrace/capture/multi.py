"""Several capture files read as one: ring buffers, folders, sensors.

A capture left running for a day is a sequence of files: tcpdump ``-C`` writes
``name``, ``name1``, ``name2``... (with ``-W`` as well, ``name00``, ``name01``...,
zero-padded to the width of the count), dumpcap's ring buffer
``name_00001_20261201123456.pcapng``.  Files are ordered by the time of their first
packet (a wrapped ring's oldest file has the highest number) and read as ONE
continuous capture: :class:`MultiReader` hands on the frames of each file in turn
with continuous frame numbers, so TCP connections and associations that cross a
file boundary are reassembled whole.  :meth:`MultiReader.locate` turns a frame
number back into "file X frame N".

Files from different capture points (sensors) are never mixed into one sequence:
:func:`plan_sensors` puts every folder in a sensor of its own (or as ``--sensor
NAME=GLOB`` says), and each sensor is analysed by its own reassembly.
"""

from __future__ import annotations

import fnmatch
import glob
import os
import re
from bisect import bisect_right
from dataclasses import dataclass, field, replace
from typing import Iterator, Sequence

from dicomtrace.capture.frames import CaptureError, CaptureProblem, FrameBatch
from dicomtrace.capture.reader import CaptureReader, open_capture

# dumpcap (and editcap -c/-i): PREFIX_NNNNN_YYYYMMDDHHMMSS[.ext]
_DUMPCAP = re.compile(r"^(?P<base>.+)_(?P<index>\d{5,})_(?P<stamp>\d{14})(?P<ext>(\.[A-Za-z0-9]+)*)$")
# tcpdump -C: NAME, NAME1, NAME2 ... or with -W: NAME00, NAME01 ...
_TCPDUMP = re.compile(r"^(?P<base>.*?\D)(?P<index>\d+)$")
_MAGICS = (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d",
           b"\x0a\x0d\x0d\x0a", b"\x1f\x8b")
_PROBE_CHUNK = 1 << 16  # enough to read a file's first packet for ordering


def ring_name(name: str) -> tuple[str, int] | None:
    """(base name, index) when ``name`` is a tcpdump or dumpcap ring file name.

    ``cap.pcap`` -> None, ``cap.pcap7`` -> ("cap.pcap", 7), ``cap03`` -> ("cap", 3),
    ``ring_00012_20261201101500.pcapng`` -> ("ring.pcapng", 12)."""
    m = _DUMPCAP.match(name)
    if m:
        return m["base"] + m["ext"], int(m["index"])
    m = _TCPDUMP.match(name)
    if m:
        return m["base"], int(m["index"])
    return None


def is_capture_file(path: str) -> bool:
    """A pcap, pcapng or gzip file, by its first four bytes (ring files have no suffix)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return False
    return any(head.startswith(m) for m in _MAGICS)


def first_packet_time(path: str) -> float | None:
    """The time of the first packet of a capture file (None if it has none)."""
    reader = open_capture(path, chunk_size=_PROBE_CHUNK)
    try:
        for batch in reader.batches():
            if len(batch):
                return float(batch.times[0])
    finally:
        reader.close()
    return None


# kernel timestamps are not monotonic across CPUs: a ring file may begin a little before its
# predecessor's last packet; more than this is two captures, not one ring
RING_SLACK = 0.01  # s (seen: well under a millisecond)


class OverlapError(CaptureError):
    """Two files of one capture point overlap in time: not one ring buffer."""

    @classmethod
    def of(cls, first: str, second: str) -> "OverlapError":
        return cls(f"{first} and {second} overlap in time, so they are not one ring buffer: the "
                   "same traffic seen at two points? (analyze A B --same-traffic); different "
                   "capture points? (a folder each, or --sensor NAME=GLOB)")


@dataclass(slots=True)
class CaptureFile:
    """One file of a sequence; frame numbers are filled in as it is read."""

    path: str
    sensor: str
    first_time: float | None = None
    last_time: float | None = None
    first_frame: int = 0  # frame number, in the whole sequence, of this file's first frame
    frames: int = 0

    def as_json(self) -> dict:
        return {"path": self.path, "sensor": self.sensor, "first_frame": self.first_frame,
                "frames": self.frames, "first_time": self.first_time, "last_time": self.last_time}


@dataclass(slots=True)
class Piece:
    """A capture file, or the records in bytes ``[start, stop)`` of a plain pcap file (one
    part of a file split by position, dicomtrace.parallel)."""

    path: str
    start: int | None = None  # byte offset of the first record (None: the file's first)
    stop: int | None = None  # byte offset after the last record (None: the end of the file)
    skip: int = 0  # frames of the file before ``start``

    def open(self, first_frame: int | None = None) -> CaptureReader:
        """A reader of this piece, frames numbered from ``first_frame`` (default: as
        counted within the file)."""
        return open_capture(self.path, start=self.start, stop=self.stop,
                            first_frame=self.skip + 1 if first_frame is None else first_frame)


@dataclass(slots=True)
class Sensor:
    """The files of one capture point, in the order they are to be read."""

    name: str
    files: list[str] = field(default_factory=list)


def order_files(paths: Sequence[str]) -> list[str]:
    """Files in the order of their first packet; ties (and empty files) by ring index."""
    def key(p):
        t = first_packet_time(p)
        ring = ring_name(os.path.basename(p))
        return (t is None, t or 0.0, ring[0] if ring else os.path.basename(p),
                ring[1] if ring else -1, p)
    return sorted(paths, key=key)


def _folder_files(folder: str) -> list[str]:
    names = sorted(n for n in os.listdir(folder) if not n.startswith("."))
    return [os.path.join(folder, n) for n in names
            if os.path.isfile(os.path.join(folder, n)) and is_capture_file(os.path.join(folder, n))]


def parse_sensor_option(text: str) -> tuple[str, str]:
    """``NAME=GLOB`` of ``--sensor``."""
    name, sep, pattern = text.partition("=")
    if not sep or not name.strip() or not pattern:
        raise ValueError(f"--sensor {text!r}: expected NAME=GLOB, e.g. ward3=/captures/ward3/*")
    return name.strip(), pattern


def plan_sensors(inputs: Sequence[str], sensor_globs: Sequence[tuple[str, str]] = ()) -> list[Sensor]:
    """Group capture files into sensors, each a sequence in reading order.

    ``inputs``: files and folders (a folder stands for the capture files in it).
    ``sensor_globs``: (NAME, GLOB) pairs; a file whose path matches GLOB belongs to
    sensor NAME, and GLOB's own matches are inputs too.  Any other file belongs to
    the sensor named after its folder.  Raises CaptureError for an input that does
    not exist, a folder without captures, or a glob that matches nothing."""
    files: list[str] = []
    for item in inputs:
        if os.path.isdir(item):
            found = _folder_files(item)
            if not found:
                raise CaptureError(f"{item}: no pcap or pcapng files in this folder")
            files += found
        elif os.path.exists(item):
            files.append(item)
        else:
            raise CaptureError(f"cannot open {item}: No such file or directory")
    for name, pattern in sensor_globs:
        matched = [p for p in sorted(glob.glob(pattern, recursive=True)) if os.path.isfile(p)]
        if not matched and not any(_matches(p, pattern) for p in files):
            raise CaptureError(f"--sensor {name}={pattern}: no file matches")
        files += matched
    seen: set[str] = set()
    by_sensor: dict[str, list[str]] = {}  # NAME of --sensor, or a folder's absolute path
    for p in files:
        real = os.path.realpath(p)
        if real in seen:
            continue
        seen.add(real)
        sensor = next((n for n, pat in sensor_globs if _matches(p, pat)), None)
        by_sensor.setdefault(sensor or os.path.dirname(os.path.abspath(p)), []).append(p)
    names = _folder_names([k for k in by_sensor if k not in {n for n, _ in sensor_globs}])
    return [Sensor(names.get(key, key), order_files(paths)) for key, paths in by_sensor.items()]


def _folder_names(folders: list[str]) -> dict[str, str]:
    """Short names for capture-point folders: the last path component, or as many of the
    last ones as it takes to tell them apart (site1/eth0, site2/eth0)."""
    names = {}
    for depth in range(1, 64):
        names = {f: "/".join(f.rstrip("/").split("/")[-depth:]) or "/" for f in folders}
        if len(set(names.values())) == len(names):
            break
    return names


def _matches(path: str, pattern: str) -> bool:
    return (fnmatch.fnmatch(path, pattern) or fnmatch.fnmatch(os.path.abspath(path), os.path.abspath(pattern))
            or fnmatch.fnmatch(os.path.basename(path), pattern))


def sensor_path(files: Sequence[str]) -> str:
    """How a capture point's files are named in the capture summary."""
    return files[0] if len(files) == 1 else f"{os.path.dirname(files[0]) or '.'} ({len(files)} files)"


class MultiReader:
    """The files of one sensor as one capture: the reader interface of
    :class:`~dicomtrace.capture.reader.CaptureReader` (``batches()``, ``problems``,
    ``format``, ``path``, times, link types), frames numbered on across files."""

    def __init__(self, sensor: Sensor, pieces: Sequence[Piece] | None = None, first_frame: int = 1):
        if not sensor.files:
            raise CaptureError(f"sensor {sensor.name}: no capture files")
        self.sensor = sensor.name
        # ``pieces``: only these files (or parts of files) of the sensor, the first numbered
        # ``first_frame`` (one part of the capture, dicomtrace.parallel)
        self.pieces = list(pieces) if pieces is not None else [Piece(p) for p in sensor.files]
        self.files = [CaptureFile(p.path, sensor.name) for p in self.pieces]
        first = open_capture(sensor.files[0])  # one-line errors for a bad file before any work
        self.format = first.format
        first.close()
        self.path = sensor_path(sensor.files)
        self.compressed = False
        self.problems: list[CaptureProblem] = []
        self.frames = first_frame - 1  # the last frame number handed on
        self.first_time: float | None = None
        self.last_time: float | None = None
        self.linktypes: set[int] = set()
        self._read_before = 0  # bytes of the files already read
        self._current: CaptureReader | None = None

    def batches(self) -> Iterator[FrameBatch]:
        for piece, f in zip(self.pieces, self.files):
            try:
                reader = piece.open()
            except CaptureError as e:
                self.problems.append(CaptureProblem("error", f"{e}; file skipped"))
                continue
            self._current = reader
            f.first_frame = self.frames + 1 - piece.skip
            try:
                for batch in reader.batches():
                    if f.frames == 0 and len(batch) and self.last_time is not None \
                            and batch.times[0] < self.last_time - RING_SLACK:
                        raise OverlapError.of(self._previous(f), f.path)
                    yield replace(batch, first_frame=self.frames + 1)
                    self.frames += len(batch)
                    f.frames += len(batch)
                    if len(batch):
                        if self.first_time is None:
                            self.first_time = float(batch.times[0])
                        self.last_time = float(batch.times[-1])
            except OverlapError:
                raise
            except CaptureError as e:
                self.problems.append(CaptureProblem("error", f"{e}; rest of the file skipped"))
            finally:
                self._absorb(reader, f)
                reader.close()
                self._current = None
            if f.frames:
                f.first_time, f.last_time = reader.first_time, reader.last_time

    def _previous(self, f: CaptureFile) -> str:
        return next(p.path for p in reversed(self.files[:self.files.index(f)]) if p.frames)

    def _absorb(self, reader: CaptureReader, f: CaptureFile) -> None:
        """Take over a finished file's problems, naming the file and both frame numbers."""
        self.compressed |= reader.compressed
        self.linktypes |= reader.linktypes
        self._read_before += reader.read_bytes
        name = os.path.basename(f.path)
        for p in reader.problems:
            frame = None if p.frame is None else f.first_frame + p.frame - 1
            where = f"{name}" + (f" frame {p.frame}" if p.frame is not None else "")
            self.problems.append(CaptureProblem(p.severity, f"{where}: {p.message}", frame, p.offset))

    @property
    def read_bytes(self) -> int:
        """Bytes read so far over all files (for a progress bar)."""
        return self._read_before + (self._current.read_bytes if self._current is not None else 0)

    def locate(self, frame: int) -> tuple[str, int] | None:
        """(file, frame number within that file) of a frame of the sequence."""
        return locate(self.files, frame)

    def close(self) -> None:
        if self._current is not None:
            self._current.close()


def locate(files: Sequence[CaptureFile], frame: int | None) -> tuple[str, int] | None:
    """(file, frame number within that file) of frame ``frame`` of a sequence."""
    if frame is None or not files:
        return None
    starts = [f.first_frame for f in files]
    i = bisect_right(starts, frame) - 1
    if i < 0 or frame >= files[i].first_frame + files[i].frames:
        return None
    return files[i].path, frame - files[i].first_frame + 1


def open_sources(sources) -> CaptureReader | MultiReader:
    """A reader for a path (``-`` for standard input) or a :class:`Sensor`."""
    if isinstance(sources, Sensor):
        return MultiReader(sources)
    return open_capture(sources)
