"""DIMSE messages from PDV fragments (PS3.7 section 6.3.1, PS3.8 annex E).

:class:`MessageAssembler` handles one direction of one association.  Command
fragments are collected (they are small); data set fragments are counted and
only their first :data:`PREFIX_LIMIT` bytes kept, enough to read identifiers
and the patient/study/series of a stored object.  Whoever wants the whole data
set (export) passes ``on_data`` and receives every fragment as it arrives.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from dicomtrace.dimse.commands import Command, decode_command
from dicomtrace.ul.pdu import Violation
from dicomtrace.ul.stream import PdvChunk, PdvRun, Resync, SyncLost, UlEvent

PREFIX_LIMIT = 256 << 10
MAX_COMMAND = 1 << 20


@dataclass(slots=True, eq=False)
class DimseMessage:
    """One DIMSE message: its command and a summary of its data set."""

    context_id: int
    command: Command
    raw_command: bytes
    first_frame: int
    start_time: float
    command_frame: int  # frame that completed the command set
    command_time: float
    last_frame: int = 0
    end_time: float = 0.0
    has_data_set: bool = False
    dataset_bytes: int = 0
    dataset_lost: int = 0  # bytes of the data set never captured
    dataset_complete: bool = False  # the last data set fragment was seen
    dataset_prefix: bytearray = field(default_factory=bytearray)
    dataset_first_frame: int | None = None
    pdvs: int = 0
    fragment: int = 0  # the longest data set PDV value so far (the sender's fragment size)
    dataset_context_ids: set[int] = field(default_factory=set)

    @property
    def dataset_whole(self) -> bool:
        return self.has_data_set and self.dataset_complete and not self.dataset_lost


@dataclass(slots=True, frozen=True)
class MessageStarted:
    """A command set has been decoded; its data set (if any) follows."""

    message: DimseMessage


@dataclass(slots=True, frozen=True)
class MessageComplete:
    """The message is whole (or as whole as it will get: ``incomplete`` says why not)."""

    message: DimseMessage
    incomplete: str | None = None


DimseEvent = MessageStarted | MessageComplete | Violation


class MessageAssembler:
    """Reassembles the DIMSE messages one side of an association sends."""

    def __init__(self, on_data: Callable[[DimseMessage, object, int], None] | None = None):
        self.on_data = on_data  # (message, list of pieces or None if lost, size) per data set fragment
        self._cmd = bytearray()
        self._cmd_ctx: int | None = None
        self._cmd_first: tuple[int, float] | None = None
        self._cmd_lost = False
        self.current: DimseMessage | None = None  # message whose data set is arriving
        self._adrift = False  # the UL lost its place during the current data set
        self._drift = 0  # bytes of the stream not parsed since (gap and scan)
        # data set fragments whose command was never seen are expected until the next command
        # after a capture starts mid-stream or loses its place; they are skipped quietly
        self.orphans_expected = False

    @property
    def in_command(self) -> bool:
        """Fragments of a command set have arrived, its last one not yet."""
        return self._cmd_first is not None

    def feed(self, ev: UlEvent) -> list[DimseEvent]:
        """Any Upper Layer event; only PDV fragments and losses of place matter here."""
        out: list[DimseEvent] = []
        t = type(ev)
        if t is SyncLost:
            self._lost(ev, out)
            return out
        if t is Resync:
            if self.current is not None and self._adrift:
                self._drift += ev.skipped
            return out
        if t is not PdvChunk:
            return out
        pdv = ev.pdv
        if pdv.control & 1:
            self._command_chunk(ev, out)
        else:
            self._data_chunk(ev, out)
        return out

    def takes_run(self) -> bool:
        """Can a :class:`~dicomtrace.ul.stream.PdvRun` go to :meth:`run`?  Only in the
        middle of a data set that is in step; otherwise its PDVs go to :meth:`feed`."""
        return self.current is not None and not self._adrift

    def run(self, ev: PdvRun) -> None:
        """Data set fragments, none the last (what :meth:`feed` does for each PDV of the
        run, at once: it gives no events)."""
        msg = self.current
        _fragments(msg, ev.count, ev.max_value, ev.context_id, ev.first_frame)
        msg.dataset_bytes += ev.size
        if len(msg.dataset_prefix) < PREFIX_LIMIT:
            msg.dataset_prefix += ev.prefix(PREFIX_LIMIT - len(msg.dataset_prefix))
        if self.on_data is not None:
            self.on_data(msg, ev.values, ev.size)  # views made only when asked for
        msg.last_frame, msg.end_time = ev.frame, ev.time

    def _data(self, msg: DimseMessage, pieces, ev) -> None:
        """Data set bytes of ``msg`` (pieces None: never captured) up to ``ev``'s frame."""
        if pieces is None:
            msg.dataset_lost += ev.size
        elif len(msg.dataset_prefix) < PREFIX_LIMIT:
            prefix = msg.dataset_prefix
            for piece in pieces:
                prefix += piece[:PREFIX_LIMIT - len(prefix)]
                if len(prefix) >= PREFIX_LIMIT:
                    break
        if self.on_data is not None:
            self.on_data(msg, pieces, ev.size)
        msg.last_frame, msg.end_time = ev.frame, ev.time

    def flush(self, why: str) -> list[DimseEvent]:
        """The association or connection ended; finish what is open."""
        out: list[DimseEvent] = []
        if self.current is not None:
            msg, self.current = self.current, None
            if self._adrift:
                self._rejoin(msg)
            out.append(MessageComplete(msg, f"data set unfinished: {why}"))
        self._cmd = bytearray()
        self._cmd_first = None
        return out

    # -- internals --------------------------------------------------------
    def _lost(self, ev: SyncLost, out) -> None:
        """The Upper Layer lost its place.  A command set in progress is lost; a data set in
        progress stays open across the resynchronisation (what was not parsed counts as
        missing bytes), so that everything captured of it is counted and exported."""
        self.orphans_expected = True
        if self._cmd_first is not None:
            self._cmd_lost = True
        if self.current is not None:
            self._adrift = True
            self._drift += ev.lost
            self.current.last_frame, self.current.end_time = ev.frame, ev.time

    def _rejoin(self, msg: DimseMessage) -> None:
        """The stream is parsed again: count what was not as missing data set bytes.  That
        stretch ran from the end of a PDV to a P-DATA-TF header, so it held whole PDUs; with
        the PDV value length the sender used so far (senders fill PDUs to one size) it held
        ``round(drift / (value + 12))`` PDU and PDV headers (6 + 6 bytes each), which are not
        data.  Counted so, what follows lands at its place in the data set (export)."""
        drift, self._drift, self._adrift = self._drift, 0, False
        if msg.fragment:
            drift -= 12 * round(drift / (msg.fragment + 12))
        if drift <= 0:
            return
        msg.dataset_bytes += drift
        msg.dataset_lost += drift
        if self.on_data is not None:
            self.on_data(msg, None, drift)

    def _end_adrift(self, out) -> None:
        msg, self.current = self.current, None
        self._rejoin(msg)
        out.append(MessageComplete(msg, "part of the data set was never captured"))

    def _command_chunk(self, ev: PdvChunk, out) -> None:
        pdv = ev.pdv
        self.orphans_expected = False
        if self.current is not None and self._adrift:
            self._end_adrift(out)  # its last fragments were in what was lost
        if self.current is not None:
            msg, self.current = self.current, None
            out.append(Violation("malformed-pdu", "a new command started before the data set of "
                                 f"message {msg.command.message_id} was complete", pdv.offset, ev.frame))
            out.append(MessageComplete(msg, "interrupted by the next command"))
        if ev.first:
            if self._cmd_first is None:
                self._cmd_first = (pdv.frame, pdv.time)
                self._cmd_ctx = pdv.context_id
            elif pdv.context_id != self._cmd_ctx:
                out.append(Violation("malformed-pdu", f"command fragment on presentation context "
                                     f"{pdv.context_id} continues one begun on {self._cmd_ctx}",
                                     pdv.offset, ev.frame))
        if ev.pieces is None:
            self._cmd_lost = True
        elif len(self._cmd) + ev.size <= MAX_COMMAND:
            for piece in ev.pieces:
                self._cmd += piece
        if ev.last and pdv.is_last:
            raw = bytes(self._cmd)
            first_frame, start = self._cmd_first or (pdv.frame, pdv.time)
            ctx = self._cmd_ctx if self._cmd_ctx is not None else pdv.context_id
            lost = self._cmd_lost
            self._cmd = bytearray()
            self._cmd_first = None
            self._cmd_ctx = None
            self._cmd_lost = False
            if lost:
                out.append(Violation("capture-gap", "a command set was partly never captured",
                                     pdv.offset, ev.frame))
                return
            cmd = decode_command(raw)
            for p in cmd.problems:
                out.append(Violation("malformed-pdu", p, pdv.offset, ev.frame))
            msg = DimseMessage(ctx, cmd, raw, first_frame, start, ev.frame, ev.time,
                               last_frame=ev.frame, end_time=ev.time)
            msg.has_data_set = cmd.has_data_set
            out.append(MessageStarted(msg))
            if msg.has_data_set:
                self.current = msg
            else:
                msg.dataset_complete = True
                out.append(MessageComplete(msg))

    def _data_chunk(self, ev: PdvChunk, out) -> None:
        pdv = ev.pdv
        msg = self.current
        if msg is not None and self._adrift:
            if pdv.context_id != msg.context_id:  # not the rest of it: another message's
                self._end_adrift(out)
                msg = None
            else:
                self._rejoin(msg)
        if msg is None:
            if ev.first and not self.orphans_expected:
                out.append(Violation("unexpected-pdu", "data set fragment with no command set "
                                     f"before it (presentation context {pdv.context_id})",
                                     pdv.offset, ev.frame))
            return
        if ev.first:
            _fragments(msg, 1, pdv.length, pdv.context_id, pdv.frame)
        msg.dataset_bytes += ev.size
        self._data(msg, ev.pieces, ev)
        if ev.last and pdv.is_last:
            msg.dataset_complete = True
            self.current = None
            out.append(MessageComplete(msg, "part of the data set was never captured"
                                       if msg.dataset_lost else None))


def _fragments(msg: "DimseMessage", count: int, longest: int, context_id: int, frame: int) -> None:
    """``count`` more data set PDVs of ``msg`` began (PS3.8 annex E.2), the longest value
    ``longest`` bytes, the first of them completed at ``frame``."""
    msg.pdvs += count
    if longest > msg.fragment:
        msg.fragment = longest
    msg.dataset_context_ids.add(context_id)
    if msg.dataset_first_frame is None:
        msg.dataset_first_frame = frame
