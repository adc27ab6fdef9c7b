"""Data sets in the negotiated transfer syntax (PS3.5 section 7 and 10), decoded with pydicom.

Only the first part of a data set is ever decoded (identifiers, patient/study/
series attributes): reading stops before pixel data and other bulk elements,
and a prefix that ends mid-element yields what came before it.

pydicom is imported by the first data set decoded, not with this module: a capture
without data sets (``conversations``, C-ECHO only) does not pay for it (0.1 s; its
package imports its pixel decoders and pydicom.data with it, whatever is asked of it).
"""

from __future__ import annotations

import warnings
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from io import BytesIO
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
DEFLATED_LE = "1.2.840.10008.1.2.1.99"
EXPLICIT_BE = "1.2.840.10008.1.2.2"
BULK_TAGS = {0x7FE00010, 0x7FE00008, 0x7FE00009, 0x00420011, 0x54001010, 0x56000020}
VALID_VRS = {b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT",
             b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"PN", b"SH", b"SL", b"SQ", b"SS", b"ST",
             b"SV", b"TM", b"UC", b"UI", b"UL", b"UN", b"UR", b"US", b"UT", b"UV"}
MAX_VALUE_TEXT = 200


@dataclass(slots=True)
class DecodedDataSet:
    dataset: Dataset
    transfer_syntax: str
    inferred: bool  # the transfer syntax was guessed from the bytes
    truncated: bool  # decoding stopped early (prefix only, bulk data, or malformed)
    problems: list[str] = field(default_factory=list)


@contextmanager
def wire_warnings(problems: list[str]):
    """pydicom's warnings while reading a data set say something about the bytes on the
    wire (a UID with invalid characters, explicit VR where implicit was negotiated): keep
    them as the data set's problems (a finding, dataset-problem) instead of letting them
    reach standard error."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    _add_problems(problems, [" ".join(str(w.message).split()) for w in caught])


def _add_problems(problems: list[str], texts) -> None:
    for text in texts:
        if text and text not in problems and len(problems) < 20:
            problems.append(text)


_TEXTS: dict = {}  # (tag, VR, value bytes, encoding, character set) -> (text, warnings)
_TEXTS_MAX = 4096
_CACHED_VALUE = 256  # bytes: longer values are converted every time


def attributes(dec: "DecodedDataSet", keywords=None) -> dict[str, str | None]:
    """Top-level attributes as text: the given keywords (those present), or all of them
    (identifiers); what pydicom warns about on the way is added to ``dec.problems``.

    The objects of one transfer repeat most values (patient, study, series, class, size),
    and pydicom's conversion and validation of a value costs ~20 us: the text of a raw
    value (and what pydicom warned about it) is remembered by its bytes, VR, encoding and
    the data set's Specific Character Set."""
    if keywords is None:
        with wire_warnings(dec.problems):
            return identifier_dict(dec.dataset)
    from pydicom.datadict import tag_for_keyword  # (loaded: dec is pydicom's)
    from pydicom.dataelem import RawDataElement

    ds = dec.dataset
    charset = getattr(ds.get_item(0x00080005), "value", None)
    if not isinstance(charset, (bytes, str, type(None))):
        charset = str(charset)  # (converted already: several values)
    found = {}
    for k in keywords:
        tag = tag_for_keyword(k)
        raw = ds.get_item(tag) if tag is not None else None
        if raw is None:
            continue
        if (type(raw) is RawDataElement and isinstance(raw.value, bytes)
                and len(raw.value) <= _CACHED_VALUE):
            key = (tag, raw.VR, raw.value, raw.is_implicit_VR, raw.is_little_endian, charset)
            hit = _TEXTS.get(key)
            if hit is None:
                warned: list[str] = []
                with wire_warnings(warned):
                    text = element_text(ds, k)
                if len(_TEXTS) >= _TEXTS_MAX:
                    _TEXTS.clear()
                hit = _TEXTS[key] = (text, tuple(warned))
            text, warned = hit
            _add_problems(dec.problems, warned)
        else:
            with wire_warnings(dec.problems):
                text = element_text(ds, k)
        if text is not None:
            found[k] = text
    return found


def infer_transfer_syntax(data: bytes) -> str | None:
    """Guess the encoding of a data set from its first element (PS3.5 7.1)."""
    if len(data) < 8:
        return None
    vr = bytes(data[4:6])
    explicit = vr in VALID_VRS
    group_le = data[0] | data[1] << 8
    group_be = data[0] << 8 | data[1]
    little = group_le <= group_be if group_le != group_be else True
    if explicit:
        return EXPLICIT_LE if little else EXPLICIT_BE
    return IMPLICIT_LE


def decode_prefix(prefix: bytes, transfer_syntax: str | None, complete: bool) -> DecodedDataSet | None:
    """Decode the start of a data set; None when there is nothing to decode."""
    if not prefix:
        return None
    from pydicom.dataelem import RawDataElement
    from pydicom.dataset import Dataset
    from pydicom.filereader import data_element_generator
    from pydicom.uid import UID

    inferred = False
    problems: list[str] = []
    data = bytes(prefix)
    if transfer_syntax == DEFLATED_LE:
        try:
            data = zlib.decompressobj(-zlib.MAX_WBITS).decompress(data, 1 << 20)
        except zlib.error as e:
            problems.append(f"deflated data set could not be inflated: {e}")
            return DecodedDataSet(Dataset(), transfer_syntax, False, True, problems)
    if transfer_syntax is None:
        transfer_syntax = infer_transfer_syntax(data)
        inferred = True
        if transfer_syntax is None:
            return None
    implicit = transfer_syntax == IMPLICIT_LE
    little = transfer_syntax != EXPLICIT_BE
    if transfer_syntax not in (IMPLICIT_LE, EXPLICIT_BE, DEFLATED_LE):
        try:
            if UID(transfer_syntax).is_implicit_VR:
                implicit = True
        except Exception:
            pass
    # Plain elements go straight into the data set's dict (Dataset(dict), pydicom's own
    # constructor): ``ds[tag] = elem`` costs a few microseconds an element in checks that
    # matter only for private elements (their creator, PS3.5 7.8.1) and sequences, which,
    # and everything after the first of them, still go through it.
    plain: dict = {}
    ds = None
    truncated = not complete
    stopped = []

    def stop(tag, vr, length):
        if int(tag) in BULK_TAGS:
            stopped.append(tag)
            return True
        return False

    fp = BytesIO(data)
    try:
        with wire_warnings(problems):
            for elem in data_element_generator(fp, implicit, little, stop_when=stop):
                if ds is None:
                    if type(elem) is RawDataElement and not elem.tag.is_private:
                        plain[elem.tag] = elem
                        continue
                    ds = Dataset(plain)
                ds[elem.tag] = elem
    except Exception as e:  # pydicom raises several types at a cut or malformed element
        if complete:
            problems.append(f"data set could not be decoded past offset {fp.tell()}: {e}")
        truncated = True
    if ds is None:
        ds = Dataset(plain)
    if stopped:
        truncated = True
    ds.set_original_encoding(implicit, little)  # (pydicom 3; the old attributes are deprecated)
    return DecodedDataSet(ds, transfer_syntax, inferred, truncated, problems)


def element_text(ds: Dataset, keyword: str) -> str | None:
    """A top-level attribute as text, or None; never raises."""
    try:
        elem = ds.data_element(keyword)
    except Exception:
        return None
    if elem is None:
        return None
    return value_text(elem)


def value_text(elem) -> str | None:
    try:
        v = elem.value
    except Exception:
        return None
    if v is None:
        return ""
    if elem.VR == "SQ":
        return f"<sequence of {len(v)} item(s)>"
    if isinstance(v, bytes):
        return f"<{len(v)} bytes>"
    from pydicom.multival import MultiValue  # (loaded: elem is pydicom's)

    s = "\\".join(str(x) for x in v) if isinstance(v, (list, tuple, MultiValue)) else str(v)
    return s if len(s) <= MAX_VALUE_TEXT else s[:MAX_VALUE_TEXT] + "..."


def identifier_dict(ds: Dataset) -> dict[str, str | None]:
    """Every top-level attribute of an identifier as keyword -> text (C-FIND/MOVE/GET keys)."""
    out: dict[str, str | None] = {}
    try:
        elems = list(ds)
    except Exception:
        return out
    for elem in elems:
        try:
            key = elem.keyword or f"({elem.tag.group:04X},{elem.tag.element:04X})"
        except Exception:
            continue
        out[key] = value_text(elem)
    return out
