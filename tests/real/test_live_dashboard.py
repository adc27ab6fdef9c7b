"""`live --dashboard` driven in tmux (send-keys, capture-pane) while a slow transfer runs:
the open association with its AE titles and throughput is on screen during the transfer,
Enter shows its operations, q stops the capture and the usual report follows."""

from __future__ import annotations

import os
import shutil
import threading

import pytest

import lab

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("tmux"),
                                reason="needs root (capture) and tmux")


def pane(session: str) -> str:
    return lab.run(["tmux", "capture-pane", "-p", "-t", session], timeout=10).stdout.decode()


def test_dashboard_shows_the_open_association(tmp_path):
    port = lab.free_port()
    session = f"dt{lab.unique_suffix()}"
    listen = lab.Peer(lab.dicomtrace_cmd() + ["listen", str(port), "--bind", "127.0.0.1",
                                              "--delay", "0.6"],
                      port=port, log_dir=tmp_path, name="listen", cwd=lab.REPO_ROOT)
    live = " ".join(lab.dicomtrace_cmd() + ["live", "-i", "lo", "-f", f"'tcp port {port}'",
                                            "--port", str(port), "--dashboard", "--duration", "90"])
    with listen:
        lab.run(["tmux", "new-session", "-d", "-s", session, "-x", "150", "-y", "40",
                 # COLUMNS/LINES from the test runner would override the pane size in Textual
                 f"cd {lab.REPO_ROOT} && env -u COLUMNS -u LINES {live}; echo EXIT=$?; sleep 120"],
                timeout=10)
        try:
            lab.wait_for(lambda: "dicomtrace live" in pane(session), 30, 0.2, "the dashboard")
            done = threading.Event()

            def transfer():
                lab.run_dicomtrace("store", "127.0.0.1", port, "--generate", "6", "--size", "0.3",
                                   "--calling", "MODALITY7", timeout=120)
                done.set()
            threading.Thread(target=transfer, daemon=True).start()

            def open_row():
                for line in pane(session).splitlines():
                    if "MODALITY7 → ANY-SCP" in line and " open " in line and "/s" in line:
                        return line
                return None
            try:
                row = lab.wait_for(open_row, 30, 0.2, "the open association on screen")
            except lab.LabError:
                raise AssertionError(pane(session)) from None
            assert not done.is_set()  # seen during the transfer
            assert "127.0.0.1:" in row and f"→ 127.0.0.1:{port}" in row
            assert done.wait(60)
            try:
                lab.wait_for(lambda: any("MODALITY7" in x and "released" in x
                                         for x in pane(session).splitlines()), 30, 0.2, "released")
            except lab.LabError:
                raise AssertionError(pane(session)) from None
            lab.run(["tmux", "send-keys", "-t", session, "Enter"], timeout=10)
            lab.wait_for(lambda: "operations of association 1" in pane(session)
                         and pane(session).count("C-STORE") >= 6, 20, 0.2, "its operations")
            lab.run(["tmux", "send-keys", "-t", session, "q"], timeout=10)
            text = lab.wait_for(lambda: (lambda t: t if "EXIT=" in t else None)(pane(session)),
                                30, 0.2, "live to end")
        finally:
            lab.run(["tmux", "kill-session", "-t", session], timeout=10, check=False)
    assert "EXIT=0" in text
    assert "packets captured, 0 dropped by the kernel" in text
