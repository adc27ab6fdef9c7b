"""A stored object's summary read without pydicom (dimse/plain.py) is pydicom's, or not made.

Whenever ``store_summary`` returns something, it must be exactly what the pydicom path
(``decode_prefix`` and ``attributes(dec, STORE_KEYS)``) gives the same bytes: on generated
data sets (values plain and not, private elements, sequences, bulk data, cuts) and on every
stored data set of the captures at hand.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dicomtrace.dimse import plain
from dicomtrace.dimse.dataset import attributes, decode_prefix
from dicomtrace.model import builder
from dicomtrace.model.builder import STORE_KEYS

EXPLICIT_LE = "1.2.840.10008.1.2.1"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
HERE = Path(__file__).resolve().parents[1]
SHARED = HERE.parents[1] / "shared" / "captures"


def reference(prefix, ts, complete):
    dec = decode_prefix(prefix, ts, complete)
    if dec is None:
        return None
    return (dec.transfer_syntax, dec.inferred, attributes(dec, STORE_KEYS), dec.truncated,
            dec.problems)


def same_or_none(prefix, ts, complete):
    got = plain.store_summary(prefix, ts, complete, STORE_KEYS)
    if got is not None:
        assert got == reference(prefix, ts, complete)
    return got


def test_the_tags_and_vrs_are_the_dictionary_s():
    from pydicom.datadict import dictionary_VR, tag_for_keyword

    assert [kw for kw in STORE_KEYS] == [kw for kw, _ in plain.STORE_TAGS.values()]
    for tag, (kw, vr) in plain.STORE_TAGS.items():
        assert tag_for_keyword(kw) == tag and dictionary_VR(tag) == vr


def element(tag: int, vr: bytes, value: bytes, implicit: bool) -> bytes:
    g, e = tag >> 16, tag & 0xFFFF
    if implicit:
        return struct.pack("<HHI", g, e, len(value)) + value
    if vr in plain.LONG_VRS:
        return struct.pack("<HH2s2xI", g, e, vr, len(value)) + value
    return struct.pack("<HH2sH", g, e, vr, len(value)) + value


def undefined_sequence(tag: int, implicit: bool) -> bytes:
    item = element(0x00081150, b"UI", b"1.2.3\x00", implicit) + element(0x00081155, b"UI", b"1.2.4\x00", implicit)
    head = struct.pack("<HHI", tag >> 16, tag & 0xFFFF, 0xFFFFFFFF) if implicit else \
        struct.pack("<HH2s2xI", tag >> 16, tag & 0xFFFF, b"SQ", 0xFFFFFFFF)
    return (head + struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF) + item
            + struct.pack("<HHI", 0xFFFE, 0xE00D, 0) + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0))


TYPICAL = {
    "UI": [b"1.2.840.10008.5.1.4.1.1.2\x00", b"2.25.105733295408333209271287540198453465076", b"1.2.3",
           b"1.02.3\x00", b"1.2.3 ", b"1.2.3\\1.2.4", b"", b"1." * 32 + b"1\x00", b"1.2.3\x00\x00"],
    "PN": [b"BENCH^RUN01 ", b"Doe^John", b"Doe^John^^^", b" Doe", b"Doe=Yamada", b"Doe\\Roe", b"",
           b"M\xfcller^Hans", b"A" * 64, b"A" * 65 + b" ", b"Doe^John\x00"],
    "LO": [b"DTBENCH0001 ", b"ID 12", b" ID", b"a\\b", b"x" * 64, b"x" * 65 + b" ", b"", b"tab\there"],
    "SH": [b"ACC000001 ", b"x" * 16, b"x" * 17 + b" ", b"", b"S\xe9"],
    "DA": [b"20240101", b"19700101", b"2024011", b"20241301", b"20240101-20240102", b"", b"2024.01.01"],
    "CS": [b"CT", b"MR ", b" CT", b"ct", b"ISO_IR 100", b"ISO_IR 192", b"ISO_IR 6 ", b"ISO 2022 IR 6",
           b"\\ISO 2022 IR 87", b"ISO_IR 13", b"A" * 17 + b" ", b"", b"ISO_IR 999"],
    "IS": [b"1 ", b"12", b"0 ", b"007", b"+5", b" 5", b"123456789 ", b"2147483648", b"1.5", b"", b"1\\2"],
    "US": [b"\xe2\x04", b"\x00\x00", b"\x01", b"\x01\x00\x02\x00", b""],
}
GOOD = {  # values pydicom reads without a word, in several forms of padding
    "UI": [b"1.2.840.10008.5.1.4.1.1.2\x00", b"2.25.105733295408333209271287540198453465076", b"1.2.3\x00",
           b"1.2.0", b"0"],
    "PN": [b"BENCH^RUN01 ", b"Doe^John", b"Doe^John^^^", b"O'Neil^Mary-Ann ", b"A" * 64, b"^^^^"],
    "LO": [b"DTBENCH0001 ", b"ID 12", b"x" * 64, b"chest/abd (w contrast) ", b"a  b"],
    "SH": [b"ACC000001 ", b"x" * 16, b"A-1", b"1"],
    "DA": [b"20240101", b"19700131", b"20001231"],
    "CS": [b"CT", b"MR", b"ISO_IR 100", b"ISO_IR 192", b"ISO_IR 6", b"A_B ", b"A" * 16],
    "IS": [b"1 ", b"12", b"0 ", b"123456789 ", b"99"],
    "US": [b"\xe2\x04", b"\x00\x00", b"\xff\xff"],
}
PRIVATE_VALUES = [b"", b"x", b"X" * 70, b"1.5 ", b"1.02", b"\x00\x01\x02\x03", b"\xff" * 3, b"abc\\def",
                  b"20240101", b"12:00", b"ABC ", b"\xe9t\xe9", b"1\\2\\3", b"\x1b$B", b"A" * 1100, b"-1.5e3",
                  b"1.2.3\x00", b"1.2.3", b"007", b"Doe^John", b"1" * 17, b"\x01\x00", b"\x01\x00\x00\x00" * 2,
                  b" 1", b"1 \\ 2", b"a=b", b"\x00\x00", b"A\x00", b"\x7f\x01", b"\xc3\xa9", b"\xc3"]
WRONG_VR = {"UI": b"LO", "PN": b"LO", "LO": b"SH", "SH": b"LO", "DA": b"DT", "CS": b"SH", "IS": b"DS",
            "US": b"SS"}


@st.composite
def datasets(draw):
    implicit = draw(st.booleans())
    ts = draw(st.sampled_from([None, plain.IMPLICIT_LE] if implicit else [None, EXPLICIT_LE, JPEG_BASELINE]))
    parts = []
    for tag, (_kw, vr) in sorted(plain.STORE_TAGS.items()):
        if not draw(st.integers(0, 4)):
            continue  # absent
        pick = draw(st.integers(0, 39))
        if pick < 37:
            value = draw(st.sampled_from(GOOD[vr]))
        elif pick < 39:
            value = draw(st.sampled_from(TYPICAL[vr]))
        else:
            value = draw(st.binary(max_size=70))
        evr = vr.encode()
        if not implicit and not draw(st.integers(0, 40)):
            evr = WRONG_VR[vr]
        parts.append((tag, element(tag, evr, value, implicit)))
    if draw(st.integers(0, 5)) == 0:
        parts.append((0x00090010, element(0x00090010, b"LO", b"ACME 1.0", implicit)))
        if draw(st.booleans()):
            vr = draw(st.sampled_from(sorted(plain.VRS)))
            value = draw(st.sampled_from(PRIVATE_VALUES) | st.binary(max_size=40))
            parts.append((0x00091001, element(0x00091001, vr, value, implicit)))
    if draw(st.integers(0, 7)) == 0:
        parts.append((0x00081140, undefined_sequence(0x00081140, implicit)))
    if draw(st.integers(0, 3)) == 0:
        parts.append((0x00181020, element(0x00181020, b"LO", b"defined\\length ", implicit)))
    if draw(st.booleans()):
        parts.append((0x7FE00010, element(0x7FE00010, b"OW", b"\x00" * 64, implicit)))
    data = b"".join(p for _tag, p in sorted(parts, key=lambda p: p[0]))
    if draw(st.integers(0, 5)) == 0:
        data = data[:draw(st.integers(0, len(data)))]
    return data, ts, draw(st.booleans())


@settings(max_examples=1500, deadline=None)
@given(datasets())
def test_generated_data_sets_read_plainly_read_as_pydicom_reads_them(case):
    same_or_none(*case)


def good_dataset(implicit: bool, replace: dict | None = None, extra=()) -> bytes:
    parts = [(tag, element(tag, vr.encode(), b"ISO_IR 100" if tag == 0x00080005 else GOOD[vr][0], implicit))
             for tag, (_kw, vr) in plain.STORE_TAGS.items()]
    parts = [(tag, (replace or {}).get(tag, p)) for tag, p in parts] + list(extra)
    parts.append((0x7FE00010, element(0x7FE00010, b"OW", b"\x00" * 64, implicit)))
    return b"".join(p for _tag, p in sorted(parts, key=lambda p: p[0]))


def test_one_value_or_element_of_any_kind_in_a_plain_data_set():
    """Each value of TYPICAL (plain or not) and each kind of other element, alone in a data
    set whose other values are plain: in both encodings, every transfer syntax form."""
    private = [(0x00090010, b"LO", b"ACME 1.0"), (0x00091001, b"LO", b"x" * 70), (0x00091002, b"UI", b"1.02")]
    for implicit in (False, True):
        for ts in ([None, plain.IMPLICIT_LE] if implicit else [None, EXPLICIT_LE, JPEG_BASELINE]):
            for complete in (False, True):
                assert same_or_none(good_dataset(implicit), ts, complete) is not None
                for tag, (_kw, vr) in plain.STORE_TAGS.items():
                    for value in TYPICAL[vr] + GOOD[vr]:
                        same_or_none(good_dataset(implicit, {tag: element(tag, vr.encode(), value, implicit)}),
                                     ts, complete)
                    if not implicit:
                        same_or_none(good_dataset(implicit, {tag: element(tag, WRONG_VR[vr], GOOD[vr][0], implicit)}),
                                     ts, complete)
                for k in range(1, len(private) + 1):
                    extra = [(t, element(t, v, x, implicit)) for t, v, x in private[:k]]
                    same_or_none(good_dataset(implicit, extra=extra), ts, complete)
                    same_or_none(good_dataset(implicit, extra=extra[1:]), ts, complete)
                for vr in sorted(plain.VRS):
                    for value in PRIVATE_VALUES:
                        extra = [(0x00090010, element(0x00090010, b"LO", b"ACME 1.0", implicit)),
                                 (0x00091001, element(0x00091001, vr, value, implicit))]
                        same_or_none(good_dataset(implicit, extra=extra), ts, complete)
                for creator in (b"ACME 1.0", b"x" * 70, b"\x1b$B", b"", b"A\\B"):
                    extra = [(0x00090010, element(0x00090010, b"LO", creator, implicit)),
                             (0x00091001, element(0x00091001, b"OB", b"\x00\x01", implicit))]
                    same_or_none(good_dataset(implicit, extra=extra), ts, complete)
                seq = undefined_sequence(0x00081140, implicit)
                assert same_or_none(good_dataset(implicit, extra=[(0x00081140, seq)]), ts, complete) is None
                whole = good_dataset(implicit)
                for cut in range(0, len(whole), 7):
                    same_or_none(whole[:cut], ts, complete)


def test_plain_values_are_read_plainly_and_the_others_are_left_to_pydicom():
    head = b"".join(element(t, v, x, False) for t, v, x in [
        (0x00080005, b"CS", b"ISO_IR 100"), (0x00080016, b"UI", b"1.2.840.10008.5.1.4.1.1.2\x00"),
        (0x00080060, b"CS", b"CT"), (0x00100010, b"PN", b"BENCH^RUN01 "), (0x00200013, b"IS", b"1 "),
        (0x00280010, b"US", b"\xe2\x04")])
    pixels = element(0x7FE00010, b"OW", b"\x00" * 16, False)
    got = same_or_none(head + pixels, EXPLICIT_LE, False)
    assert got == (EXPLICIT_LE, False, {"SOPClassUID": "1.2.840.10008.5.1.4.1.1.2", "PatientName": "BENCH^RUN01",
                                        "Modality": "CT", "InstanceNumber": "1", "SpecificCharacterSet": "ISO_IR 100",
                                        "Rows": "1250"}, True, [])
    for odd in [element(0x00080018, b"UI", b"1.02.3\x00", False),  # pydicom warns
                element(0x00100010, b"PN", b"M\xfcller", False),  # not ASCII
                element(0x00091001, b"LO", b"x", False),  # (its creator is not there: plain)
                undefined_sequence(0x00081140, False)]:
        got = same_or_none(head + odd + pixels, EXPLICIT_LE, False)
        assert (got is None) == (odd[:4] != struct.pack("<HH", 0x0009, 0x1001))


def captures():
    found = sorted((HERE / "golden" / "captures").glob("*.pcap*"))
    for d in (SHARED, SHARED / "public"):
        if d.is_dir():
            found += sorted(p for p in d.iterdir() if p.suffix in (".pcap", ".pcapng"))
    return found


def test_every_stored_data_set_of_the_captures_reads_the_same(monkeypatch):
    from dicomtrace.capture import open_capture
    from dicomtrace.config import AnalysisConfig
    from dicomtrace.engine import Engine

    seen = {"plain": 0, "pydicom": 0}

    def checked(prefix, ts, complete, keywords):
        got = same_or_none(prefix, ts, complete)
        seen["plain" if got is not None else "pydicom"] += 1
        return got

    monkeypatch.setattr(builder, "store_summary", checked)
    paths = captures()
    if not paths:
        pytest.skip("no captures")
    for path in paths:
        reader = open_capture(str(path))
        try:
            Engine(AnalysisConfig(ports=[104, 11112, 4242])).run(reader)
        finally:
            reader.close()
    assert seen["plain"] > 0, seen
