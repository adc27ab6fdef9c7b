"""The attributes of a stored object read without pydicom, when its header is plain.

A C-STORE's data set is summarised by a few top-level attributes (``STORE_KEYS``: the
SOP instance, patient, study, series, size).  pydicom reads them (dataset.py), but its
import costs 0.09-0.16 s and each data set ~0.3 ms; on the bench capture that was a fifth
of an export's time, most of it before the second core has anything to do
(docs/performance.md, "Data sets without pydicom").

:func:`store_summary` walks the top-level elements of the data set's first bytes in the
negotiated transfer syntax (PS3.5 7.1: little endian, explicit or implicit VR) up to the
pixel data, and decodes the wanted values itself **only when pydicom would read exactly
these values and say nothing about them**: every element of defined length, explicit VRs
that PS3.5 defines and that the data dictionary gives the wanted attributes, private data
elements only in explicit VR and with values pydicom converts without a word (it converts
them as it reads, with their creator's name), a character set whose repertoire agrees with
ASCII, and each wanted value plain by the rules pydicom validates it with (PS3.5 6.2: its
characters and lengths).  Anything else returns None and pydicom reads the data set as before.  A unit
test compares the two on generated values and on every data set of the shared captures.
"""

from __future__ import annotations

import re

from dicomtrace.dimse.dataset import (BULK_TAGS, DEFLATED_LE, EXPLICIT_BE, IMPLICIT_LE,
                                      infer_transfer_syntax)
from dicomtrace.dimse.dataset import VALID_VRS as VRS

# PS3.6: keyword, tag and VR of each attribute a stored object is summarised by, in the
# order of dicomtrace.model.builder.STORE_KEYS (a unit test compares both with pydicom's
# dictionary)
STORE_TAGS = {
    0x00080016: ("SOPClassUID", "UI"), 0x00080018: ("SOPInstanceUID", "UI"),
    0x00100010: ("PatientName", "PN"), 0x00100020: ("PatientID", "LO"),
    0x00100030: ("PatientBirthDate", "DA"), 0x00080050: ("AccessionNumber", "SH"),
    0x0020000D: ("StudyInstanceUID", "UI"), 0x0020000E: ("SeriesInstanceUID", "UI"),
    0x00080020: ("StudyDate", "DA"), 0x00081030: ("StudyDescription", "LO"),
    0x0008103E: ("SeriesDescription", "LO"), 0x00080060: ("Modality", "CS"),
    0x00200013: ("InstanceNumber", "IS"), 0x00080005: ("SpecificCharacterSet", "CS"),
    0x00280010: ("Rows", "US"), 0x00280011: ("Columns", "US"),
    0x00280008: ("NumberOfFrames", "IS"),
}
KEYWORD_TAGS = {kw: tag for tag, (kw, _vr) in STORE_TAGS.items()}
LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT", b"SV",
            b"UV"}  # PS3.5 7.1.2: a 4-byte length after 2 reserved bytes
# Specific Character Set values whose repertoire holds ASCII as it is (PS3.3 C.12.1.1.2)
ASCII_SETS = {"", "ISO_IR 6", "ISO_IR 100", "ISO_IR 192"}
# PS3.5 6.2, as pydicom checks a value read: the whole value (padding included) ...
_PLAIN = {
    "UI": re.compile(rb"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*\x00?"),
    "CS": re.compile(rb"[A-Z0-9_][A-Z0-9 _]*"),
    "DA": re.compile(rb"[0-9]{4}(0[1-9]|1[0-2])([0-2][0-9]|3[01]) ?"),
    "IS": re.compile(rb"[0-9]{1,9} ?"),  # (within 32 bits, as pydicom checks)
    "SH": re.compile(rb"[!-\[\]-~][ -\[\]-~]*"),  # printable ASCII but the backslash,
    "LO": re.compile(rb"[!-\[\]-~][ -\[\]-~]*"),  # no leading space
    "PN": re.compile(rb"[!-<>-\[\]-~][ -<>-\[\]-~]*"),  # ... and no '=': one component group
}
_MAX = {"UI": 64, "CS": 16, "DA": 8, "IS": 12, "SH": 16, "LO": 64, "PN": 64}


def store_summary(prefix, transfer_syntax: str | None, complete: bool, keywords):
    """(transfer syntax, inferred, attributes, truncated, problems) of a stored object's
    data set as :func:`dicomtrace.dimse.dataset.decode_prefix` and ``attributes(dec,
    keywords)`` give them (``keywords``: those of :data:`STORE_TAGS`, in their order), or
    None when pydicom has to read it (see the module's docstring)."""
    if not prefix or transfer_syntax in (EXPLICIT_BE, DEFLATED_LE):
        return None
    data = prefix if type(prefix) is bytes else bytes(prefix)
    inferred = transfer_syntax is None
    if inferred:
        transfer_syntax = infer_transfer_syntax(data)
        if transfer_syntax is None or transfer_syntax == EXPLICIT_BE:
            return None
    implicit = transfer_syntax == IMPLICIT_LE
    found = _walk(data, implicit)
    if found is None:
        return None
    values, stopped = found
    charset = values.get(0x00080005)
    if charset is not None and (charset[1] not in (None, "CS") or _text(charset[0], "CS") not in ASCII_SETS):
        return None
    texts = {}
    for keyword in keywords:
        tag = KEYWORD_TAGS[keyword]
        if tag not in values:
            continue
        raw, vr = values[tag]
        text = _text(raw, STORE_TAGS[tag][1]) if vr is None or vr == STORE_TAGS[tag][1] else None
        if text is None:
            return None
        texts[keyword] = text
    return transfer_syntax, inferred, texts, stopped or not complete, []


def _walk(data: bytes, implicit: bool):
    """The wanted elements' (value, explicit VR or None) by tag, and whether the walk
    stopped at bulk data; None at anything pydicom would read otherwise than plainly."""
    n = len(data)
    pos = 0
    values: dict[int, tuple[bytes, str | None]] = {}
    creators: dict[tuple[int, int], bytes] = {}  # private creator elements (PS3.5 7.8.1): value
    while pos + 8 <= n:
        group = data[pos] | data[pos + 1] << 8
        element = data[pos + 2] | data[pos + 3] << 8
        tag = group << 16 | element
        if implicit:
            vr = None
            length = int.from_bytes(data[pos + 4:pos + 8], "little")
            head = 8
        else:
            vrb = data[pos + 4:pos + 6]
            if vrb not in VRS:
                return None
            vr = vrb.decode()
            if vrb in LONG_VRS:
                if pos + 12 > n:
                    return None
                length = int.from_bytes(data[pos + 8:pos + 12], "little")
                head = 12
            else:
                length = data[pos + 6] | data[pos + 7] << 8
                head = 8
        if tag in BULK_TAGS:
            return values, True
        if length == 0xFFFFFFFF or tag == 0xFFFEE00D:
            return None  # a sequence or item read by pydicom
        end = pos + head + length
        if group & 1:
            if element < 0x0010:
                return None  # a group length or reserved element of a private group
            if element < 0x0100:
                if end <= n:
                    creators[(group, element)] = data[pos + head:end]
            elif (group, element >> 8) in creators:
                # pydicom converts a private data element with its creator's name: plain
                # only when neither says anything in that (an explicit VR, plain values)
                if implicit or end > n or not _plain_private(vr, data[pos + head:end]) \
                        or not _plain_private("LO", creators[(group, element >> 8)]):
                    return None
        if end > n:
            return None if tag in STORE_TAGS else (values, False)  # cut: a short value
        if tag in STORE_TAGS:
            values[tag] = (data[pos + head:end], vr)
        pos = end
    return values, False


# A private data element's value as pydicom converts it (its explicit VR), plain: what it
# reads without a word.  Binary values of whole numbers (at another length pydicom fails
# and reads no further); the texts it decodes as ISO 8859-1 and does not check, any; the
# others in ASCII without escape sequences, each value within the rule and length pydicom
# checks for its VR (a unit test tries every VR)
_FREE = {"OB", "OD", "OF", "OL", "OV", "OW", "UN"}
_NUMBER = {"US": 2, "SS": 2, "UL": 4, "SL": 4, "FL": 4, "FD": 8, "SV": 8, "UV": 8}
_RAW_TEXT = {"AE", "AS", "CS", "DA", "DT", "TM", "UR"}  # decoded as ISO 8859-1, unchecked
_ANY_TEXT = {"UT": 0xFFFFFFFE, "UC": 0xFFFFFFFE, "ST": 1024, "LT": 10240}  # in the character
# set, only their length checked: ASCII bytes but ESC (ISO 2022's escape sequences)
_ASCII_BYTES = re.compile(rb"[\x00-\x1a\x1c-\x7f]*")
_ASCII_TEXT = re.compile(rb"[ -~]*")
_DS = re.compile(rb" *[+\-]?([0-9]+|[0-9]+\.[0-9]*|\.[0-9]+)([eE][+\-]?[0-9]+)? *")


def _plain_private(vr: str | None, raw: bytes) -> bool:
    if vr in _FREE:
        return True
    if vr in _NUMBER:
        return len(raw) % _NUMBER[vr] == 0
    if vr in _RAW_TEXT:
        return True
    if vr in _ANY_TEXT:
        return len(raw) <= _ANY_TEXT[vr] and _ASCII_BYTES.fullmatch(raw) is not None
    if _ASCII_TEXT.fullmatch(raw) is None:
        return False
    values = raw.split(b"\\")
    if vr == "DS":
        return all(len(v) <= 16 and (not v or _DS.fullmatch(v)) for v in values)
    if vr in _PLAIN:
        return all(not v or _text(v, vr) is not None for v in values)
    return False


def _text(raw: bytes, vr: str) -> str | None:
    """The text pydicom gives a plain value of ``vr`` (``str`` of its value), or None."""
    if vr == "US":
        return str(raw[0] | raw[1] << 8) if len(raw) == 2 else ("" if not raw else None)
    if not raw:
        return ""
    rule = _PLAIN.get(vr)
    if rule is None or len(raw) > _MAX[vr] + (vr in ("DA", "IS")) or rule.fullmatch(raw) is None:
        return None
    return raw.decode("ascii").rstrip(" \x00")
