"""A progress bar on standard error for long reads of a capture file (issue #12).

Shown only when standard error is a terminal, the capture is a file of at least
:data:`PROGRESS_MIN` bytes and ``--quiet`` was not given; it shows the bytes read (of the
file's size, for an uncompressed capture), packets, associations found and the time
left, and disappears when the reading ends.  The analysis calls it once per batch of
frames (an engine tap: it only reads the counters it is given).
"""

from __future__ import annotations

import os
import sys
import time

from dicomtrace.settings import number

# bytes: smaller captures are read in a few seconds at most (DICOMTRACE_PROGRESS_MIN overrides)
PROGRESS_MIN = number("DICOMTRACE_PROGRESS_MIN")
REFRESH = 0.2  # s between updates


class ProgressBar:
    """rich's progress display, fed (bytes read, packets, associations)."""

    def __init__(self, total: int | None, *, what: str = "associations", file=None):
        from rich.console import Console
        from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn,
                                   TimeRemainingColumn)

        console = Console(file=file or sys.stderr, stderr=file is None)
        columns = [TextColumn("reading"), BarColumn(), DownloadColumn(),
                   TextColumn("{task.fields[packets]:,} packets, {task.fields[found]} " + what)]
        if total:
            columns.append(TimeRemainingColumn())
        self._progress = Progress(*columns, console=console, transient=True)
        self._task = self._progress.add_task("read", total=total, packets=0, found=0)
        self._progress.start()
        self._last = 0.0

    def __call__(self, read: int, packets: int, found: int) -> None:
        now = time.monotonic()
        if now - self._last < REFRESH:
            return
        self._last = now
        self._progress.update(self._task, completed=read, packets=packets, found=found)

    def close(self) -> None:
        self._progress.stop()


def _paths(path) -> list[str]:
    """A path or several (the files of a capture point), without standard input."""
    paths = [path] if isinstance(path, str) else list(path or [])
    return [p for p in paths if p != "-"]


def wanted(path, quiet: bool, stream=None) -> bool:
    """Whether a capture read (a file, or several read as one) deserves a progress bar
    (see the module's docstring)."""
    stream = stream or sys.stderr
    paths = _paths(path)
    if quiet or not paths or not stream.isatty():
        return False
    try:
        return sum(os.path.getsize(p) for p in paths if os.path.isfile(p)) >= PROGRESS_MIN
    except OSError:
        return False


def for_file(path, what: str = "associations") -> ProgressBar:
    """A bar for reading ``path`` (or several files as one): with their size as the total
    unless one is compressed (the bytes read are then the decompressed ones, with no total)."""
    paths = _paths(path)
    gz = False
    for p in paths:
        with open(p, "rb") as f:
            gz |= f.read(2) == b"\x1f\x8b"
    return ProgressBar(None if gz else sum(os.path.getsize(p) for p in paths), what=what)
