"""Command sets read directly give the same Command as pydicom's reading (issue #12).

``decode_command`` reads the common command set itself (group 0000 elements with plain
values, PS3.7 E.1-1) and hands anything else to pydicom. Every command set of the golden,
shared and public captures, and made-up ones at the edges, must give the same
:class:`Command` both ways (or go to pydicom).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from pydicom.tag import Tag

from dicomtrace.dimse.commands import _decode_plain, decode_command, decode_command_pydicom
from unit import wire

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "golden"))
import make as golden  # noqa: E402


class Commands:
    """A tap: every command set the engine decodes."""

    def __init__(self):
        self.raw = []

    def message_started(self, assoc, side, msg, op):
        self.raw.append(bytes(msg.raw_command))


def command_sets() -> list[bytes]:
    from dicomtrace.capture import open_capture
    from dicomtrace.config import AnalysisConfig
    from dicomtrace.engine import Engine

    seen = Commands()
    for path in golden.captures().values():  # (sample, lab, shared and public ones)
        reader = open_capture(str(path))
        try:
            Engine(AnalysisConfig(ports=[104, 11112]), [seen]).run(reader)
        finally:
            reader.close()
    return seen.raw


def encode(**elements) -> bytes:
    return wire.dataset_bytes(elements, implicit=True)  # (command sets: PS3.7 6.3.1)


def element(tag: int, value: bytes) -> bytes:
    t = Tag(tag)
    return (t.group.to_bytes(2, "little") + t.element.to_bytes(2, "little")
            + len(value).to_bytes(4, "little") + value)


STORE_RQ = dict(CommandGroupLength=0, AffectedSOPClassUID="1.2.840.10008.5.1.4.1.1.2",
                CommandField=1, MessageID=7, Priority=0, CommandDataSetType=0,
                AffectedSOPInstanceUID="2.25.1234567890")


def test_every_captured_command_set_reads_the_same_both_ways():
    raws = command_sets()
    assert len(raws) > 100
    plain = 0
    for raw in raws:
        direct = _decode_plain(raw)
        if direct is not None:
            plain += 1
            assert direct == decode_command_pydicom(raw), raw.hex()
        assert decode_command(raw) == decode_command_pydicom(raw)
    assert plain > len(raws) * 0.9  # the common command sets are read directly


EDGES = {
    "store request": encode(**STORE_RQ),
    "requested, not affected": encode(CommandGroupLength=0, RequestedSOPClassUID="1.2.3",
                                      CommandField=0x0110, MessageID=1, CommandDataSetType=0x0101,
                                      RequestedSOPInstanceUID="1.2.3.4"),
    "affected and requested": encode(CommandGroupLength=0, AffectedSOPClassUID="1.2.3",
                                     RequestedSOPClassUID="1.2.9", CommandField=1, MessageID=1,
                                     CommandDataSetType=0, AffectedSOPInstanceUID="1.5",
                                     RequestedSOPInstanceUID="1.6"),
    "move with AE titles": encode(CommandGroupLength=0, AffectedSOPClassUID="1.2.3",
                                  CommandField=0x0021, MessageID=3, Priority=0,
                                  CommandDataSetType=0, MoveDestination=" STORESCP  "),
    "move response counts": encode(CommandGroupLength=0, AffectedSOPClassUID="1.2.3",
                                   CommandField=0x8021, MessageIDBeingRespondedTo=3,
                                   CommandDataSetType=0x0101, Status=0xFF00,
                                   NumberOfRemainingSuboperations=4,
                                   NumberOfCompletedSuboperations=1,
                                   NumberOfFailedSuboperations=0,
                                   NumberOfWarningSuboperations=0),
    "sub-operation of a move": encode(**STORE_RQ, MoveOriginatorApplicationEntityTitle="QR",
                                      MoveOriginatorMessageID=3),
    "error response": encode(CommandGroupLength=0, AffectedSOPClassUID="1.2.3", CommandField=0x8001,
                             MessageIDBeingRespondedTo=7, CommandDataSetType=0x0101,
                             Status=0xA900, ErrorComment="no", OffendingElement=[0x00100010]),
    "UID padded with a null": (encode(CommandGroupLength=0, CommandField=0x0030, MessageID=1,
                                      CommandDataSetType=0x0101)
                               + element(0x00000002, b"1.2.840.10008.1.1\x00")),
    "UID padded with a space": (encode(CommandGroupLength=0, CommandField=0x0030, MessageID=1,
                                       CommandDataSetType=0x0101)
                                + element(0x00000002, b"1.2.840.10008.1.1 ")),
    "empty UID": (encode(CommandGroupLength=0, CommandField=0x0030, MessageID=1,
                         CommandDataSetType=0x0101) + element(0x00000002, b"")),
    "two UIDs in one": (encode(CommandGroupLength=0, CommandField=0x0030, MessageID=1,
                               CommandDataSetType=0x0101) + element(0x00000002, b"1.2\\1.3\x00")),
    "AE padded with nulls": (encode(CommandGroupLength=0, CommandField=0x0021, MessageID=1,
                                    CommandDataSetType=0) + element(0x00000600, b"DEST\x00\x00")),
    "AE with a space inside": (encode(CommandGroupLength=0, CommandField=0x0021, MessageID=1,
                                      CommandDataSetType=0) + element(0x00000600, b"MY DEST ")),
    "two message IDs": element(0x00000100, b"\x01\x00") + element(0x00000110, b"\x01\x00\x02\x00"),
    "empty message ID": element(0x00000100, b"\x01\x00") + element(0x00000110, b""),
    "no command field": encode(CommandGroupLength=0, MessageID=1, CommandDataSetType=0x0101),
    "a retired element": encode(**STORE_RQ) + element(0x00000001, b"\x00\x00\x00\x00"),
    "an element of another group": encode(**STORE_RQ) + element(0x00080018, b"1.2\x00"),
    "the same element twice": encode(**STORE_RQ) + element(0x00000110, b"\x08\x00"),
    "cut in a header": encode(**STORE_RQ) + b"\x00\x00\x00\x09",
    "cut in a value": encode(**STORE_RQ) + element(0x00000900, b"\x00\x00")[:-1],
    "garbage": b"\x01\x02\x03",
    "nothing": b"",
}


@pytest.mark.parametrize("name", sorted(EDGES))
def test_edge_cases_read_the_same_or_go_to_pydicom(name):
    raw = EDGES[name]
    direct = _decode_plain(raw)
    reference = decode_command_pydicom(raw)
    if direct is not None:
        assert direct == reference
    assert decode_command(raw) == reference


def test_the_plain_cases_are_read_directly():
    for name in ("store request", "requested, not affected", "affected and requested",
                 "move with AE titles", "move response counts", "sub-operation of a move",
                 "UID padded with a null"):
        assert _decode_plain(EDGES[name]) is not None, name
    cmd = _decode_plain(EDGES["affected and requested"])
    assert (cmd.sop_class_uid, cmd.sop_instance_uid) == ("1.2.3", "1.5")
    cmd = _decode_plain(EDGES["move with AE titles"])
    assert cmd.move_destination == "STORESCP"
