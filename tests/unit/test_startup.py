"""Start-up (issue #12, docs/performance.md "Start-up"): what a command imports, by name,
not by time.  Each check runs a fresh interpreter (``sys.modules`` of this test process
holds whatever other tests imported) that runs the command in process and prints the
modules it ended up with."""

from __future__ import annotations

import json
import os
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


# -- status words without pynetdicom: checked against its tables so that they cannot drift --

def test_statuses_answered_without_the_tables_are_the_tables_words():
    """0x0000 and every code of PLAIN, for each command that names its service, give what
    pynetdicom's tables give, for every service class a SOP class can choose (one SOP
    class of each, as the status module groups them), no SOP class and an unknown one."""
    import pynetdicom.sop_class as sop_class

    from dicomtrace.dimse import status

    uids = [v for v in vars(sop_class).values()
            if isinstance(v, str) and v.startswith("1.2.840.10008.")]
    one_of_each = {}
    for uid in uids:
        one_of_each.setdefault(sop_class.uid_to_service_class(uid), uid)
    assert len(one_of_each) > 10
    classes = [None, "1.2.3.4", *one_of_each.values()]
    codes = {0x0000} | {code for _, code in status.PLAIN}
    for command, service in status.COMMAND_SERVICES.items():
        for field in (command, command | 0x8000):
            for code in codes:
                for uid in classes:
                    fast = status.describe_status.__wrapped__(code, field, uid)
                    assert fast == status.from_tables(code, field, uid), (hex(field), hex(code), uid)


# -- the analysis path: what is imported, where it was made lazy ------------------------------

# pydicom's package imports pydicom.pixels (its decoders), pydicom.data (urllib.request) and
# pydicom.examples whatever is asked of it: these come with the first data set or UID name
# (not PIL: pydicom.pixels imports Pillow whenever it is installed, which the project does not
# require; a machine that has it for something else loads it with the first data set)
POOL_OR_TERMINAL_ONLY = ("rich", "cryptography", "numpy.ma", "multiprocessing.pool")


def test_analyze_json_imports_neither_pynetdicom_nor_rich():
    """The sample (C-ECHO and C-STORE Success, a C-STORE 0xA700) as JSON, in one process."""
    mods = modules_after("analyze", str(SAMPLE), "--format", "json", "--jobs", "1")
    assert "dicomtrace.dimse.status" in mods and "dicomtrace.output.json_report" in mods
    assert "dicomtrace.tls.transform" in mods  # the TLS detection runs on every connection
    for name in ("pynetdicom", "dicomtrace.export", "dicomtrace.probe", "dicomtrace.tls.session",
                 "dicomtrace.tls.handshake") + POOL_OR_TERMINAL_ONLY:
        assert not loaded(mods, name), name


def test_conversations_json_imports_no_dicom_library():
    mods = modules_after("conversations", str(SAMPLE), "--format", "json")
    assert "dicomtrace.engine" in mods
    for name in ("pydicom", "PIL", "pynetdicom", "urllib.request", "hashlib") + POOL_OR_TERMINAL_ONLY:
        assert not loaded(mods, name), name


def test_the_terminal_report_does_import_rich():
    assert loaded(modules_after("analyze", str(SAMPLE)), "rich")


def test_an_export_of_plain_stored_objects_imports_no_pydicom(tmp_path):
    """The golden store capture's C-STOREs (all Success) have plain headers: read without
    pydicom (dimse/plain.py); no finding and not the list of files names a UID, so pydicom's
    0.1 s import is not paid at all."""
    capture = REPO / "tests" / "golden" / "captures" / "store.pcap"
    mods = modules_after("export", str(capture), "-o", str(tmp_path / "out"), "--jobs", "1")
    assert "dicomtrace.dimse.plain" in mods and "dicomtrace.export.part10" in mods
    assert not loaded(mods, "pydicom")
    assert len(list((tmp_path / "out").iterdir())) >= 2


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux's /proc")
def test_numpy_starts_no_blas_threads_under_the_command_line():
    """OpenBLAS would start a thread per core as numpy is loaded; the analysis does no linear
    algebra, and the command line's package asks for none before numpy is imported."""
    code = "import os, dicomtrace.cli, numpy; print(len(os.listdir('/proc/self/task')))"
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                       env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["1"]
