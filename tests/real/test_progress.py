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


def test_one_bar_for_the_parts_of_a_pool(dicomtrace_cli, store_capture, tmp_path):
    """--jobs 3 with the capture cut in three: one bar on the terminal, fed by every part."""
    env = {**os.environ, "DICOMTRACE_PROGRESS_MIN": "0", "DICOMTRACE_MIN_PART": "1", "COLUMNS": "120"}
    cmd = [*lab.dicomtrace_cmd(), "analyze", str(store_capture.pcap), "--format", "json", "--jobs", "3"]
    shown = on_terminal(cmd, tmp_path, env)
    assert "reading" in shown and "packets" in shown and "associations" in shown, shown[-500:]
    piped = subprocess.run(cmd, env=env, capture_output=True, timeout=120)
    assert piped.returncode == 0 and piped.stderr == b"", piped.stderr


def test_the_pool_bar_counts_every_part(store_capture):
    """What the one bar is told: the bytes and packets of all the parts together."""
    from dicomtrace.cli.common import DEFAULT_PORTS
    from dicomtrace.config import AnalysisConfig
    from dicomtrace.parallel import plan_parts, pool_map, run_part
    from dicomtrace.ports import parse_ports

    config = AnalysisConfig(ports=parse_ports(DEFAULT_PORTS))
    [plan] = plan_parts([str(store_capture.pcap)], 3, lambda t: [f(*a) for f, a in t], min_part=1)
    told = []

    class Bar:
        def __call__(self, read, packets, found):
            told.append((read, packets, found))

        def close(self):
            pass

    results = pool_map([(run_part, (plan, k, config, False, None, "", k)) for k in range(3)], 3,
                       progress=Bar)
    read, packets, found = told[-1]
    size = store_capture.pcap.stat().st_size
    assert len(plan.parts) == 3 and size <= read <= size + 24 * 2  # each part re-reads the header
    assert packets == sum(r.net.frames for r in results) == results[0].analysis.capture.packets + \
        sum(r.analysis.capture.packets for r in results[1:])
    assert found >= 3
