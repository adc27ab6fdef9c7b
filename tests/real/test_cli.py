"""The command line (issue #10 "A command line that never ignores the user", "Readable at
80 columns", "The JSON contract ships with the program"; issue #11 "The command line as a
package"): option errors name the sub-command in one line with exit 2, filters say what
they matched, unwritable outputs and closed pipes, the shipped schema, export --include
and --layout, the User Identity username under --redact, 80 columns through `script` and
through a pipe.  Real captures: the repository's sample (pynetdicom and dcmtk peers), the
lab captures kept for the golden tests, and a pynetdicom association with User Identity
captured here on loopback."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

import lab

SAMPLE = lab.REPO_ROOT / "examples" / "sample.pcap"
QR = lab.REPO_ROOT / "tests" / "golden" / "captures" / "qr.pcap"
SHARED = lab.SHARED_ROOT
SHARED_SCHEMA = SHARED / "contract" / "analysis.schema.json"
SHIPPED_SCHEMA = lab.REPO_ROOT / "dicomtrace" / "schema" / "analysis.schema.json"

pytestmark = pytest.mark.usefixtures("dicomtrace_cli")


def dt(*args, env: dict | None = None, input: bytes | None = None) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run(lab.dicomtrace_cmd() + [str(a) for a in args], capture_output=True,
                          cwd=lab.REPO_ROOT, env=full_env, input=input, timeout=300)


def analyze_json(*args) -> dict:
    """``analyze --format json`` of the sample, or of the capture and options given."""
    r = dt("analyze", *(args or (SAMPLE,)), "--format", "json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.fixture(scope="module")
def validator():
    jsonschema = pytest.importorskip("jsonschema")
    from dicomtrace.schema import analysis_schema

    schema = analysis_schema()
    return jsonschema.Draft202012Validator(schema)


def assert_valid(validator, doc) -> None:
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
    assert not errors, "; ".join(f"{list(e.path)}: {e.message}" for e in errors[:5])


# -- option errors: one line naming the sub-command, exit 2, nothing on stdout --------------

BAD = [
    (("analyze", SAMPLE, "--filter", "port 104"), "analyze", "--filter"),
    (("analyze", SAMPLE, "--duration", "5"), "analyze", "--duration"),
    (("analyze", SAMPLE, "--count", "10"), "analyze", "--count"),
    (("analyze", SAMPLE, "--command", "C-FOO"), "analyze", "C-FOO"),
    (("analyze", SAMPLE, "--status", "bad"), "analyze", "'bad'"),
    (("analyze", SAMPLE, "--status", "failure,nope"), "analyze", "'nope'"),
    (("analyze", SAMPLE, "--jobs", "0"), "analyze", "--jobs"),
    (("analyze", SAMPLE, "--jobs", "two"), "analyze", "--jobs"),
    (("analyze", SAMPLE, "--on-port", "70000"), "analyze", "--on-port"),
    (("analyze", SAMPLE, "--port", "0"), "analyze", "--port"),
    (("analyze", SAMPLE, "--port", ","), "analyze", "--port"),
    (("analyze", SAMPLE, "--ip", "1.2.3"), "analyze", "--ip"),
    (("analyze", SAMPLE, "--ae", "A" * 17), "analyze", "--ae"),
    (("export", SAMPLE, "-o", "x", "--sop-class", "CT"), "export", "--sop-class"),
    (("analyze", SAMPLE, "--bogus"), "analyze", "--bogus"),
    (("analyze", SAMPLE, "--live", "lo"), "analyze", "not both"),
    (("analyze", "-", "--jobs", "2"), "analyze", "--jobs"),
    (("analyze",), "analyze", "no capture"),
    (("report", SAMPLE, "--format", "json", "-o", "x.html"), "report", "--format"),
    (("report", SAMPLE), "report", "--output"),
    (("export", SAMPLE, "-o", "x", "--include", "stores,bogus"), "export", "'bogus'"),
    (("export", SAMPLE, "-o", "x", "--min-size", "-1"), "export", "--min-size"),
    (("export", SAMPLE, "-o", "x", "--layout", "tree"), "export", "--layout"),
    (("conversations", SAMPLE, "--filter", "tcp"), "conversations", "--filter"),
    (("schema", "--format", "json"), "schema", "--format"),
]


@pytest.mark.parametrize("argv,command,mention", BAD, ids=lambda x: " ".join(map(str, x))
                         if isinstance(x, tuple) else None)
def test_option_errors_name_the_subcommand(argv, command, mention, tmp_path):
    r = dt(*argv)
    err = r.stderr.decode()
    assert r.returncode == 2, err
    assert r.stdout == b""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"dicomtrace {command}: error: "), err
    assert mention in lines[0], err
    assert "Traceback" not in err and "internal error" not in err


@pytest.mark.parametrize("name,value", [
    ("DICOMTRACE_TCP_PATH", "bogus"), ("DICOMTRACE_UL_PATH", "runs"), ("DICOMTRACE_WALK_PATH", "x"),
    ("DICOMTRACE_MIN_PART", "1M"), ("DICOMTRACE_PROGRESS_MIN", "-5"), ("DICOMTRACE_REDACT_KEY", "")])
def test_a_bad_setting_is_a_one_line_error(name, value):
    """The DICOMTRACE_* switches are read deep in the stages (some in worker processes): a
    value that is none of theirs is said when the command starts, not an internal error and
    not ignored (dicomtrace/settings.py)."""
    for command in ("analyze", "export"):
        r = dt(command, SAMPLE, *(("-o", "/nonexistent/never-made") if command == "export" else ()),
               env={name: value})
        err = r.stderr.decode()
        assert r.returncode == 2 and r.stdout == b"", err
        assert err.count("\n") == 1 and err.startswith(f"dicomtrace {command}: error: {name}"), err
    assert dt("analyze", SAMPLE, env={name: {"DICOMTRACE_TCP_PATH": "segment", "DICOMTRACE_UL_PATH": "pdu",
              "DICOMTRACE_WALK_PATH": "record", "DICOMTRACE_MIN_PART": "1",
              "DICOMTRACE_PROGRESS_MIN": "0", "DICOMTRACE_REDACT_KEY": "k"}[name]}).returncode == 0


def test_redact_uids_implies_redact_and_says_so():
    r = dt("analyze", SAMPLE, "--format", "json", "--redact-uids")
    assert r.returncode == 0
    assert r.stderr.decode().strip() == ("dicomtrace analyze: note: --redact-uids implies "
                                         "--redact: identifying values are replaced too")
    plain = analyze_json()
    doc = json.loads(r.stdout)
    uids = {op["sop_instance_uid"] for a in plain["associations"] for op in a["operations"]
            if op.get("sop_instance_uid")}
    names = {(op.get("dataset") or {}).get("attributes", {}).get("PatientName")
             for a in plain["associations"] for op in a["operations"]} - {None, ""}
    assert uids and names
    text = r.stdout.decode()
    assert not any(u in text for u in uids)
    assert not any(n in text for n in names)


# -- filters ----------------------------------------------------------------------------------

def test_filter_matching_nothing_says_how_many_there_are(validator):
    r = dt("analyze", SAMPLE, "--ae", "NOBODY")
    assert r.returncode == 0
    out, err = r.stdout.decode(), r.stderr.decode()
    assert "No association matches the filters (--ae NOBODY); the capture holds 4 associations." in out
    assert err.strip() == ("dicomtrace analyze: note: the capture holds 4 associations, none of "
                           "which matches --ae NOBODY")
    doc = analyze_json(SAMPLE, "--ae", "NOBODY", "--status", "failure")
    assert doc["associations"] == []
    assert doc["filters"] == {"ae": ["NOBODY"], "status": ["failure"]}
    assert_valid(validator, doc)


def test_filters_are_recorded_and_applied(validator):
    full = analyze_json()
    assert "filters" not in full  # none applied
    doc = analyze_json(SAMPLE, "--command", "c-store", "--status", "failure,success",
                       "--on-port", "104")
    assert doc["filters"] == {"on_port": [104], "command": ["C-STORE"],
                              "status": ["failure", "success"]}
    assert_valid(validator, doc)
    expected = [a["id"] for a in full["associations"]
                if 104 in (a["requestor"]["port"], a["acceptor"]["port"])
                and any(op["command"] == "C-STORE" for op in a["operations"])]
    assert [a["id"] for a in doc["associations"]] == expected == [4]
    assert {op["command"] for a in doc["associations"] for op in a["operations"]} == {"C-STORE"}
    # the same filters on the report (its summary line counts what is kept)
    r = dt("report", SAMPLE, "-o", "/dev/null", "--association", "4")
    assert r.returncode == 0 and b": 1 associations" in r.stdout


# -- outputs that cannot be written, and closed pipes -----------------------------------------

def test_unwritable_outputs_are_one_line_errors(tmp_path):
    afile = tmp_path / "file"
    afile.write_text("x")
    cases = [
        (("report", SAMPLE, "-o", tmp_path / "missing" / "dir" / "x.html"), "report", "does not exist"),
        (("report", SAMPLE, "-o", tmp_path), "report", "is a directory"),
        (("export", SAMPLE, "-o", afile), "export", "not a directory"),
        (("export", SAMPLE, "-o", afile / "sub"), "export", "cannot create"),
        (("conversations", SAMPLE, "--dump-streams", afile), "conversations", "not a directory"),
        (("conversations", SAMPLE, "--dump-streams", tmp_path, "--jobs", "2"), "conversations",
         "--dump-streams writes the streams from one process: leave out --jobs"),
    ]
    for argv, command, mention in cases:
        r = dt(*argv)
        err = r.stderr.decode()
        assert r.returncode == 2, (argv, err)
        assert len(err.splitlines()) == 1 and err.startswith(f"dicomtrace {command}: error: "), err
        assert mention in err, err
    if os.path.exists("/dev/full"):
        with open("/dev/full", "wb") as full:
            r = subprocess.run(lab.dicomtrace_cmd() + ["analyze", str(SAMPLE), "--format", "json"],
                               stdout=full, stderr=subprocess.PIPE, timeout=120)
        err = r.stderr.decode()
        assert r.returncode == 2 and len(err.splitlines()) == 1, err
        assert err.startswith("dicomtrace analyze: error: ") and "No space left" in err, err


@pytest.mark.parametrize("argv", [("analyze", SAMPLE, "--format", "json"), ("analyze", SAMPLE),
                                  ("conversations", SAMPLE), ("schema",)],
                         ids=lambda a: " ".join(map(str, a[:1] + a[2:])))
def test_closed_pipe_exits_0(argv):
    """The reader goes away before the first byte (``| head`` that has had enough)."""
    p = subprocess.Popen(lab.dicomtrace_cmd() + [str(a) for a in argv], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, cwd=lab.REPO_ROOT)
    p.stdout.close()  # the only read end: every write fails with EPIPE
    err = p.stderr.read().decode()
    assert p.wait(timeout=120) == 0, err
    assert err == ""


# -- the JSON contract ships with the program --------------------------------------------------

def test_schema_command_prints_the_shipped_schema():
    r = dt("schema")
    assert r.returncode == 0 and r.stderr == b""
    assert json.loads(r.stdout) == json.loads(SHIPPED_SCHEMA.read_text())
    from dicomtrace.schema import analysis_schema

    assert analysis_schema() == json.loads(r.stdout)


@pytest.mark.skipif(not SHARED_SCHEMA.exists(), reason="../shared/contract absent")
def test_shipped_schema_equals_the_shared_contract():
    assert json.loads(SHIPPED_SCHEMA.read_text()) == json.loads(SHARED_SCHEMA.read_text())


def test_schema_is_package_data():
    """Installed (not only in the source tree): pyproject declares it as package data."""
    text = (lab.REPO_ROOT / "pyproject.toml").read_text()
    assert re.search(r'"dicomtrace\.schema"\s*=\s*\["\*\.json"\]', text)
    assert "dicomtrace/schema/analysis.schema.json" in (lab.REPO_ROOT / "README.md").read_text()


@pytest.mark.parametrize("capture", [SAMPLE, QR], ids=lambda p: p.name)
def test_outputs_validate_against_the_shipped_schema(validator, capture, tmp_path):
    assert_valid(validator, analyze_json(capture))
    r = dt("export", capture, "-o", tmp_path / "x", "--format", "json")
    assert r.returncode == 0, r.stderr
    assert_valid(validator, json.loads(r.stdout))


# -- export: --include adds, --layout applies to every file ------------------------------------

def exported(capture, out, *args) -> list[dict]:
    r = dt("export", capture, "-o", out, "--format", "json", *args)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["exported"]


def test_export_include_adds_to_the_stored_objects(tmp_path):
    """qr.pcap: dcmqrscp answering C-FIND and C-MOVE (the C-MOVE's sub-association stores
    the objects)."""
    stores = exported(QR, tmp_path / "a")
    assert stores and {o["kind"] for o in stores} == {"store"}
    more = exported(QR, tmp_path / "b", "--include", "identifiers,commands")
    kinds = {o["kind"] for o in more}
    assert {"store", "identifier", "command"} <= kinds
    assert any(k.startswith("match") for k in kinds)
    assert sorted(o["sop_instance_uid"] for o in more if o["kind"] == "store") == \
        sorted(o["sop_instance_uid"] for o in stores)
    for o in more:
        assert os.path.exists(o["file"])


def test_export_layout_applies_to_every_file(tmp_path):
    out = tmp_path / "tree"
    files = exported(QR, out, "--include", "identifiers,n-datasets,commands",
                     "--layout", "patient/study/series")
    assert files
    from pydicom import dcmread

    for o in files:
        rel = os.path.relpath(o["file"], out).split(os.sep)
        assert len(rel) == 4, o["file"]  # patient/study/series/file
        if o["kind"] == "store":
            ds = dcmread(o["file"], stop_before_pixels=True)
            assert rel[:3] == [str(ds.PatientID), str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)]
    assert not [p for p in out.iterdir() if p.is_file()]  # nothing left flat at the top
    # a match's own identifier names its folder (one folder per patient matched)
    matches = [o for o in files if o["kind"].startswith("match")]
    for o in matches:
        ds = dcmread(o["file"])
        if "PatientID" in ds and ds.PatientID:
            assert os.path.relpath(o["file"], out).split(os.sep)[0] == str(ds.PatientID)


def test_export_selecting_nothing_says_so(tmp_path):
    r = dt("export", SAMPLE, "-o", tmp_path / "none", "--association", "99")
    assert r.returncode == 0
    assert r.stderr.decode().strip() == ("dicomtrace export: note: nothing written: the capture "
                                         "holds 4 associations, and nothing in them matches "
                                         "--association 99")
    assert r.stdout.decode().strip() == f"0 file(s) written to {tmp_path / 'none'}"


def test_cli_kinds_match_the_exporter():
    from dicomtrace.cli.export import KINDS
    from dicomtrace.export.part10 import KINDS as EXPORTER_KINDS

    assert KINDS == EXPORTER_KINDS


# -- --redact replaces the User Identity username ----------------------------------------------

USERNAME, PASSCODE = "dr.jane.roe", "s3cret-passcode"


@pytest.fixture(scope="module")
def user_identity_capture(tmp_path_factory):
    """A pynetdicom requestor sending User Identity (username and passcode, PS3.7 D.3.3.7)
    to a pynetdicom SCP on loopback, captured with tcpdump."""
    if shutil.which("tcpdump") is None:
        pytest.skip("tcpdump not installed")
    from pynetdicom import AE
    from pynetdicom.pdu_primitives import UserIdentityNegotiation
    from pynetdicom.sop_class import Verification

    d = tmp_path_factory.mktemp("user_identity")
    pcap = d / "user_identity.pcap"
    with lab.PynetdicomSCP(aet="PYSCP") as scp:
        with lab.Capture(pcap, "lo", f"tcp port {scp.port}"):
            ae = AE(ae_title="PYSCU")
            ae.add_requested_context(Verification)
            ui = UserIdentityNegotiation()
            ui.user_identity_type = 2
            ui.primary_field = USERNAME.encode()
            ui.secondary_field = PASSCODE.encode()
            assoc = ae.associate("127.0.0.1", scp.port, ae_title="PYSCP", ext_neg=[ui])
            assert assoc.is_established
            assoc.send_c_echo()
            assoc.release()
    return pcap


def test_redact_replaces_the_username(user_identity_capture, tmp_path):
    plain = analyze_json(user_identity_capture)
    identities = [a["user_identity"]["requestor"] for a in plain["associations"]]
    assert identities and identities[0]["username"] == USERNAME
    red = dt("analyze", user_identity_capture, "--format", "json", "--redact")
    text = dt("analyze", user_identity_capture, "--redact").stdout.decode()
    html = tmp_path / "r.html"
    assert dt("report", user_identity_capture, "-o", html, "--redact").returncode == 0
    doc = json.loads(red.stdout)
    name = doc["associations"][0]["user_identity"]["requestor"]["username"]
    assert name and name != USERNAME
    for rendered in (red.stdout.decode(), text, html.read_text()):
        assert USERNAME not in rendered
        assert PASSCODE not in rendered
    # the passcode is never shown, redacted or not
    assert PASSCODE not in json.dumps(plain)


# -- 80 columns, through a terminal (script + stty) and through a pipe ------------------------

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
CAPTURES_80 = [SAMPLE, QR] + [p for p in sorted((SHARED / "captures" / "public").glob("*.pcap*"))]


def lines_of(raw: bytes) -> list[str]:
    return [ANSI.sub("", line).rstrip("\r") for line in raw.decode().split("\n")]


def addresses(doc: dict) -> set[str]:
    return {f"{a[s]['ip']}:{a[s]['port']}" for a in doc["associations"] for s in ("requestor", "acceptor")}


def check_80(lines: list[str], doc: dict) -> None:
    long = [x for x in lines if len(x) > 80]
    assert not long, long[:3]
    text = "\n".join(lines)
    for addr in addresses(doc):
        assert addr in text, f"{addr} cut or missing"
    # every operations table has all its headings on its heading line(s)
    if any(a["operations"] for a in doc["associations"]):
        assert re.search(r"^time\s+msg\s+command\s+.*instance\s+data\s+.*latency", text, re.M)
    # UIDs are shortened in the middle, not folded: no line holds a UID piece that ends
    # in a bare dot or begins with one
    assert not re.search(r"\b\d+(\.\d+){3,}\.$", text, re.M)


@pytest.mark.parametrize("capture", CAPTURES_80, ids=lambda p: p.name)
def test_80_columns_through_a_pipe(capture):
    doc = analyze_json(capture)
    r = dt("analyze", capture, env={"COLUMNS": "80"})
    assert r.returncode in (0, 1), r.stderr
    check_80(lines_of(r.stdout), doc)
    conv = dt("conversations", capture, env={"COLUMNS": "80"})
    assert not [x for x in lines_of(conv.stdout) if len(x) > 80]


@pytest.mark.skipif(shutil.which("script") is None, reason="util-linux script not installed")
@pytest.mark.parametrize("capture", [SAMPLE, QR], ids=lambda p: p.name)
def test_80_columns_on_a_terminal(capture):
    doc = analyze_json(capture)
    cmd = " ".join(lab.dicomtrace_cmd() + ["analyze", str(capture)])
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    r = subprocess.run(["script", "-qec", f"stty cols 80 rows 50; {cmd}", "/dev/null"],
                       capture_output=True, cwd=lab.REPO_ROOT, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    lines = lines_of(r.stdout)
    check_80(lines, doc)
    assert any("..." in x for x in lines)  # long UIDs shortened in the middle


def test_wide_keeps_uids_whole():
    doc = analyze_json()
    uids = {op["sop_instance_uid"] for a in doc["associations"] for op in a["operations"]
            if op.get("sop_instance_uid")}
    narrow = dt("analyze", SAMPLE, env={"COLUMNS": "80"}).stdout.decode()
    wide = dt("analyze", SAMPLE, "--wide", env={"COLUMNS": "200"}).stdout.decode()
    table = narrow.split("Operations")[-1]
    assert not any(u in table for u in uids)
    assert all(u in wide for u in uids)


def test_short_uid():
    from dicomtrace.output.text import short_uid

    uid = "1.2.840.10008.5.1.4.1.1.2.123456789.4.5.6"
    assert short_uid(uid, None) == uid
    assert short_uid(uid, len(uid)) == uid
    s = short_uid(uid, 20)
    assert len(s) == 20 and s.startswith("1.2.840.") and s.endswith(".4.5.6") and "..." in s


def test_python_m_dicomtrace_runs():
    r = subprocess.run([sys.executable, "-m", "dicomtrace", "schema"], capture_output=True,
                       cwd=lab.REPO_ROOT, timeout=120)
    assert r.returncode == 0 and json.loads(r.stdout)["title"]


# -- redaction is on the model: nothing rendered holds a patient value, findings unchanged ----

IDENTIFYING = ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber",
               "ReferringPhysicianName", "InstitutionName", "StudyID")
UID_KEYS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")


def patient_values(doc: dict) -> set[str]:
    vals = set()
    for a in doc["associations"]:
        for op in a["operations"]:
            attrs = (op.get("dataset") or {}).get("attributes", {})
            ids = [r.get("identifier") or {} for r in op["responses"]]
            for d in [attrs] + ids:
                vals |= {d[k] for k in IDENTIFYING + UID_KEYS if d.get(k)}
            if op.get("sop_instance_uid"):
                vals.add(op["sop_instance_uid"])
    return {v.strip() for v in vals if len(v.strip()) >= 4}


@pytest.mark.parametrize("capture", [SAMPLE, QR], ids=lambda p: p.name)
def test_redacted_terminal_output_and_findings(capture):
    plain = analyze_json(capture)
    values = patient_values(plain)
    assert values
    red = analyze_json(capture, "--redact", "--redact-uids")
    for args in ((), ("--wide",)):
        text = dt("analyze", capture, "--redact", "--redact-uids", *args,
                  env={"COLUMNS": "200"}).stdout.decode()
        for v in values:
            assert v not in text, f"{v!r} left in the terminal output"
    for v in values:
        assert v not in json.dumps(red), f"{v!r} left in the JSON"
    # the same findings, only with pseudonyms: redaction keeps what the rules look at
    assert [(f["code"], f["severity"], f["association"], f["frames"]) for f in red["findings"]] == \
        [(f["code"], f["severity"], f["association"], f["frames"]) for f in plain["findings"]]


def test_pseudonyms_keep_the_shape_matching_depends_on():
    from dicomtrace.redact import Redactor

    r = Redactor(key=b"k")
    a, b = r.pseudonym("PatientName", "smith^john"), r.pseudonym("PatientName", "SMITH^JOHN ")
    assert a != "smith^john" and a.islower() and a.count("^") == 1
    assert b.endswith(" ") and b.strip() == a.upper()  # equal but for case and spaces
    assert r.pseudonym("PatientName", "SMI*") .endswith("*")
    assert not r.pseudonym("PatientName", "MÜLLER").isascii()
    assert r.pseudonym("PatientBirthDate", "19731201") == "19000101"
    assert r.pseudonym("StudyInstanceUID", "1.2.3").startswith("2.25.")
    assert r.pseudonym("PatientID", "12345") == Redactor(key=b"k").pseudonym("PatientID", "12345")
    assert r.pseudonym("PatientID", "12345").isdigit()
