"""The ``DICOMTRACE_*`` environment settings the tool itself reads.

They are switches for tests, benchmarks and support (the reference paths of the TCP,
Upper Layer and record-walk stages, the size of a part, when a progress bar appears, the
redaction key, tracebacks): each is read where it acts, often in a worker process, so a
wrong value would surface there as an internal error, or, for a switch with a default,
not at all.  :func:`check_environment` is run when a command starts: a value that is not
one of the setting's values is a one-line error before anything is read.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

CHOICES = {
    "DICOMTRACE_TCP_PATH": ("batch", "segment"),  # tcp/reassembly.py
    "DICOMTRACE_UL_PATH": ("run", "pdu"),  # engine.py: PDV runs, or one PDU at a time
    "DICOMTRACE_WALK_PATH": ("stride", "record"),  # capture/walk.py
}
NUMBERS = {  # name: the smallest value that makes sense
    "DICOMTRACE_MIN_PART": 1,  # parallel.py: bytes of the smallest part of a capture
    "DICOMTRACE_PROGRESS_MIN": 0,  # output/progress.py: bytes before a progress bar
}
TEXTS = ("DICOMTRACE_REDACT_KEY",)  # redact.py: any text but an empty one
# DICOMTRACE_DEBUG: any value (set: tracebacks instead of the one-line internal error)


def check_environment(environ: Mapping[str, str] = os.environ) -> list[str]:
    """What is wrong with the settings in ``environ``: one message per bad value."""
    problems = []
    for name, values in CHOICES.items():
        v = environ.get(name)
        if v is not None and v not in values:
            problems.append(f"{name}={v!r}: expected {' or '.join(values)}")
    for name, least in NUMBERS.items():
        v = environ.get(name)
        if v is None:
            continue
        try:
            ok = int(v) >= least
        except ValueError:
            ok = False
        if not ok:
            problems.append(f"{name}={v!r}: expected a whole number of at least {least}")
    for name in TEXTS:
        if environ.get(name) == "":
            problems.append(f"{name} is set but empty")
    return problems
