"""The JSON contract (JSON Schema draft 2020-12) shipped with the program: what
``dicomtrace analyze --format json`` prints.  Kept equal in meaning to the project's
shared contract (tests/real/test_cli.py compares them)."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources

SCHEMA_FILE = "analysis.schema.json"


def schema_text() -> str:
    return resources.files(__package__).joinpath(SCHEMA_FILE).read_text(encoding="utf-8")


@cache
def analysis_schema() -> dict:
    return json.loads(schema_text())
