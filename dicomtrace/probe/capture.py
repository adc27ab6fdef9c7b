"""``--capture FILE`` of the active checks: tcpdump of our own traffic with the peer, and the
wire-level analysis of it (the ``analyze`` engine) when the check failed."""

from __future__ import annotations

import ipaddress
import socket
import subprocess
import threading
import time

from dicomtrace.capture.live import LiveCapture, RingWriter

SETTLE = 0.3  # seconds for the last packets (FIN, ACK) to reach the capture


def interface_for(host: str) -> str:
    """The interface the kernel routes ``host`` through (``ip route get``); lo for loopback."""
    try:
        addr = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)[0][4][0]
    except (socket.gaierror, UnicodeError, IndexError):
        return "any"
    if ipaddress.ip_address(addr).is_loopback:
        return "lo"
    try:
        res = subprocess.run(["ip", "-o", "route", "get", addr], capture_output=True, text=True,
                             timeout=5, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return "any"
    words = res.stdout.split()
    return words[words.index("dev") + 1] if "dev" in words else "any"


class SelfCapture:
    """``with SelfCapture(path, host, port):`` — the packets to and from host:port in path."""

    def __init__(self, path: str, host: str | None, port: int):
        self.path = path
        self.port = port
        bpf = f"tcp port {port}"
        if host:
            bpf = f"host {host} and {bpf}"
        self.live = LiveCapture(interface_for(host) if host else "any", bpf,
                                write=RingWriter(path))
        self._drain: threading.Thread | None = None

    def __enter__(self):
        reader = self.live.__enter__()

        def drain():
            while reader.src.read(1 << 16):
                pass
        self._drain = threading.Thread(target=drain, daemon=True)
        self._drain.start()
        return self

    def __exit__(self, *exc):
        time.sleep(SETTLE)
        self.live.__exit__(*exc)
        if self._drain is not None:
            self._drain.join(5)
        return False

    def analysis(self) -> dict:
        """What ``analyze`` says of the file: {"file", "text", "analysis" (the JSON contract)}."""
        from io import StringIO

        from rich.console import Console

        from dicomtrace.engine import analyze_capture
        from dicomtrace.findings import evaluate
        from dicomtrace.model.builder import AnalysisConfig
        from dicomtrace.output.json_report import analysis_json
        from dicomtrace.output.terminal import print_analysis
        from dicomtrace.ports import DEFAULT_PORTS, parse_ports

        ports = parse_ports(DEFAULT_PORTS) | {self.port}
        analysis = analyze_capture(self.path, AnalysisConfig(ports=ports))
        findings = evaluate(analysis)
        buf = StringIO()
        print_analysis(analysis, findings, Console(file=buf, width=120, highlight=False))
        return {"file": self.path, "text": buf.getvalue(),
                "analysis": analysis_json(analysis, [f.to_json() for f in findings])}
