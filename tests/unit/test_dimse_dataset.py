"""Data set attributes as text: remembered values give what pydicom's conversion gives."""

from __future__ import annotations

import pytest

from dicomtrace.dimse import dataset as dsmod
from dicomtrace.model.builder import STORE_KEYS
from unit import wire

EXPLICIT_LE = "1.2.840.10008.1.2.1"


def encoded(charset: str | None = None, **values) -> bytes:
    return wire.dataset_bytes(values, charset=charset)


OBJECTS = [
    encoded(SOPClassUID="1.2.840.10008.5.1.4.1.1.2", SOPInstanceUID="1.2.3.1", PatientName="DOE^JANE",
            PatientID="P1", Modality="CT", InstanceNumber="1", Rows=512, Columns=512),
    encoded(SOPClassUID="1.2.840.10008.5.1.4.1.1.2", SOPInstanceUID="1.2.3.2", PatientName="DOE^JANE",
            PatientID="P1", Modality="CT", InstanceNumber="2", Rows=512, Columns=512),
    # a UID pydicom warns about (a letter in it), twice: the warning belongs to both
    encoded(SOPClassUID="1.2.840.10008.5.1.4.1.1.2", SOPInstanceUID="1.2.3.x", PatientID="P1"),
    encoded(SOPClassUID="1.2.840.10008.5.1.4.1.1.2", SOPInstanceUID="1.2.3.x", PatientID="P1"),
    # the same bytes of a name in another character set
    encoded("ISO_IR 100", PatientName=b"M\xfcller^Hans".decode("latin-1"), PatientID="P1"),
    encoded("ISO_IR 192", PatientName="Müller^Hans", PatientID="P1"),
    encoded("ISO_IR 100", PatientName=b"M\xfcller^Hans".decode("latin-1"), PatientID="P1"),
]


def read(raw: bytes, keywords):
    dec = dsmod.decode_prefix(raw, EXPLICIT_LE, True)
    return dsmod.attributes(dec, keywords), list(dec.problems)


def reference(raw: bytes, keywords):
    """The attributes converted by pydicom one by one, with nothing remembered."""
    dec = dsmod.decode_prefix(raw, EXPLICIT_LE, True)
    with dsmod.wire_warnings(dec.problems):
        found = {k: dsmod.element_text(dec.dataset, k) for k in keywords}
    return {k: v for k, v in found.items() if v is not None}, list(dec.problems)


@pytest.mark.parametrize("order", ["forward", "backward"])
def test_remembered_texts_and_warnings_equal_pydicoms(order):
    dsmod._TEXTS.clear()
    objects = OBJECTS if order == "forward" else OBJECTS[::-1]
    for raw in objects * 2:
        assert read(raw, STORE_KEYS) == reference(raw, STORE_KEYS)
    assert dsmod._TEXTS  # (and the second round came from it)


def test_a_warned_value_is_a_problem_of_every_data_set_holding_it():
    dsmod._TEXTS.clear()
    first, second = (read(OBJECTS[i], STORE_KEYS)[1] for i in (2, 3))
    assert first and first == second
