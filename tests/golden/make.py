"""Golden outputs: what dicomtrace says about every capture we have, kept as fixtures.

    python tests/golden/make.py            # rewrite tests/golden/expected/ from the current code

For examples/sample.pcap, the lab captures in tests/golden/captures/ (see make_captures.py),
every capture in ../shared/captures/ and ../shared/captures/public/ (only our outputs are
stored, never those files): ``analyze --format json``, ``conversations --format json`` and
``export -o DIR --format json`` with the name and sha256 of every file written. Only what
must vary is normalised: the capture path, the tool version and the export directory.
tests/golden/test_golden.py compares the current code with these files. A change that alters an
output on purpose regenerates them and says in its commit message what changed and why.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE.parent))

import lab  # noqa: E402


SHARED = lab.SHARED_CAPTURES
EXPECTED = HERE / "expected"
SUFFIXES = (".pcap", ".pcapng", ".cap", ".pcap.gz", ".pcapng.gz")
COMMANDS = ("analyze", "conversations", "export")


def captures() -> dict[str, Path]:
    """Fixture name -> capture: sample, lab/<name>, shared/<name>, public/<name>."""
    out = {"sample": REPO / "examples" / "sample.pcap"}
    for prefix, folder in (("lab", HERE / "captures"), ("shared", SHARED), ("public", SHARED / "public")):
        if folder.is_dir():
            for p in sorted(folder.iterdir()):
                if p.is_file() and p.name.endswith(SUFFIXES):
                    out[f"{prefix}/{p.name}"] = p
    return out


def fixture_path(name: str, command: str) -> Path:
    return EXPECTED / f"{name}.{command}.json"


def dicomtrace(*args) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "dicomtrace", *map(str, args)], capture_output=True,
                          cwd=REPO, env=env, timeout=600)


def _normalise(doc, capture: Path, out_dir: str | None):
    """The capture path, tool version and export directory replaced by placeholders."""
    if isinstance(doc, dict):
        if "tool" in doc and isinstance(doc["tool"], dict):
            doc["tool"]["version"] = "<version>"
        if isinstance(doc.get("capture"), dict) and "path" in doc["capture"]:
            doc["capture"]["path"] = "<capture>"
        return {k: _normalise(v, capture, out_dir) for k, v in doc.items()}
    if isinstance(doc, list):
        return [_normalise(v, capture, out_dir) for v in doc]
    if isinstance(doc, str):
        if out_dir and out_dir in doc:
            doc = doc.replace(out_dir, "<out>")
        return doc.replace(str(capture), "<capture>")
    return doc


def run_one(capture: Path, command: str, extra=()) -> dict:
    """One command's result: exit code, JSON output (normalised), standard error lines,
    and for export the files written with their sha256."""
    with tempfile.TemporaryDirectory(prefix="dtgold") as tmp:
        out_dir = None
        args = [command, capture, "--format", "json", *extra]
        if command == "export":
            out_dir = str(Path(tmp) / "out")
            args += ["-o", out_dir]
        res = dicomtrace(*args)
        text = res.stdout.decode("utf-8", "replace")
        try:
            doc = json.loads(text)
        except ValueError:
            doc = text
        if command == "export" and isinstance(doc, dict):
            # the rest is analyze's output, kept in its own fixture
            doc = {k: doc.get(k) for k in ("exported", "objects")}
        result = {"rc": res.returncode,
                  "stderr": [line.replace(str(capture), "<capture>") for line in
                             res.stderr.decode("utf-8", "replace").splitlines()],
                  "output": _normalise(doc, capture, out_dir)}
        if out_dir is not None:
            files = {}
            root = Path(out_dir)
            if root.is_dir():
                for p in sorted(root.rglob("*")):
                    if p.is_file():
                        files[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
            result["files"] = files
    return result


def main(argv: list[str]) -> int:
    EXPECTED.mkdir(exist_ok=True)
    only = set(argv)
    for name, path in captures().items():
        if only and name not in only:
            continue
        for command in COMMANDS:
            target = fixture_path(name, command)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(run_one(path, command), indent=1, sort_keys=True) + "\n")
        print(name)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
