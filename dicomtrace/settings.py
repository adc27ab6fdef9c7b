"""The ``DICOMTRACE_*`` environment settings the tool itself reads.

They are switches for tests, benchmarks and support (the reference paths of the TCP,
Upper Layer and record-walk stages, the size of a part, when a progress bar appears, the
redaction key, tracebacks).  Each is read where it acts, often in a worker process, through
:func:`choice` or :func:`number`, so that its values and default are written here once; a
wrong value there raises ValueError.  :func:`check_environment` is run when a command
starts: a value that is none of the setting's is a one-line error before anything is read.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

CHOICES = {  # name: its values, the default first
    "DICOMTRACE_TCP_PATH": ("batch", "segment"),  # tcp/reassembly.py
    "DICOMTRACE_UL_PATH": ("run", "pdu"),  # engine.py: PDV runs, or one PDU at a time
    "DICOMTRACE_WALK_PATH": ("stride", "record"),  # capture/walk.py
}
NUMBERS = {  # name: (default, the smallest value that makes sense)
    "DICOMTRACE_MIN_PART": (64 << 20, 1),  # parallel.py: bytes of the smallest part of a capture
    "DICOMTRACE_PROGRESS_MIN": (64 << 20, 0),  # output/progress.py: bytes before a progress bar
}
TEXTS = ("DICOMTRACE_REDACT_KEY",)  # redact.py: any text but an empty one
# DICOMTRACE_DEBUG: any value (set: tracebacks instead of the one-line internal error)


def choice(name: str, environ: Mapping[str, str] = os.environ) -> str:
    """The value of a :data:`CHOICES` setting (its default when unset)."""
    values = CHOICES[name]
    v = environ.get(name, values[0])
    if v not in values:
        raise ValueError(f"{name}={v!r}: expected {' or '.join(values)}")
    return v


def number(name: str, environ: Mapping[str, str] = os.environ) -> int:
    """The value of a :data:`NUMBERS` setting (its default when unset)."""
    default, least = NUMBERS[name]
    v = environ.get(name)
    if v is None:
        return default
    try:
        n = int(v)
    except ValueError:
        n = least - 1
    if n < least:
        raise ValueError(f"{name}={v!r}: expected a whole number of at least {least}")
    return n


def check_environment(environ: Mapping[str, str] = os.environ) -> list[str]:
    """What is wrong with the settings in ``environ``: one message per bad value."""
    problems = []
    for name in (*CHOICES, *NUMBERS):
        try:
            (choice if name in CHOICES else number)(name, environ)
        except ValueError as e:
            problems.append(str(e))
    for name in TEXTS:
        if environ.get(name) == "":
            problems.append(f"{name} is set but empty")
    return problems
