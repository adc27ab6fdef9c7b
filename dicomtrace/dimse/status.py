"""Status codes in words (PS3.7 annex C, and the service-specific tables of PS3.4).

The same code means different things in different services (0xB000 is
"coercion of data elements" for C-STORE but "sub-operations complete, one or
more failures" for C-MOVE), so the table is chosen by the command and the SOP
class of the request.  The tables are pynetdicom's, which transcribe PS3.4;
a few meanings are spelled out further here for people who do not know the
standard by heart.

pynetdicom (0.2 s to import, with pydicom) is loaded only for a status that needs its
tables.  For C-ECHO, C-STORE, C-FIND, C-MOVE and C-GET the command names the service, and
0x0000 is Success in every table the SOP class can then choose (PS3.7 C.1.1), as is the
category of PS3.7 C.1's code ranges for every code spelled out in :data:`PLAIN`: those, the
status of nearly every response, are answered without the tables
(tests/unit/test_startup.py checks it against every table pynetdicom has).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from dicomtrace.dimse.commands import (
    C_ECHO, C_FIND, C_GET, C_MOVE, C_STORE, N_ACTION, N_CREATE, N_DELETE, N_EVENT_REPORT, N_GET,
    N_SET,
)

CATEGORIES = {"Success": "success", "Warning": "warning", "Failure": "failure",
              "Cancel": "cancel", "Pending": "pending"}

# More words for the codes people meet most (PS3.4 B.2.3, C.4, PS3.7 C).
PLAIN = {
    ("storage", 0xA700): "Refused: out of resources (the receiver could not store the object: "
                         "disk or database full, or a quota or licence limit)",
    ("storage", 0xA900): "Error: data set does not match SOP class",
    ("storage", 0xC000): "Error: cannot understand (the receiver could not parse the data set)",
    ("storage", 0xB000): "Warning: coercion of data elements (the receiver changed some attribute "
                         "values when storing)",
    ("storage", 0xB007): "Warning: data set does not match SOP class (stored anyway)",
    ("storage", 0xB006): "Warning: elements discarded (the receiver dropped some attributes)",
    ("find", 0xA700): "Refused: out of resources",
    ("find", 0xA900): "Identifier does not match SOP class",
    ("find", 0xFF01): "Pending: matches are continuing, but one or more optional keys were not "
                      "supported",
    ("move", 0xA801): "Refused: move destination unknown (the Q/R SCP has no address configured "
                      "for this AE title)",
    ("move", 0xA701): "Refused: out of resources, unable to calculate number of matches",
    ("move", 0xA702): "Refused: out of resources, unable to perform sub-operations",
    ("move", 0xB000): "Warning: sub-operations complete, one or more failures or warnings",
    ("get", 0xB000): "Warning: sub-operations complete, one or more failures or warnings",
    ("get", 0xA701): "Refused: out of resources, unable to calculate number of matches",
    ("get", 0xA702): "Refused: out of resources, unable to perform sub-operations",
    ("general", 0x0122): "Refused: SOP class not supported",
    ("general", 0x0124): "Refused: not authorized",
    ("general", 0x0211): "Unrecognized operation",
    ("general", 0x0212): "Mistyped argument",
    ("general", 0x0213): "Resource limitation",
    ("general", 0x0210): "Duplicate invocation (the message ID is already in use)",
    ("general", 0x0117): "Invalid SOP instance",
    ("general", 0x0111): "Duplicate SOP instance",
    ("general", 0x0112): "No such SOP instance",
    ("general", 0x0118): "No such SOP class",
}


@dataclass(slots=True, frozen=True)
class StatusInfo:
    code: int
    category: str  # success, warning, failure, cancel, pending
    meaning: str
    service: str  # the table the meaning came from

    @property
    def text(self) -> str:
        return f"0x{self.code:04X} {self.meaning}"


# The DIMSE-C services whose table the command names (the SOP class only picks among
# tables of the same service).
COMMAND_SERVICES = {C_ECHO: "verification", C_STORE: "storage", C_FIND: "find", C_MOVE: "move",
                    C_GET: "get"}


def _service_of(command_field: int | None, sop_class_uid: str | None) -> tuple[str, dict]:
    import pynetdicom.status as st
    from pynetdicom.sop_class import uid_to_service_class

    base = (command_field or 0) & 0x7FFF
    cls = ""
    if sop_class_uid:
        try:
            cls = uid_to_service_class(sop_class_uid).__name__
        except Exception:
            cls = ""
    service = COMMAND_SERVICES.get(base)
    if base == C_ECHO:
        return service, st.VERIFICATION_SERVICE_CLASS_STATUS
    if base == C_STORE:
        if cls == "NonPatientObjectStorageServiceClass":
            return service, st.NON_PATIENT_SERVICE_CLASS_STATUS
        return service, st.STORAGE_SERVICE_CLASS_STATUS
    if base == C_FIND:
        if cls == "BasicWorklistManagementServiceClass":
            return service, st.MODALITY_WORKLIST_SERVICE_CLASS_STATUS
        if cls == "RelevantPatientInformationQueryServiceClass":
            return service, st.RELEVANT_PATIENT_SERVICE_CLASS_STATUS
        if cls == "SubstanceAdministrationQueryServiceClass":
            return service, st.SUBSTANCE_ADMINISTRATION_SERVICE_CLASS_STATUS
        if cls == "UnifiedProcedureStepServiceClass":
            return service, st.UNIFIED_PROCEDURE_STEP_SERVICE_CLASS_STATUS
        return service, st.QR_FIND_SERVICE_CLASS_STATUS
    if base == C_MOVE:
        return service, st.QR_MOVE_SERVICE_CLASS_STATUS
    if base == C_GET:
        return service, st.QR_GET_SERVICE_CLASS_STATUS
    if base in (N_EVENT_REPORT, N_GET, N_SET, N_ACTION, N_CREATE, N_DELETE):
        table = {
            "StorageCommitmentServiceClass": ("storage commitment", st.STORAGE_COMMITMENT_SERVICE_CLASS_STATUS),
            "ProcedureStepServiceClass": ("modality performed procedure step", st.PROCEDURE_STEP_STATUS),
            "UnifiedProcedureStepServiceClass": ("unified procedure step", st.UNIFIED_PROCEDURE_STEP_SERVICE_CLASS_STATUS),
            "PrintManagementServiceClass": ("print management", st.PRINT_JOB_MANAGEMENT_SERVICE_CLASS_STATUS),
            "MediaCreationManagementServiceClass": ("media creation", st.MEDIA_CREATION_MANAGEMENT_SERVICE_CLASS_STATUS),
            "RTMachineVerificationServiceClass": ("RT machine verification", st.RT_MACHINE_VERIFICATION_SERVICE_CLASS_STATUS),
            "StorageManagementServiceClass": ("storage management", st.STORAGE_MANAGEMENT_SERVICE_CLASS_STATUS),
            "ApplicationEventLoggingServiceClass": ("application event logging", st.APPLICATION_EVENT_LOGGING_SERVICE_CLASS_STATUS),
        }.get(cls)
        if table:
            return table
    return "general", st.GENERAL_STATUS


def category_of(code: int) -> str:
    """Category from the code ranges of PS3.7 C.1 when no table knows the code."""
    if code == 0x0000:
        return "success"
    if code in (0xFF00, 0xFF01):
        return "pending"
    if code == 0xFE00:
        return "cancel"
    if code in (0x0001, 0x0107, 0x0116) or 0xB000 <= code <= 0xBFFF:
        return "warning"
    return "failure"


@lru_cache(maxsize=4096)
def describe_status(code: int, command_field: int | None = None,
                    sop_class_uid: str | None = None) -> StatusInfo:
    """The status ``code`` of a response to ``command_field`` on ``sop_class_uid``."""
    service = COMMAND_SERVICES.get((command_field or 0) & 0x7FFF)
    if service is not None:
        if code == 0x0000:
            return StatusInfo(code, "success", "Success", service)
        plain = PLAIN.get((service, code)) or PLAIN.get(("general", code))
        if plain:
            return StatusInfo(code, category_of(code), plain, service)
    return from_tables(code, command_field, sop_class_uid)


def from_tables(code: int, command_field: int | None, sop_class_uid: str | None) -> StatusInfo:
    """:func:`describe_status` from pynetdicom's tables and :data:`PLAIN`, whatever the code."""
    from pynetdicom.status import GENERAL_STATUS

    service, table = _service_of(command_field, sop_class_uid)
    entry = table.get(code) or GENERAL_STATUS.get(code)
    plain = PLAIN.get((service, code)) or PLAIN.get(("general", code))
    if entry:
        category = CATEGORIES.get(entry[0], category_of(code))
        meaning = plain or entry[1] or entry[0]
    else:
        category = category_of(code)
        meaning = plain or {"success": "Success", "pending": "Pending", "cancel": "Cancelled",
                            "warning": "Warning (code not defined for this service)",
                            "failure": "Failure (code not defined for this service)"}[category]
    if code == 0 and meaning == "":
        meaning = "Success"
    return StatusInfo(code, category, meaning, service)
