"""What happened: associations, presentation contexts, operations (plain dataclasses).

This is the meeting point that findings, reports and exports read.  Times are
seconds since the epoch as recorded in the capture; frames count from 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dicomtrace.dimse.status import StatusInfo
from dicomtrace.pipeline import CaptureSummary
from dicomtrace.tcp import Connection

REQUESTOR, ACCEPTOR = "requestor", "acceptor"


@dataclass(slots=True)
class Endpoint:
    ip: str
    port: int

    def __str__(self) -> str:
        return f"[{self.ip}]:{self.port}" if ":" in self.ip else f"{self.ip}:{self.port}"


@dataclass(slots=True)
class PresentationContext:
    id: int
    abstract_syntax: str | None
    proposed_transfer_syntaxes: list[str] = field(default_factory=list)
    result: int | None = None  # PS3.8 table 9-18; None when no A-ASSOCIATE-AC was seen
    transfer_syntax: str | None = None  # accepted
    proposed: bool = True  # False: only seen in the AC (or inferred)


@dataclass(slots=True)
class Response:
    """One response message.  ``frame``/``time``: its first frame and first byte;
    ``last_frame``/``end_time``: the frame that completes it (where Wireshark shows the
    message) and its last byte."""

    frame: int
    time: float
    status: int
    info: StatusInfo
    remaining: int | None = None
    completed: int | None = None
    failed: int | None = None
    warning: int | None = None
    error_comment: str | None = None
    offending_elements: list[str] = field(default_factory=list)
    error_id: int | None = None
    identifier: dict[str, str | None] | None = None  # C-FIND match (pending response data set)
    sop_instance_uid: str | None = None
    last_frame: int = 0
    end_time: float = 0.0


@dataclass(slots=True)
class DataSetSummary:
    """The attributes read from the start of a data set."""

    transfer_syntax: str | None
    inferred: bool
    attributes: dict[str, str | None]
    truncated: bool
    problems: list[str] = field(default_factory=list)


@dataclass(slots=True, eq=False)
class Operation:
    """One DIMSE request and its responses (PS3.7 section 9 and 10).

    ``request_frame``/``request_time``: the request's first frame and first byte;
    ``request_last_frame``/``request_end_time``: the frame that completes it (command and
    data set: where Wireshark shows it) and its last byte.  Responses likewise."""

    service: str  # C-STORE, C-FIND, ...
    message_id: int
    context_id: int
    sender: str  # REQUESTOR or ACCEPTOR (C-STORE sub-operations of C-GET come from the acceptor)
    sop_class_uid: str | None
    sop_instance_uid: str | None
    request_frame: int
    request_time: float
    request_last_frame: int
    request_end_time: float
    priority: int | None = None
    move_destination: str | None = None
    move_originator_ae: str | None = None
    move_originator_id: int | None = None
    event_type_id: int | None = None
    action_type_id: int | None = None
    has_data_set: bool = False
    dataset_bytes: int | None = None
    dataset_complete: bool = True
    dataset_lost: int = 0
    dataset: DataSetSummary | None = None
    responses: list[Response] = field(default_factory=list)
    final: Response | None = None
    cancel_frame: int | None = None
    cancel_time: float | None = None
    response_count_limit_hit: bool = False
    matches: int = 0  # pending responses carrying an identifier (C-FIND)
    sub_associations: list[int] = field(default_factory=list)  # C-MOVE: association ids
    sub_operations: list["Operation"] = field(default_factory=list)  # C-GET: C-STOREs on the same association
    command_field: int | None = None  # (0000,0100) as sent; service is "" when PS3.7 does not define it

    @property
    def latency(self) -> float | None:
        """What the requestor waited: the request's last byte to the final response's last byte."""
        return None if self.final is None else self.final.end_time - self.request_end_time

    @property
    def response_delay(self) -> float | None:
        """The request's last byte to the first byte of the first response (the responder's
        think time, before any of its answer is on the wire)."""
        return None if not self.responses else self.responses[0].time - self.request_end_time

    @property
    def request_transfer(self) -> float:
        """The request's first byte to its last (command and data set on the wire)."""
        return self.request_end_time - self.request_time

    @property
    def response_transfer(self) -> float | None:
        """The final response's first byte to its last."""
        return None if self.final is None else self.final.end_time - self.final.time


@dataclass(slots=True)
class Reject:
    result: int
    source: int
    reason: int
    text: str
    frame: int
    time: float


@dataclass(slots=True)
class Abort:
    source: int
    reason: int
    text: str
    sent_by: str  # REQUESTOR or ACCEPTOR
    frame: int
    time: float


@dataclass(slots=True)
class ProtocolIssue:
    """A non-conformance found while decoding (becomes a finding)."""

    code: str
    message: str
    side: str  # who sent the offending bytes
    frame: int | None
    offset: int | None


@dataclass(slots=True)
class IdleGap:
    """A silence (no data either way) while an operation was in progress."""

    start: float
    end: float
    frame: int  # the frame that ended the silence
    waiting: str  # what was awaited, in words
    message_ids: list[int]


@dataclass(slots=True)
class PduRecord:
    """A PDU other than P-DATA-TF, or a DIMSE message, for ladder diagrams."""

    time: float
    frame: int
    sender: str
    what: str
    detail: str = ""


@dataclass(slots=True, eq=False)
class Association:
    conn: Connection
    requestor: Endpoint
    acceptor: Endpoint
    detected_by: str  # "port", "associate-request", "p-data"
    id: int = 0
    calling_ae: str | None = None
    called_ae: str | None = None
    calling_ae_raw: bytes | None = None
    called_ae_raw: bytes | None = None
    application_context: str | None = None
    protocol_version: int | None = None
    start_time: float = 0.0
    end_time: float = 0.0
    request_frame: int | None = None
    request_time: float | None = None
    accept_frame: int | None = None
    accept_time: float | None = None
    # released | aborted | rejected | reset (TCP RST) | closed (FIN, no A-RELEASE) | incomplete
    outcome: str = "incomplete"
    reject: Reject | None = None
    abort: Abort | None = None
    release_request_frame: int | None = None
    release_request_by: str | None = None
    release_response_frame: int | None = None
    release_time: float | None = None
    closed_by: str | None = None  # TCP: "fin", "reset", "end"
    close_frame: int | None = None
    max_pdu: dict[str, int | None] = field(default_factory=lambda: {REQUESTOR: None, ACCEPTOR: None})
    implementation: dict[str, dict] = field(default_factory=lambda: {REQUESTOR: {}, ACCEPTOR: {}})
    async_ops: dict[str, tuple[int, int] | None] = field(default_factory=lambda: {REQUESTOR: None, ACCEPTOR: None})
    roles: dict[str, list] = field(default_factory=lambda: {REQUESTOR: [], ACCEPTOR: []})
    extended_negotiation: dict[str, list] = field(default_factory=lambda: {REQUESTOR: [], ACCEPTOR: []})
    user_identity: dict[str, dict | None] = field(default_factory=lambda: {REQUESTOR: None, ACCEPTOR: None})
    presentation_contexts: list[PresentationContext] = field(default_factory=list)
    operations: list[Operation] = field(default_factory=list)
    issues: list[ProtocolIssue] = field(default_factory=list)
    ladder: list[PduRecord] = field(default_factory=list)
    orphan_responses: list[tuple[str, int | None, int, float]] = field(default_factory=list)  # (service, id, frame, time)
    idle_gaps: list["IdleGap"] = field(default_factory=list)
    move_parent: tuple[int, int] | None = None  # (association id, C-MOVE message id) that opened it
    midstream: bool = False  # the capture began after the association was negotiated
    pdus: dict[str, int] = field(default_factory=lambda: {REQUESTOR: 0, ACCEPTOR: 0})
    pdata_bytes: dict[str, int] = field(default_factory=lambda: {REQUESTOR: 0, ACCEPTOR: 0})
    skipped_bytes: dict[str, int] = field(default_factory=lambda: {REQUESTOR: 0, ACCEPTOR: 0})
    lost_bytes: dict[str, int] = field(default_factory=lambda: {REQUESTOR: 0, ACCEPTOR: 0})
    log_lines: list = field(default_factory=list)  # the peers' own log lines (--log), in time order
    sensor: str | None = None  # the capture point, when several files or sensors were read

    def context(self, pcid: int) -> PresentationContext | None:
        for pc in self.presentation_contexts:
            if pc.id == pcid:
                return pc
        return None

    @property
    def negotiated(self) -> bool:
        return self.accept_frame is not None


@dataclass
class Analysis:
    """Everything decoded from one capture."""

    associations: list[Association]
    connections: list[Connection]
    capture: CaptureSummary | None
    ports: frozenset[int] = frozenset()  # the configured DICOM ports
    logs: list = field(default_factory=list)  # correlate.logs.LogFile read with --log
    tls_connections: list = field(default_factory=list)  # tls.TlsSession of each TLS connection
    plain_on_tls_port: list = field(default_factory=list)  # tls.PlainOnTlsPort
    tls_ports: frozenset[int] = frozenset({2762})  # the configured DICOM-over-TLS ports
