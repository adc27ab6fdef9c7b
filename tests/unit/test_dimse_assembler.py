"""dicomtrace.dimse.assembler.MessageAssembler: PDV fragments -> DIMSE messages (PS3.7 6.3.1)."""

from __future__ import annotations

import lab
from unit import wire

from dicomtrace.dimse.assembler import MessageAssembler, MessageComplete, MessageStarted
from dicomtrace.ul.stream import PduStream

DATASET = bytes(range(256)) * 100  # 25600 bytes: several PDVs at 4096-byte PDUs


def assemble(data: bytes, pieces=1, asm=None):
    asm = asm or MessageAssembler()
    s = PduStream()
    out = []
    step = max(1, len(data) // pieces)
    for i in range(0, len(data), step):
        for ev in s.feed(data[i:i + step], i // step + 1, float(i)):
            out += asm.feed(ev)  # every UL event: the assembler picks what it needs
    return out, asm


def test_store_request_is_one_message_with_its_data_set():
    events, _ = assemble(wire.store_rq(5, DATASET, max_pdu=4096), pieces=13)
    assert [type(e) for e in events] == [MessageStarted, MessageComplete]
    msg = events[1].message
    assert msg.command.message_id == 5 and msg.has_data_set and msg.dataset_whole
    assert msg.dataset_bytes == len(DATASET) and bytes(msg.dataset_prefix) == DATASET
    assert msg.pdvs > 1 and msg.first_frame <= msg.command_frame <= msg.last_frame
    assert events[1].incomplete is None


def test_on_data_sees_every_data_set_byte():
    got = bytearray()
    asm = MessageAssembler(lambda msg, pieces, size: [got.extend(p) for p in pieces])
    assemble(wire.store_rq(1, DATASET, max_pdu=4096), pieces=7, asm=asm)
    assert bytes(got) == DATASET


def test_command_without_data_set_completes_at_once():
    events, _ = assemble(wire.echo_rq(3) + wire.echo_rsp(3))
    assert [type(e).__name__ for e in events] == ["MessageStarted", "MessageComplete"] * 2
    assert events[3].message.command.status == 0


def test_in_command_while_a_command_set_is_split():
    data = wire.echo_rq(1)
    asm = MessageAssembler()
    s = PduStream()
    for ev in s.feed(data[:15], 1, 0.0):
        asm.feed(ev)
    assert asm.in_command
    for ev in s.feed(data[15:], 2, 0.1):
        asm.feed(ev)
    assert not asm.in_command


def test_flush_ends_an_unfinished_data_set():
    data = wire.store_rq(1, DATASET, max_pdu=4096)
    events, asm = assemble(data[:len(data) // 2])
    assert [type(e) for e in events] == [MessageStarted]
    done = asm.flush("the capture ended")
    assert len(done) == 1 and done[0].incomplete == "data set unfinished: the capture ended"


def test_gap_over_a_pdu_header_keeps_the_data_set_open():
    """Issue #10: a capture gap over a PDU header does not end the message in flight; what
    comes after the resynchronisation is still its data set (counted and handed on)."""
    data = wire.store_rq(1, DATASET, max_pdu=4096)
    headers = [off for off, _type, _body in lab.split_pdus(data)]
    cut = headers[len(headers) // 3]  # a P-DATA-TF header in the first half of the data set
    got = []
    asm = MessageAssembler(lambda msg, pieces, size: got.append(None if pieces is None else b"".join(pieces)))
    s = PduStream()
    out = []
    for ev in s.feed(data[:cut], 1, 0.0) + s.gap(100, 2, 1.0) + s.feed(data[cut + 100:], 3, 2.0):
        out += asm.feed(ev)
    complete = [e for e in out if type(e) is MessageComplete]
    assert len(complete) == 1 and complete[0].incomplete == "part of the data set was never captured"
    msg = complete[0].message
    assert msg.dataset_complete and msg.dataset_lost > 0
    # everything is counted, the lost PDU and PDV headers not as data: what follows the
    # resynchronisation lands at its place
    assert msg.dataset_bytes == len(DATASET)
    at = sum(len(x) for x in got[:got.index(None)]) + 4090  # the lost PDU held one whole PDV
    assert got.count(None) == 1
    tail = b"".join(x for x in got[got.index(None) + 1:])
    assert tail == DATASET[at:] and len(tail) > len(DATASET) // 2


def test_gap_then_another_command_ends_the_open_data_set_quietly():
    data = wire.store_rq(1, DATASET, max_pdu=4096)
    asm = MessageAssembler()
    s = PduStream()
    out = []
    for ev in s.feed(data[:9000], 1, 0.0) + s.gap(len(data) - 9000, 2, 1.0) + s.feed(wire.echo_rq(2), 3, 2.0):
        out += asm.feed(ev)
    assert [type(e).__name__ for e in out] == ["MessageStarted", "MessageComplete", "MessageStarted",
                                              "MessageComplete"]
    assert out[1].incomplete == "part of the data set was never captured"
