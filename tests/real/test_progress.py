"""The progress bar (issue #12): on a terminal while a large capture is read, never when
standard error is piped or with --quiet. A pseudo-terminal from script(1); the size limit
lowered with DICOMTRACE_PROGRESS_MIN so that the small store capture counts as large."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

import lab


def on_terminal(cmd: list[str], tmp_path, env: dict) -> str:
    """What the command writes to its terminal (standard output goes to /dev/null)."""
    if not shutil.which("script"):
        pytest.skip("script(1) not installed")
    log = tmp_path / "tty.txt"
    line = " ".join(f"'{c}'" for c in cmd) + " > /dev/null"
    subprocess.run(["script", "-q", "-e", "-c", line, str(log)], env=env, check=True, timeout=120,
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    return log.read_text(errors="replace")


@pytest.mark.parametrize("command", ["analyze", "conversations"])
def test_progress_on_a_terminal_only(dicomtrace_cli, store_capture, tmp_path, command):
    env = {**os.environ, "DICOMTRACE_PROGRESS_MIN": "0", "COLUMNS": "120"}
    cmd = [*lab.dicomtrace_cmd(), command, str(store_capture.pcap), "--format", "json"]
    shown = on_terminal(cmd, tmp_path, env)
    assert "reading" in shown and "packets" in shown, shown[-500:]
    assert ("associations" if command == "analyze" else "connections") in shown
    assert "reading" not in on_terminal(cmd + ["--quiet"], tmp_path, env)
    piped = subprocess.run(cmd, env=env, capture_output=True, timeout=120)
    assert piped.returncode == 0 and piped.stderr == b"", piped.stderr
