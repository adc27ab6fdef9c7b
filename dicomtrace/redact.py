"""Replace identifying values by stable pseudonyms so a report can leave the hospital.

Applied after the analysis and the findings, before anything is rendered: the values
of identifying attributes (PS3.15 annex E's basic profile, the ones a network trace
carries: names, IDs, dates of birth, accession numbers, addresses, institution and
physician names) are replaced wherever they appear, in data set summaries, C-FIND
identifiers and the text of findings.  With ``uids=True`` study, series and instance
UIDs are replaced by ``2.25.`` UIDs derived from them.  The same value always gets the
same pseudonym within one run (and across runs given the same key), so relations
(same patient, same study) stay visible.
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
PREFIXES = {"PatientName": "NAME", "PatientID": "ID", "AccessionNumber": "ACC",
            "OtherPatientIDs": "ID", "OtherPatientNames": "NAME", "StudyID": "STUDY"}
INSTANCE_UIDS = {"StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID",
                 "FrameOfReferenceUID", "AffectedSOPInstanceUID", "RequestedSOPInstanceUID"}


class Redactor:
    def __init__(self, uids: bool = False, key: bytes | None = None):
        env = os.environ.get("DICOMTRACE_REDACT_KEY")
        self.key = key or (env.encode() if env else os.urandom(16))
        self.uids = uids
        self.map: dict[str, str] = {}

    def _digest(self, value: str) -> bytes:
        return hmac.new(self.key, value.encode("utf-8", "replace"), hashlib.sha256).digest()

    def pseudonym(self, keyword: str, value: str | None) -> str | None:
        if value is None or value == "" or value.startswith("<"):
            return value
        if keyword in INSTANCE_UIDS or keyword.endswith("UID"):
            new = "2.25." + str(int.from_bytes(self._digest(value)[:16], "big"))
        elif keyword.endswith("Date"):
            new = "19000101"
        else:
            prefix = PREFIXES.get(keyword) or re.sub(r"[^A-Z]", "", keyword)[:3] or "X"
            new = f"{prefix}-{self._digest(value)[:4].hex().upper()}"
        self.map[value] = new
        return new

    def _attrs(self, attrs: dict | None) -> None:
        if not attrs:
            return
        for k, v in list(attrs.items()):
            if k in IDENTIFYING or (self.uids and k in INSTANCE_UIDS):
                attrs[k] = self.pseudonym(k, v)

    def text(self, s: str) -> str:
        """Replace known values in free text (quoted forms first, then long bare ones)."""
        if not s or not self.map:
            return s
        for old in sorted(self.map, key=len, reverse=True):
            new = self.map[old]
            s = s.replace(repr(old), repr(new)).replace(f"“{old}”", f"“{new}”")
            if len(old) >= 6:
                s = s.replace(old, new)
            elif len(old) >= 2:
                s = re.sub(rf"(?<![\w.]){re.escape(old)}(?![\w.])", new, s)
        return s

    def apply(self, analysis, findings) -> None:
        """Redact the analysis (associations, operations) and the findings in place."""
        for a in analysis.associations:
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
                if op.final is not None and op.final.error_comment:
                    op.final.error_comment = self.text(op.final.error_comment)
        for f in findings:
            f.message = self.text(f.message)
            f.hint = self.text(f.hint)
            f.details = self._deep(f.details)

    def _deep(self, x):
        if isinstance(x, str):
            return self.text(x)
        if isinstance(x, list):
            return [self._deep(v) for v in x]
        if isinstance(x, dict):
            return {k: self._deep(v) for k, v in x.items()}
        return x


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
