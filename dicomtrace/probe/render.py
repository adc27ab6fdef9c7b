"""The active checks' reports on the terminal (JSON is CheckReport.to_json)."""

from __future__ import annotations

from rich.console import Console
from rich.text import Text

from dicomtrace.output.terminal import print_findings

STYLE = {0: "green", 1: "red", 3: "red"}


def print_report(report, console: Console) -> None:
    t = report.target
    console.print(Text(f"dicomtrace {report.command} {t.label()} “{t.calling}” → “{t.called}”",
                       style="bold"), soft_wrap=True)
    for line in report.lines:
        console.print(Text("  " + line), soft_wrap=True)
    shown = {k: v for k, v in report.summary.items() if v is not None and not isinstance(v, list)}
    if shown:
        console.print(Text("Summary: " + ", ".join(f"{k.replace('_', ' ')} {v}"
                                                  for k, v in shown.items())), soft_wrap=True)
    print_findings(report.findings, console)
    if report.capture is not None:
        print_capture(report.capture, console)
    verdict = "OK" if report.exit_code == 0 else f"FAILED (exit {report.exit_code})"
    console.print(Text(verdict, style=STYLE.get(report.exit_code, "red")), soft_wrap=True)


def print_capture(capture: dict, console: Console) -> None:
    console.rule(f"On the wire ({capture['file']})")
    for line in capture.get("text", "").splitlines():
        console.print(Text(line), soft_wrap=True)
