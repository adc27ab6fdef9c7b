"""Start-up (issue #12, docs/performance.md "Start-up"): what a command imports, by name,
not by time.  Each check runs a fresh interpreter (``sys.modules`` of this test process
holds whatever other tests imported) that runs the command in process and prints the
modules it ended up with."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "examples" / "sample.pcap"

PROBE = """
import contextlib, io, json, sys
from dicomtrace.cli import main
with contextlib.redirect_stdout(io.StringIO()):
    try:
        code = main(sys.argv[1:])
    except SystemExit as e:
        code = e.code
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


def modules_after(*argv: str) -> set[str]:
    """The modules a fresh interpreter holds after ``dicomtrace ARGV`` ran in it."""
    r = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True,
                       cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.splitlines()[-1])
    assert out["code"] in (0, None), r.stderr
    return set(out["modules"])


def loaded(modules: set[str], package: str) -> bool:
    return any(m == package or m.startswith(package + ".") for m in modules)


def test_help_imports_no_command():
    from dicomtrace.cli import COMMANDS

    mods = modules_after("--help")
    commands = {f"dicomtrace.cli.{module}" for module, _ in COMMANDS.values()}
    assert not mods & commands
    for heavy in ("numpy", "pydicom", "pynetdicom", "rich"):
        assert not loaded(mods, heavy), heavy


def test_a_command_imports_only_its_own_module():
    from dicomtrace.cli import COMMANDS

    mods = modules_after("schema")
    others = {f"dicomtrace.cli.{module}" for name, (module, _) in COMMANDS.items()
              if name != "schema"}
    assert "dicomtrace.cli.schema" in mods
    assert not mods & others


def test_every_command_loads_with_its_registry_line():
    """Every registry line names a module with add_arguments and run."""
    from dicomtrace.cli import COMMANDS, build_parser

    ap = build_parser(load=True)
    assert list(ap.commands) == list(COMMANDS)
    for name, (module, help_line) in COMMANDS.items():
        p = ap.commands[name]
        assert p.get_default("run") is not None, name
        assert p.format_help().startswith(f"usage: dicomtrace {name} ")
