"""Outputs: what people (terminal, HTML) and scripts (JSON) read, in one registry.

:data:`FORMATS` maps what is shown (``analysis``, ``conversations``, ``export``,
``report``) and a format name to the writer, ``"module:function"`` under this package.
A writer is ``function(subject, console)``: it prints to the rich ``console``
(text formats) or writes to ``console.file`` (JSON, HTML).  A new format is one new
module and one line here; the commands' ``--format`` choices come from this table.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field

FORMATS: dict[str, dict[str, str]] = {
    "analysis": {"text": "terminal:write_analysis", "json": "json_report:write_analysis"},
    "conversations": {"text": "conversations:write_text", "json": "conversations:write_json"},
    "export": {"text": "exported:write_text", "json": "exported:write_json"},
    "report": {"html": "html:write_report"},
    "comparison": {"text": "compare:write_text", "json": "compare:write_json",
                   "html": "compare:write_html"},
}


@dataclass
class Section:
    """More than the analysis (e.g. ``same_traffic``): its JSON key and value, and how
    the terminal shows it."""

    key: str
    json: object
    print: Callable[[object], None]  # given the rich console


@dataclass
class AnalysisResult:
    """What the analysis commands render: the (redacted, filtered) model, its findings,
    the filters applied (JSON ``filters``) and, for export, the files written."""

    analysis: object  # model.association.Analysis
    findings: list = field(default_factory=list)  # findings.Finding, sorted
    filters: dict = field(default_factory=dict)
    exported: list | None = None  # export.part10.ExportedObject
    associations_in_capture: int | None = None  # before the filters
    sections: list[Section] = field(default_factory=list)
    options: dict = field(default_factory=dict)  # presentation: {"wide": bool}


def formats(what: str) -> tuple[str, ...]:
    return tuple(FORMATS[what])


def writer(what: str, fmt: str):
    module, _, func = FORMATS[what][fmt].partition(":")
    return getattr(importlib.import_module(f"dicomtrace.output.{module}"), func)


def preload(what: str, fmt: str) -> None:
    """Import what writing ``what`` in ``fmt`` takes, before it is written (rich's
    console and tables for the text formats: 0.04 s; pydicom's UID names, 0.09 s, for
    what names UIDs: all but the export's list of files)."""
    writer(what, fmt)
    if fmt == "text":
        import dicomtrace.output.text  # noqa: F401
    if (what, fmt) != ("export", "text"):
        from dicomtrace.uids import load_names

        load_names()


def render(what: str, fmt: str, subject, console) -> None:
    """Write ``subject`` as ``what`` in format ``fmt`` to ``console``."""
    writer(what, fmt)(subject, console)


def write_json(doc, console) -> None:
    """A JSON document (indented by one, as tools and diffs like it) on the console's file."""
    import json

    # json.dumps with an indent joins a list of every small piece the (pure-Python) encoder
    # makes: ~20 MB for a 3.5 MB document. Written in 64 KiB pieces instead (same text).
    out, buf, size = console.file, [], 0
    for piece in json.JSONEncoder(indent=1).iterencode(doc):
        buf.append(piece)
        size += len(piece)
        if size >= 65536:
            out.write("".join(buf))
            buf, size = [], 0
    buf.append("\n")
    out.write("".join(buf))
