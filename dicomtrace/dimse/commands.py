"""DIMSE command sets (PS3.7 section 9.3, 10.3 and annex E).

The command set is always Implicit VR Little Endian; the fields this tool reasons
about are lifted into :class:`Command`.  The common command set (group 0000 elements
with plain values) is read directly, anything else by pydicom.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from io import BytesIO

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


# The command elements of PS3.7 E.1-1 read by :func:`_decode_plain`: (0000,eeee) -> the
# Command field and how its value is read ("U": US, two bytes; "L": UL, four; "I": UI;
# "A": AE).  Anything else in a command set goes to pydicom.
_PLAIN = {
    0x0000: (None, "L"), 0x0002: ("sop_class_uid", "I"), 0x0003: ("requested_sop_class", "I"),
    0x0100: ("command_field", "U"), 0x0110: ("message_id", "U"), 0x0120: ("responded_to", "U"),
    0x0600: ("move_destination", "A"), 0x0700: ("priority", "U"),
    0x0800: ("data_set_type", "U"), 0x0900: ("status", "U"), 0x0903: ("error_id", "U"),
    0x1000: ("sop_instance_uid", "I"), 0x1001: ("requested_sop_instance", "I"),
    0x1002: ("event_type_id", "U"), 0x1008: ("action_type_id", "U"),
    0x1020: ("remaining", "U"), 0x1021: ("completed", "U"), 0x1022: ("failed", "U"),
    0x1023: ("warning", "U"), 0x1030: ("move_originator_ae", "A"),
    0x1031: ("move_originator_id", "U"),
}
_UID_CHARS = frozenset(b"0123456789.")
_AE_CHARS = frozenset(range(0x21, 0x7F)) - {0x5C}  # (PS3.5 6.2: no backslash, no control)
_ELEMENT = struct.Struct("<HHI")


def _decode_plain(raw: bytes) -> Command | None:
    """The common command set read directly: Implicit VR Little Endian elements of group
    0000 (PS3.7 6.3.1, E.1-1) with one plain value each.  None when anything is unusual
    (another element, a value pydicom would read otherwise, a cut): pydicom reads those.

    pydicom's reading is ~40 times slower per command set, and the result is the same
    (tests/unit/test_dimse_commands.py compares both on every capture's command sets)."""
    values = {}
    pos, end = 0, len(raw)
    while pos < end:
        if pos + 8 > end:
            return None
        group, elem, length = _ELEMENT.unpack_from(raw, pos)
        pos += 8
        entry = _PLAIN.get(elem)
        if group or entry is None or elem in values or pos + length > end:
            return None
        kind = entry[1]
        value = raw[pos:pos + length]
        pos += length
        if kind == "U" or kind == "L":
            if length != (2 if kind == "U" else 4):
                return None
            values[elem] = int.from_bytes(value, "little")
            continue
        if kind == "I":
            text = value[:-1] if value.endswith(b"\x00") else value
            if not text or not _UID_CHARS.issuperset(text):
                return None
        else:
            text = value.strip(b" ")
            if not text or not _AE_CHARS.issuperset(text):
                return None
        values[elem] = text.decode("ascii")
    if 0x0100 not in values:
        return None
    cmd = Command()
    for elem, value in values.items():
        name = _PLAIN[elem][0]
        if name == "requested_sop_class":
            if 0x0002 not in values:
                cmd.sop_class_uid = value
        elif name == "requested_sop_instance":
            if 0x1000 not in values:
                cmd.sop_instance_uid = value
        elif name is not None:
            setattr(cmd, name, value)
    return cmd


def decode_command(raw: bytes) -> Command:
    """Decode a command set; never raises (problems are listed in ``Command.problems``)."""
    return _decode_plain(raw) or decode_command_pydicom(raw)


def decode_command_pydicom(raw: bytes) -> Command:
    """:func:`decode_command` by pydicom, for any command set."""
    from pydicom.filereader import read_dataset

    cmd = Command()
    try:
        ds = read_dataset(BytesIO(raw), True, True)
    except Exception as e:  # pydicom raises many types on garbage
        cmd.problems.append(f"command set could not be decoded: {e}")
        return cmd

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
    return cmd
