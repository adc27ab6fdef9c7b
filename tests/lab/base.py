"""Running commands, ports, paths: what every part of the lab uses."""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Sequence

DEFAULT_TIMEOUT = 60.0
TESTS_DIR = Path(__file__).resolve().parents[1]
REPO_ROOT = TESTS_DIR.parent


def _shared_root() -> Path:
    """../shared next to the repository; DICOMTRACE_SHARED names it for a checkout elsewhere;
    else, in a git worktree, the one beside the main checkout (the parent of the common git
    directory)."""
    if os.environ.get("DICOMTRACE_SHARED"):
        return Path(os.environ["DICOMTRACE_SHARED"])
    here = REPO_ROOT.parent / "shared"
    if here.is_dir():
        return here
    try:
        common = subprocess.run(["git", "rev-parse", "--path-format=absolute", "--git-common-dir"],
                                cwd=REPO_ROOT, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return here
    return Path(common).parent.parent / "shared" if common else here


SHARED_ROOT = _shared_root()
SHARED_CAPTURES = SHARED_ROOT / "captures"
CAPTURE_SUFFIXES = (".pcap", ".pcapng", ".cap", ".pcap.gz", ".pcapng.gz")

_counter = itertools.count(1)


class LabError(RuntimeError):
    """Something in the laboratory itself went wrong (not the code under test)."""


def skip(reason: str):
    """Skip the current test (pytest) or fail loudly outside pytest."""
    try:
        import pytest
    except ImportError:  # pragma: no cover - only outside pytest
        raise LabError(f"skipped: {reason}")
    pytest.skip(reason)


def unique_suffix() -> str:
    """Short, per-process unique suffix (pid + counter) for names."""
    return f"{os.getpid() % 100000}{next(_counter)}"


# --------------------------------------------------------------------------
# running commands
# --------------------------------------------------------------------------

def netns_prefix(netns: str | None) -> list[str]:
    return ["ip", "netns", "exec", netns] if netns else []


def run(cmd: Sequence[str], *, timeout: float = DEFAULT_TIMEOUT, check: bool = True,
        netns: str | None = None, input: bytes | None = None,
        cwd: str | os.PathLike | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run a command to completion (bytes in/out), never reading our stdin.

    On timeout the whole process group is killed and LabError raised; with
    check=True a non-zero exit raises LabError showing stderr.
    """
    full = netns_prefix(netns) + [str(c) for c in cmd]
    proc = subprocess.Popen(
        full, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd, env=env,
        start_new_session=True)
    try:
        out, err = proc.communicate(input=input, timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        out, err = proc.communicate()
        raise LabError(f"timeout after {timeout}s: {' '.join(full)}\n{err.decode(errors='replace')[-2000:]}")
    res = subprocess.CompletedProcess(full, proc.returncode, out, err)
    if check and proc.returncode != 0:
        raise LabError(f"exit {proc.returncode}: {' '.join(full)}\nstdout: "
                       f"{out.decode(errors='replace')[-2000:]}\nstderr: {err.decode(errors='replace')[-2000:]}")
    return res


def _kill_group(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    """Signal the process group of a process we started (start_new_session=True)."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)


def _stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
    """Send sig to the group, wait, then SIGKILL if needed. Returns the exit code."""
    if proc.poll() is None:
        _kill_group(proc, sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
    return proc.returncode


def wait_for(predicate, timeout: float, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise LabError(f"timeout after {timeout}s waiting for {what}")
        time.sleep(interval)


# --------------------------------------------------------------------------
# ports
# --------------------------------------------------------------------------

def work_dir(factory, name: str) -> Path:
    """A fresh directory for a test's captures: under $DICOMTRACE_LAB_KEEP/NAME when that is
    set (kept out of pytest's rotating tmp dirs, for looking at later), else a pytest tmp dir."""
    keep = os.environ.get("DICOMTRACE_LAB_KEEP")
    if keep:
        d = Path(keep) / name
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        return d
    return factory.mktemp(name.replace("/", "_"))


def free_port(host: str = "127.0.0.1", netns: str | None = None) -> int:
    """A TCP port nobody listens on.

    On loopback (no netns) the kernel picks one; ports in 20000-29999 are
    below Linux's default ephemeral range (32768-60999), so a client's own
    port cannot collide with a server port picked here. Inside a netns made
    by this lab everything is free, so a random port in that range is used.
    """
    if netns is None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        for _ in range(200):
            port = random.randint(20000, 29999)
            with socket.socket(family, socket.SOCK_STREAM) as s:
                try:
                    s.bind((host, port))
                except OSError:
                    continue
                return port
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            return s.getsockname()[1]
    return random.randint(20000, 29999)


def require_ipv6_loopback() -> None:
    """Skip unless ::1 can be bound (IPv6 enabled on lo)."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError as e:
        skip(f"no IPv6 loopback: {e}")


def port_listening(port: int, netns: str | None = None) -> bool:
    """True when some socket LISTENs on TCP port (checked with ss, no connection made).

    A connection attempt would show up in captures, so it is never used.
    """
    res = run(["ss", "-Hltn", f"sport = :{port}"], netns=netns, timeout=10, check=False)
    return bool(res.stdout.strip())


def wait_listening(port: int, netns: str | None = None, timeout: float = 20.0,
                   proc: subprocess.Popen | None = None, what: str = "server") -> None:
    def ready():
        if proc is not None and proc.poll() is not None:
            raise LabError(f"{what} exited with {proc.returncode} before listening on {port}")
        return port_listening(port, netns)
    wait_for(ready, timeout, 0.05, f"{what} to listen on port {port}")
