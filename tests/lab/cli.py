"""The command line under test."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from lab.base import CAPTURE_SUFFIXES, LabError, REPO_ROOT, SHARED_CAPTURES, run

# --------------------------------------------------------------------------
# the CLI under test
# --------------------------------------------------------------------------

def dicomtrace_cmd() -> list[str]:
    exe = shutil.which("dicomtrace")
    return [exe] if exe else [sys.executable, "-m", "dicomtrace"]


def dicomtrace_available(subcommand: str = "conversations") -> bool:
    """True when `dicomtrace SUBCOMMAND --help` runs (the CLI exists and has it)."""
    try:
        res = run(dicomtrace_cmd() + [subcommand, "--help"], timeout=60, check=False, cwd=REPO_ROOT)
    except LabError:
        return False
    return res.returncode == 0


def run_dicomtrace(*args, input: bytes | None = None, timeout: float = 300,
                   check: bool = True) -> subprocess.CompletedProcess:
    return run(dicomtrace_cmd() + [str(a) for a in args], input=input, timeout=timeout, check=check,
               cwd=REPO_ROOT)


def shared_captures() -> list[Path]:
    if not SHARED_CAPTURES.is_dir():
        return []
    return sorted(p for p in SHARED_CAPTURES.iterdir()
                  if p.is_file() and any(p.name.endswith(s) for s in CAPTURE_SUFFIXES))
