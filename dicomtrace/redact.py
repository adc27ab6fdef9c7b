"""Replace identifying values by stable pseudonyms so a report can leave the hospital.

Applied to the model right after the analysis, before any finding is judged or worded,
so nothing rendered afterwards (terminal, JSON, HTML, finding text) can hold the
original: the values of identifying attributes (PS3.15 annex E's basic profile, the ones
a network trace carries: names, IDs, dates of birth, accession numbers, addresses,
institution and physician names) in data set summaries and C-FIND identifiers, and the
User Identity username of the A-ASSOCIATE-RQ (PS3.7 D.3.3.7; the passcode is never kept).
With ``uids=True`` study, series and instance UIDs are replaced by ``2.25.`` UIDs derived
from them.  The same value always gets the same pseudonym within one run (and across
runs given the same key, ``DICOMTRACE_REDACT_KEY``), so relations (same patient, same
study) stay visible.

A pseudonym keeps the shape that findings reason about (PS3.4 C.2.2.2 matching): each run
of letters or digits is replaced by one of the same length and case, keyed on its upper
case form (so ``smith`` and ``SMITH`` stay "equal but for case"); spaces, ``^`` component
separators and wildcards stay where they were, and a value with non-ASCII letters keeps
non-ASCII letters (Specific Character Set findings).  Dates become 19000101.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re

IDENTIFYING = {
    "PatientName", "PatientID", "PatientBirthDate", "PatientBirthTime", "OtherPatientIDs",
    "OtherPatientNames", "OtherPatientIDsSequence", "PatientBirthName", "PatientMotherBirthName",
    "PatientAddress", "PatientTelephoneNumbers", "MedicalRecordLocator", "IssuerOfPatientID",
    "AccessionNumber", "ReferringPhysicianName", "PerformingPhysicianName", "OperatorsName",
    "NameOfPhysiciansReadingStudy", "PhysiciansOfRecord", "RequestingPhysician",
    "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName", "StationName",
    "StudyID", "PatientComments", "AdmissionID", "ScheduledPerformingPhysicianName",
    "RequestedProcedureID", "ScheduledProcedureStepID", "PerformedProcedureStepID",
}
INSTANCE_UIDS = {"StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID",
                 "FrameOfReferenceUID", "AffectedSOPInstanceUID", "RequestedSOPInstanceUID"}
WORD = re.compile(r"[^\W_]+")  # a run of letters or digits (any script)
UPPER, LOWER, DIGITS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz", "0123456789"
NON_ASCII_UPPER, NON_ASCII_LOWER = "ÄÖÜÉÈÀÇÑ", "äöüéèàçñ"


class Redactor:
    def __init__(self, uids: bool = False, key: bytes | None = None):
        env = os.environ.get("DICOMTRACE_REDACT_KEY")
        self.key = key or (env.encode() if env else os.urandom(16))
        self.uids = uids
        self.map: dict[str, str] = {}

    def _digest(self, value: str) -> bytes:
        return hmac.new(self.key, value.encode("utf-8", "replace"), hashlib.sha256).digest()

    def _word(self, word: str) -> str:
        """A keyed stand-in for one run of letters or digits: same length, same case and
        character classes position by position."""
        d = self._digest(word.upper())
        while len(d) < len(word):
            d += self._digest(d.hex())
        out = []
        for c, b in zip(word, d):
            if c.isdigit():
                out.append(DIGITS[b % 10])
            elif not c.isascii():
                out.append((NON_ASCII_LOWER if c.islower() else NON_ASCII_UPPER)[b % 8])
            elif c.islower():
                out.append(LOWER[b % 26])
            else:
                out.append(UPPER[b % 26])
        return "".join(out)

    def pseudonym(self, keyword: str, value: str | None) -> str | None:
        if value is None or value == "" or value.startswith("<"):
            return value
        if keyword in INSTANCE_UIDS or keyword.endswith("UID"):
            new = "2.25." + str(int.from_bytes(self._digest(value)[:16], "big"))
        elif keyword.endswith("Date"):
            new = re.sub(r"\d{8}", "19000101", value)
        elif keyword.endswith("Time"):
            new = re.sub(r"\d", "0", value)
        else:
            new = WORD.sub(lambda m: self._word(m.group()), value)
        self.map[value] = new
        return new

    def _attrs(self, attrs: dict | None) -> None:
        if not attrs:
            return
        for k, v in list(attrs.items()):
            if k in IDENTIFYING or (self.uids and k in INSTANCE_UIDS):
                attrs[k] = self.pseudonym(k, v)

    def text(self, s: str | None) -> str | None:
        """Free text that came over the wire (an Error Comment, a decoding problem):
        replace the identifying values the structured pass met, longest first."""
        if not s or not self.map:
            return s
        for old in sorted(self.map, key=len, reverse=True):
            if len(old) >= 2 and old.strip():
                s = re.sub(rf"(?<![\w.]){re.escape(old)}(?![\w.])", self.map[old], s)
        return s

    def redact_analysis(self, analysis) -> None:
        """Redact the model in place: data set summaries, identifiers, UIDs (with
        ``uids``), User Identity usernames; then the free text that may quote them."""
        for a in analysis.associations:
            for side, ui in a.user_identity.items():
                if ui and ui.get("username"):
                    ui["username"] = self.pseudonym("Username", ui["username"])
            for op in a.operations:
                if op.dataset is not None:
                    self._attrs(op.dataset.attributes)
                for r in op.responses:
                    self._attrs(r.identifier)
                if self.uids and op.sop_instance_uid:
                    op.sop_instance_uid = self.pseudonym("SOPInstanceUID", op.sop_instance_uid)
                for r in op.responses:
                    if self.uids and r.sop_instance_uid:
                        r.sop_instance_uid = self.pseudonym("SOPInstanceUID", r.sop_instance_uid)
        for a in analysis.associations:
            for op in a.operations:
                for r in op.responses:
                    r.error_comment = self.text(r.error_comment)
            for issue in a.issues:
                issue.message = self.text(issue.message)


def deidentify_file(path, redactor: Redactor) -> str | None:
    """Rewrite a Part 10 file with identifying values replaced (PS3.15 E.1: Patient Identity
    Removed = YES).  Large values stay on disk while writing.  Returns the new SOP Instance
    UID when UIDs are redacted, else None."""
    from pathlib import Path

    from pydicom import dcmread

    path = Path(path)
    ds = dcmread(path, defer_size="64 KB")
    new_instance = None

    def visit(dataset, elem):
        kw = elem.keyword
        if kw in IDENTIFYING or (redactor.uids and kw in INSTANCE_UIDS):
            if elem.VR == "SQ":
                elem.value = []
                return
            value = elem.value
            if value is None or value == "":
                return
            new = redactor.pseudonym(kw, str(value))
            elem.value = new if elem.VR != "DA" else "19000101"

    ds.walk(visit)
    if redactor.uids and "SOPInstanceUID" in ds:
        new_instance = str(ds.SOPInstanceUID)
        ds.file_meta.MediaStorageSOPInstanceUID = new_instance
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "dicomtrace --redact: keyed pseudonyms" + (
        ", UIDs replaced" if redactor.uids else "")
    tmp = path.with_name(path.name + ".redacting")
    ds.save_as(tmp, enforce_file_format=False)
    tmp.replace(path)
    return new_instance
