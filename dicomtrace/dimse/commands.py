"""DIMSE command sets (PS3.7 section 9.3, 10.3 and annex E).

The command set is always Implicit VR Little Endian; it is decoded with
pydicom and the fields this tool reasons about are lifted into
:class:`Command`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from io import BytesIO

from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset

# PS3.7 table E.1-1 command field values
COMMAND_NAMES = {
    0x0001: "C-STORE-RQ", 0x8001: "C-STORE-RSP",
    0x0010: "C-GET-RQ", 0x8010: "C-GET-RSP",
    0x0020: "C-FIND-RQ", 0x8020: "C-FIND-RSP",
    0x0021: "C-MOVE-RQ", 0x8021: "C-MOVE-RSP",
    0x0030: "C-ECHO-RQ", 0x8030: "C-ECHO-RSP",
    0x0100: "N-EVENT-REPORT-RQ", 0x8100: "N-EVENT-REPORT-RSP",
    0x0110: "N-GET-RQ", 0x8110: "N-GET-RSP",
    0x0120: "N-SET-RQ", 0x8120: "N-SET-RSP",
    0x0130: "N-ACTION-RQ", 0x8130: "N-ACTION-RSP",
    0x0140: "N-CREATE-RQ", 0x8140: "N-CREATE-RSP",
    0x0150: "N-DELETE-RQ", 0x8150: "N-DELETE-RSP",
    0x0FFF: "C-CANCEL-RQ",
}
C_STORE, C_GET, C_FIND, C_MOVE, C_ECHO = 0x0001, 0x0010, 0x0020, 0x0021, 0x0030
N_EVENT_REPORT, N_GET, N_SET, N_ACTION, N_CREATE, N_DELETE = 0x0100, 0x0110, 0x0120, 0x0130, 0x0140, 0x0150
C_CANCEL = 0x0FFF
NO_DATA_SET = 0x0101


def service_name(command_field: int) -> str:
    """``C-STORE`` for both 0x0001 and 0x8001."""
    if command_field == C_CANCEL:
        return "C-CANCEL"
    name = COMMAND_NAMES.get(command_field & 0x7FFF)
    return name.rsplit("-", 1)[0] if name else f"0x{command_field:04X}"


def is_defined(command_field: int | None) -> bool:
    """A Command Field (0000,0100) that PS3.7 (9.3, 10.3) defines, request or response."""
    return command_field is not None and (command_field == C_CANCEL or command_field in COMMAND_NAMES)


def is_response(command_field: int) -> bool:
    return bool(command_field & 0x8000)


@dataclass(slots=True)
class Command:
    """The fields of a command set that matter for the analysis."""

    command_field: int | None = None
    message_id: int | None = None
    responded_to: int | None = None  # Message ID Being Responded To
    sop_class_uid: str | None = None  # Affected or Requested SOP Class UID
    sop_instance_uid: str | None = None  # Affected or Requested SOP Instance UID
    priority: int | None = None
    data_set_type: int | None = None
    status: int | None = None
    move_destination: str | None = None
    move_originator_ae: str | None = None
    move_originator_id: int | None = None
    remaining: int | None = None
    completed: int | None = None
    failed: int | None = None
    warning: int | None = None
    error_comment: str | None = None
    error_id: int | None = None
    offending_elements: list[str] = field(default_factory=list)
    event_type_id: int | None = None
    action_type_id: int | None = None
    attribute_identifiers: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        if self.command_field is None:
            return "unknown command"
        return COMMAND_NAMES.get(self.command_field, f"command 0x{self.command_field:04X}")

    @property
    def has_data_set(self) -> bool:
        return self.data_set_type is not None and self.data_set_type != NO_DATA_SET


def _text(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    return str(value).rstrip("\x00 ")


def _tags(value) -> list[str]:
    if value is None:
        return []
    items = value if isinstance(value, (list, tuple)) or hasattr(value, "__iter__") and not isinstance(value, (str, bytes)) else [value]
    out = []
    for t in items:
        try:
            out.append(f"({int(t) >> 16:04X},{int(t) & 0xFFFF:04X})")
        except (TypeError, ValueError):
            out.append(str(t))
    return out


def decode_command(raw: bytes) -> tuple[Command, Dataset | None]:
    """Decode a command set; never raises (problems are listed in ``Command.problems``)."""
    cmd = Command()
    try:
        ds = read_dataset(BytesIO(raw), True, True)
    except Exception as e:  # pydicom raises many types on garbage
        cmd.problems.append(f"command set could not be decoded: {e}")
        return cmd, None

    def get(keyword):
        try:
            elem = ds.get(keyword)
        except Exception as e:  # a value pydicom cannot convert
            cmd.problems.append(f"{keyword}: {e}")
            return None
        return elem

    def num(keyword):
        v = get(keyword)
        if v is None or v == "":
            return None
        try:
            return int(v)
        except (TypeError, ValueError):
            cmd.problems.append(f"{keyword} is not a number: {v!r}")
            return None

    cmd.command_field = num("CommandField")
    cmd.message_id = num("MessageID")
    cmd.responded_to = num("MessageIDBeingRespondedTo")
    cmd.sop_class_uid = _text(get("AffectedSOPClassUID")) or _text(get("RequestedSOPClassUID"))
    cmd.sop_instance_uid = (_text(get("AffectedSOPInstanceUID"))
                            or _text(get("RequestedSOPInstanceUID")))
    cmd.priority = num("Priority")
    cmd.data_set_type = num("CommandDataSetType")
    cmd.status = num("Status")
    cmd.move_destination = _text(get("MoveDestination"))
    cmd.move_originator_ae = _text(get("MoveOriginatorApplicationEntityTitle"))
    cmd.move_originator_id = num("MoveOriginatorMessageID")
    cmd.remaining = num("NumberOfRemainingSuboperations")
    cmd.completed = num("NumberOfCompletedSuboperations")
    cmd.failed = num("NumberOfFailedSuboperations")
    cmd.warning = num("NumberOfWarningSuboperations")
    cmd.error_comment = _text(get("ErrorComment"))
    cmd.error_id = num("ErrorID")
    cmd.offending_elements = _tags(get("OffendingElement"))
    cmd.event_type_id = num("EventTypeID")
    cmd.action_type_id = num("ActionTypeID")
    cmd.attribute_identifiers = _tags(get("AttributeIdentifierList"))
    if cmd.command_field is None:
        cmd.problems.append("command set has no Command Field (0000,0100)")
    return cmd, ds
