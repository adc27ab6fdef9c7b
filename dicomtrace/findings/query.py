"""C-FIND findings: no matches, and keys or values that explain a miss (PS3.4 C.2.2, C.4.1)."""

from __future__ import annotations

import re

from dicomtrace.findings.association import label
from dicomtrace.findings.base import Finding, completing_frame

# Keys an SCP returns without being asked (PS3.4 C.4.1.1.3.2, C.4.1.2.3)
UNASKED_OK = {"SpecificCharacterSet", "QueryRetrieveLevel", "RetrieveAETitle",
              "InstanceAvailability", "RetrieveURL", "RetrieveLocationUID", "StationName",
              "TimezoneOffsetFromUTC", "HL7InstanceIdentifier"}
NOT_COMPARED = {"SpecificCharacterSet", "QueryRetrieveLevel"}
DATE_RANGE = re.compile(r"^(\d{8})?-?(\d{8})?$")
TIME_RANGE = re.compile(r"^([\d.:]*)-?([\d.:]*)$")


def vr_of(keyword: str) -> str | None:
    from pydicom.datadict import dictionary_VR, tag_for_keyword  # (loaded with the identifiers)

    try:
        tag = tag_for_keyword(keyword)
        return dictionary_VR(tag) if tag is not None else None
    except Exception:
        return None


def value_pitfalls(key: str, value: str) -> list[str]:
    """Why a matching key value may match nothing (PS3.4 C.2.2.2)."""
    vr = vr_of(key)
    out = []
    v = value
    if v != v.strip(" "):
        out.append(f"{key} {v!r} has leading or trailing spaces, which take part in matching")
    core = v.strip(" ")
    wild = "*" in core or "?" in core
    if vr in ("UI", "DA", "TM", "DT", "US", "UL", "SS", "SL", "FL", "FD", "DS", "IS") and wild:
        out.append(f"{key} {v!r} uses wildcards, which are not allowed for VR {vr} "
                   "(UIDs, dates, times and numbers match exactly or by range)")
    if vr == "DA" and core and not wild and not DATE_RANGE.match(core.replace("\\", "")):
        out.append(f"{key} {v!r} is not a DICOM date or date range (YYYYMMDD, "
                   "YYYYMMDD-YYYYMMDD, -YYYYMMDD or YYYYMMDD-)")
    if vr == "TM" and core and not wild and not TIME_RANGE.match(core):
        out.append(f"{key} {v!r} is not a DICOM time or time range (HHMMSS.FFFFFF)")
    if vr == "PN" and core and "^" not in core and (" " in core or "," in core):
        out.append(f"{key} {v!r} separates name components with a space or comma instead of "
                   "“^” (family^given), so it is matched as one family name")
    if core and core != core.upper() and (vr in ("LO", "SH") or (vr == "PN" and core == core.lower())):
        out.append(f"{key} {v!r} has lower-case letters: matching is case-sensitive except "
                   "for some SCPs' person names")
    if vr == "CS" and core and (core != core.upper() or not re.match(r"^[A-Z0-9 _*?\\]*$", core)):
        out.append(f"{key} {v!r} is not a valid code string (upper case, digits, space, _)")
    return out


def cfind(analysis) -> list[Finding]:
    out = []
    for a in analysis.associations:
        for op in a.operations:
            if op.service != "C-FIND" or op.final is None:
                continue
            req = op.dataset.attributes if op.dataset else {}
            frames = [op.request_last_frame, completing_frame(op.final)]
            matching = {k: v for k, v in req.items()
                        if v and v not in ("*",) and k not in NOT_COMPARED and not v.startswith("<")}
            pitfalls = [p for k, v in matching.items() for p in value_pitfalls(k, v)]
            if op.final.info.category == "success" and op.matches == 0:
                msg = f"C-FIND message {op.message_id} on {label(a)} found no matches"
                if matching:
                    msg += " for " + ", ".join(f"{k}={v!r}" for k, v in list(matching.items())[:6])
                msg += "."
                out.append(Finding(
                    "cfind-no-matches", "note", msg,
                    "Nothing matched the query's keys. Check the values for spelling, case, "
                    "spaces and wildcards (see cfind-key-mismatch if raised), the Query/Retrieve "
                    "Level, and whether the data is on this SCP at all.",
                    a.id, frames, [op.message_id]))
            responses = [r.identifier for r in op.responses if r.identifier is not None]
            problems = []
            severity = "note"
            if op.matches == 0 and pitfalls:
                problems += pitfalls
                severity = "warning"
            if responses:
                returned = set().union(*(set(r) for r in responses))
                asked = set(req) - NOT_COMPARED
                missing = sorted(k for k in asked - returned if not k.startswith("("))
                extra = sorted(k for k in returned - set(req) - UNASKED_OK)
                if missing:
                    problems.append("keys asked that no response returned: " + ", ".join(missing))
                if extra:
                    problems.append("keys returned that were not asked for: " + ", ".join(extra))
                req_cs = req.get("SpecificCharacterSet") or ""
                resp_cs = {r.get("SpecificCharacterSet") or "" for r in responses}
                # no (0008,0005) and only ASCII values: the default repertoire, which every
                # character set of the responses includes, so nothing can differ (PS3.5 6.1.2)
                ascii_request = not req_cs and all((v or "").isascii() for v in req.values())
                if resp_cs - {req_cs} and not ascii_request:
                    problems.append("the responses use Specific Character Set "
                                    + ", ".join(repr(c) for c in sorted(resp_cs))
                                    + f" but the request used {req_cs!r}: non-ASCII names may not "
                                    "match or may display wrongly")
                for k, v in matching.items():
                    if "*" in v or "?" in v or "-" in v and vr_of(k) in ("DA", "TM", "DT"):
                        continue
                    vals = {r.get(k) for r in responses if r.get(k)}
                    near = [x for x in vals if x != v and x.strip().upper() == v.strip().upper()]
                    if near:
                        problems.append(f"{k}: asked {v!r}, returned {near[0]!r} (differs only in "
                                        "case or spaces)")
            if problems:
                out.append(Finding(
                    "cfind-key-mismatch", severity,
                    f"C-FIND message {op.message_id} on {label(a)}: " + "; ".join(problems) + ".",
                    "An SCP returns the keys it supports among those asked (optional keys it does "
                    "not support may be left out, with status FF01) and matches values exactly, "
                    "case-sensitively, with “*” and “?” only for text. Adjust the query, or the "
                    "SCP's configuration of supported keys.",
                    a.id, frames, [op.message_id], details={"problems": problems}))
    return out


RULES = [cfind]
