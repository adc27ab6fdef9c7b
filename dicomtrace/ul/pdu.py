"""Upper Layer PDUs and items (PS3.8 section 9.3), decoded leniently.

Every decoder takes the PDU body (the bytes after the 6-byte PDU header) and
returns a dataclass plus a list of :class:`Violation` for what did not conform;
nothing here raises on malformed input.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

A_ASSOCIATE_RQ, A_ASSOCIATE_AC, A_ASSOCIATE_RJ = 0x01, 0x02, 0x03
P_DATA_TF, A_RELEASE_RQ, A_RELEASE_RP, A_ABORT = 0x04, 0x05, 0x06, 0x07

PDU_NAMES = {
    A_ASSOCIATE_RQ: "A-ASSOCIATE-RQ", A_ASSOCIATE_AC: "A-ASSOCIATE-AC",
    A_ASSOCIATE_RJ: "A-ASSOCIATE-RJ", P_DATA_TF: "P-DATA-TF",
    A_RELEASE_RQ: "A-RELEASE-RQ", A_RELEASE_RP: "A-RELEASE-RP", A_ABORT: "A-ABORT",
}

# PS3.8 table 9-21: A-ASSOCIATE-RJ result, source and reason
REJECT_RESULTS = {1: "rejected-permanent", 2: "rejected-transient"}
REJECT_SOURCES = {1: "DICOM UL service-user", 2: "DICOM UL service-provider (ACSE related function)",
                  3: "DICOM UL service-provider (presentation related function)"}
REJECT_REASONS = {
    (1, 1): "no-reason-given",
    (1, 2): "application-context-name-not-supported",
    (1, 3): "calling-AE-title-not-recognized",
    (1, 7): "called-AE-title-not-recognized",
    (2, 1): "no-reason-given",
    (2, 2): "protocol-version-not-supported",
    (3, 1): "temporary-congestion",
    (3, 2): "local-limit-exceeded",
}
# PS3.8 table 9-26: A-ABORT source and reason
ABORT_SOURCES = {0: "DICOM UL service-user (initiated abort)", 1: "reserved",
                 2: "DICOM UL service-provider (initiated abort)"}
ABORT_REASONS = {0: "reason-not-specified", 1: "unrecognized-PDU", 2: "unexpected-PDU",
                 3: "reserved", 4: "unrecognized-PDU-parameter", 5: "unexpected-PDU-parameter",
                 6: "invalid-PDU-parameter-value"}
# PS3.8 table 9-18: presentation context result in A-ASSOCIATE-AC
PC_RESULTS = {0: "acceptance", 1: "user-rejection", 2: "no-reason (provider rejection)",
              3: "abstract-syntax-not-supported (provider rejection)",
              4: "transfer-syntaxes-not-supported (provider rejection)"}
# PS3.8 table D.3-1: user identity types
USER_IDENTITY_TYPES = {1: "username", 2: "username and passcode", 3: "Kerberos service ticket",
                       4: "SAML assertion", 5: "JSON Web Token"}
ROLE_VALUES = {0: "not supported / non-support", 1: "supported / support"}

APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"


def reject_text(result: int, source: int, reason: int) -> str:
    return (f"{REJECT_RESULTS.get(result, f'result {result}')}, "
            f"source: {REJECT_SOURCES.get(source, f'source {source}')}, "
            f"reason: {REJECT_REASONS.get((source, reason), f'reserved reason {reason}')}")


def abort_text(source: int, reason: int) -> str:
    if source == 2:
        return f"{ABORT_SOURCES[2]}, reason: {ABORT_REASONS.get(reason, f'reason {reason}')}"
    return ABORT_SOURCES.get(source, f"reserved source {source}")


@dataclass(slots=True, frozen=True)
class Violation:
    """Something in the byte stream that does not conform to PS3.8.

    ``code`` is the finding code that #4 reports (e.g. ``malformed-pdu``).
    """

    code: str
    message: str
    offset: int | None = None  # byte offset in the direction's stream
    frame: int | None = None


@dataclass(slots=True)
class PresentationContextItem:
    """A presentation context item (0x20 in RQ, 0x21 in AC)."""

    id: int
    result: int | None = None  # AC only
    abstract_syntax: str | None = None  # RQ only
    transfer_syntaxes: list[str] = field(default_factory=list)


@dataclass(slots=True)
class RoleSelection:
    """SCP/SCU role selection sub-item (PS3.7 D.3.3.4)."""

    sop_class_uid: str
    scu_role: int
    scp_role: int


@dataclass(slots=True)
class UserIdentity:
    """User identity negotiation (PS3.7 D.3.3.7): RQ has type and fields, AC a response."""

    identity_type: int | None = None
    positive_response_requested: bool | None = None
    primary_field: bytes | None = None
    secondary_field_length: int | None = None  # the passcode itself is never kept
    server_response: bytes | None = None


@dataclass(slots=True)
class UserInformation:
    max_length: int | None = None
    implementation_class_uid: str | None = None
    implementation_version_name: str | None = None
    async_ops: tuple[int, int] | None = None  # (max invoked, max performed)
    roles: list[RoleSelection] = field(default_factory=list)
    extended_negotiation: list[tuple[str, bytes]] = field(default_factory=list)
    common_extended_negotiation: list[dict] = field(default_factory=list)
    user_identity: UserIdentity | None = None
    unknown_items: list[int] = field(default_factory=list)


@dataclass(slots=True)
class AssociatePdu:
    """A-ASSOCIATE-RQ or -AC (PS3.8 9.3.2, 9.3.3)."""

    pdu_type: int
    protocol_version: int
    called_ae_raw: bytes
    calling_ae_raw: bytes
    application_context: str | None = None
    presentation_contexts: list[PresentationContextItem] = field(default_factory=list)
    user_info: UserInformation = field(default_factory=UserInformation)

    @property
    def called_ae(self) -> str:
        return ae_title(self.called_ae_raw)

    @property
    def calling_ae(self) -> str:
        return ae_title(self.calling_ae_raw)


@dataclass(slots=True, frozen=True)
class AssociateRjPdu:
    result: int
    source: int
    reason: int

    @property
    def text(self) -> str:
        return reject_text(self.result, self.source, self.reason)


@dataclass(slots=True, frozen=True)
class ReleasePdu:
    pdu_type: int  # A_RELEASE_RQ or A_RELEASE_RP


@dataclass(slots=True, frozen=True)
class AbortPdu:
    source: int
    reason: int

    @property
    def text(self) -> str:
        return abort_text(self.source, self.reason)


def ae_title(raw: bytes) -> str:
    """AE title as text: trailing spaces (and NULs) stripped, leading ones kept so that
    anomalies stay visible; non-ASCII bytes decoded as Latin-1."""
    return raw.decode("latin-1").rstrip(" \x00")


def _uid(raw: bytes) -> str:
    return raw.decode("latin-1").rstrip("\x00 ")


def decode_associate(pdu_type: int, body: bytes, offset: int = 0) -> tuple[AssociatePdu, list[Violation]]:
    """Decode the body of an A-ASSOCIATE-RQ/AC; ``offset`` is the body's stream offset."""
    v: list[Violation] = []
    name = PDU_NAMES[pdu_type]
    if len(body) < 68:
        v.append(Violation("malformed-pdu", f"{name} body is {len(body)} bytes, shorter than "
                           "its 68-byte fixed part", offset))
        body = body + bytes(68 - len(body))
    version = struct.unpack_from(">H", body, 0)[0]
    pdu = AssociatePdu(pdu_type, version, bytes(body[4:20]), bytes(body[20:36]))
    if not version & 1:
        v.append(Violation("malformed-pdu", f"{name} protocol version 0x{version:04X} does not "
                           "have bit 0 (version 1) set", offset))
    pos = 68
    end = len(body)
    while pos < end:
        if pos + 4 > end:
            v.append(Violation("malformed-pdu", f"{name}: {end - pos} stray bytes after the last "
                               "item", offset + pos))
            break
        itype, ilen = body[pos], struct.unpack_from(">H", body, pos + 2)[0]
        value = body[pos + 4:pos + 4 + ilen]
        if pos + 4 + ilen > end:
            v.append(Violation("malformed-pdu", f"{name}: item 0x{itype:02X} claims {ilen} bytes, "
                               f"only {end - pos - 4} remain", offset + pos))
        if itype == 0x10:
            pdu.application_context = _uid(value)
        elif itype in (0x20, 0x21):
            expected = 0x20 if pdu_type == A_ASSOCIATE_RQ else 0x21
            if itype != expected:
                v.append(Violation("malformed-pdu", f"{name} carries presentation context item "
                                   f"type 0x{itype:02X} (expected 0x{expected:02X})", offset + pos))
            pdu.presentation_contexts.append(_presentation_context(itype, value, offset + pos + 4, v))
        elif itype == 0x50:
            pdu.user_info = _user_information(value, offset + pos + 4, v)
        else:
            v.append(Violation("malformed-pdu", f"{name}: unknown item type 0x{itype:02X} "
                               f"({ilen} bytes) skipped", offset + pos))
        pos += 4 + ilen
    return pdu, v


def _sub_items(value: bytes, offset: int, v: list[Violation], what: str):
    pos = 0
    while pos + 4 <= len(value):
        itype, ilen = value[pos], struct.unpack_from(">H", value, pos + 2)[0]
        if pos + 4 + ilen > len(value):
            v.append(Violation("malformed-pdu", f"{what}: sub-item 0x{itype:02X} claims {ilen} "
                               f"bytes, only {len(value) - pos - 4} remain", offset + pos))
        yield itype, value[pos + 4:pos + 4 + ilen], offset + pos
        pos += 4 + ilen
    if pos < len(value):
        v.append(Violation("malformed-pdu", f"{what}: {len(value) - pos} stray bytes", offset + pos))


def _presentation_context(itype: int, value: bytes, offset: int, v) -> PresentationContextItem:
    if len(value) < 4:
        v.append(Violation("malformed-pdu", f"presentation context item of {len(value)} bytes",
                           offset))
        return PresentationContextItem(value[0] if value else 0)
    pc = PresentationContextItem(value[0])
    if itype == 0x21:
        pc.result = value[2]
    for sub, sval, soff in _sub_items(value[4:], offset + 4, v, f"presentation context {pc.id}"):
        if sub == 0x30:
            pc.abstract_syntax = _uid(sval)
        elif sub == 0x40:
            pc.transfer_syntaxes.append(_uid(sval))
        else:
            v.append(Violation("malformed-pdu", f"presentation context {pc.id}: unknown sub-item "
                               f"0x{sub:02X}", soff))
    return pc


def _u16_field(value: bytes, pos: int) -> tuple[bytes, int]:
    if pos + 2 > len(value):
        return b"", len(value)
    n = struct.unpack_from(">H", value, pos)[0]
    return bytes(value[pos + 2:pos + 2 + n]), pos + 2 + n


def _user_information(value: bytes, offset: int, v) -> UserInformation:
    ui = UserInformation()
    for sub, s, soff in _sub_items(value, offset, v, "user information"):
        if sub == 0x51:
            if len(s) != 4:
                v.append(Violation("malformed-pdu", f"maximum length sub-item of {len(s)} bytes",
                                   soff))
            if len(s) >= 4:
                ui.max_length = struct.unpack_from(">I", s, 0)[0]
        elif sub == 0x52:
            ui.implementation_class_uid = _uid(s)
        elif sub == 0x55:
            ui.implementation_version_name = s.decode("latin-1").rstrip("\x00 ")
        elif sub == 0x53 and len(s) >= 4:
            ui.async_ops = struct.unpack_from(">HH", s, 0)
        elif sub == 0x54:
            uid, p = _u16_field(s, 0)
            if p + 2 <= len(s):
                ui.roles.append(RoleSelection(_uid(uid), s[p], s[p + 1]))
            else:
                v.append(Violation("malformed-pdu", "SCP/SCU role selection sub-item truncated", soff))
        elif sub == 0x56:
            uid, p = _u16_field(s, 0)
            ui.extended_negotiation.append((_uid(uid), bytes(s[p:])))
        elif sub == 0x57:
            uid, p = _u16_field(s, 0)
            svc, p = _u16_field(s, p)
            related_raw, p = _u16_field(s, p)
            related, q = [], 0
            while q + 2 <= len(related_raw):
                r, q = _u16_field(related_raw, q)
                related.append(_uid(r))
            ui.common_extended_negotiation.append(
                {"sop_class_uid": _uid(uid), "service_class_uid": _uid(svc),
                 "related_general_sop_classes": related})
        elif sub == 0x58:
            if len(s) < 2:
                v.append(Violation("malformed-pdu", "user identity sub-item truncated", soff))
                continue
            primary, p = _u16_field(s, 2)
            secondary, _ = _u16_field(s, p)
            ui.user_identity = UserIdentity(identity_type=s[0],
                                            positive_response_requested=bool(s[1]),
                                            primary_field=primary if s[0] in (1, 2) else None,
                                            secondary_field_length=len(secondary))
        elif sub == 0x59:
            resp, _ = _u16_field(s, 0)
            ui.user_identity = UserIdentity(server_response=resp)
        else:
            ui.unknown_items.append(sub)
            v.append(Violation("malformed-pdu", f"user information: unknown sub-item 0x{sub:02X} "
                               f"({len(s)} bytes)", soff))
    return ui


def decode_control(pdu_type: int, body: bytes, offset: int = 0
                   ) -> tuple[AssociateRjPdu | ReleasePdu | AbortPdu, list[Violation]]:
    """Decode A-ASSOCIATE-RJ, A-RELEASE-RQ/RP or A-ABORT."""
    v: list[Violation] = []
    name = PDU_NAMES[pdu_type]
    if len(body) != 4:
        v.append(Violation("malformed-pdu", f"{name} length is {len(body)}, not 4", offset))
    b = bytes(body[:4]).ljust(4, b"\x00")
    if pdu_type == A_ASSOCIATE_RJ:
        pdu = AssociateRjPdu(b[1], b[2], b[3])
        if (pdu.source, pdu.reason) not in REJECT_REASONS or pdu.result not in REJECT_RESULTS:
            v.append(Violation("malformed-pdu", f"A-ASSOCIATE-RJ with reserved values: result "
                               f"{pdu.result}, source {pdu.source}, reason {pdu.reason}", offset))
        return pdu, v
    if pdu_type == A_ABORT:
        pdu = AbortPdu(b[2], b[3])
        if pdu.source not in (0, 2) or pdu.reason not in ABORT_REASONS:
            v.append(Violation("malformed-pdu", f"A-ABORT with reserved values: source "
                               f"{pdu.source}, reason {pdu.reason}", offset))
        return pdu, v
    return ReleasePdu(pdu_type), v
