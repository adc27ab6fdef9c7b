"""The finding codes registry (dicomtrace/findings/codes.py) and docs/findings.md agree, and
every code the package raises is registered."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from dicomtrace.findings import codes

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "dicomtrace"
KEBAB = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)+$")
# Violation codes the decoders use internally that never become findings of their own.
INTERNAL = {"capture-gap"}


def test_docs_generated_from_registry():
    doc = (ROOT / "docs" / "findings.md").read_text(encoding="utf-8")
    assert doc == codes.markdown(), (
        "docs/findings.md differs from the registry: run "
        "`python -m dicomtrace.findings.codes --markdown > docs/findings.md`")


def test_registry_entries_are_complete():
    assert len(codes.REGISTRY) == len(codes.CODES), "a code is registered twice"
    for c in codes.CODES:
        assert KEBAB.match(c.code), c.code
        assert c.severity in codes.SEVERITIES, c.code
        assert c.area in codes.AREAS, c.code
        assert c.title and c.means, c.code
        assert c.advice or c.detected, c.code


def _raised_codes() -> dict[str, str]:
    """Every string literal passed as a code: Finding(code, ...), Violation(code, ...),
    ProtocolIssue(code, ...), and f-string prefixes like f"connection-{kind}"."""
    found: dict[str, str] = {}
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            if name not in ("Finding", "Violation", "ProtocolIssue", "issue"):
                continue
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                found[arg.value] = str(path.relative_to(ROOT))
    return found


def test_every_raised_code_is_registered():
    raised = _raised_codes()
    assert "association-rejected" in raised  # the walk finds the literals
    missing = {c: where for c, where in raised.items()
               if c not in codes.REGISTRY and c not in INTERNAL}
    assert not missing, f"register these in dicomtrace/findings/codes.py: {missing}"


def test_markdown_command():
    assert codes.main(["--markdown"]) == 0
    assert codes.main(["--bogus"]) == 2
