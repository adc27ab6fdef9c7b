"""dicomtrace.dimse.assembler.MessageAssembler: PDV fragments -> DIMSE messages (PS3.7 6.3.1)."""

from __future__ import annotations

import wire

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


def test_sync_lost_ends_the_message_in_flight():
    data = wire.store_rq(1, DATASET, max_pdu=4096)
    asm = MessageAssembler()
    s = PduStream()
    out = []
    for ev in s.feed(data[:9000], 1, 0.0) + s.gap(4100, 2, 1.0) + s.feed(data[13100:], 3, 2.0):
        out += asm.feed(ev)
    complete = [e for e in out if type(e) is MessageComplete]
    assert complete and complete[0].incomplete is not None
