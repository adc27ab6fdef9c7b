"""Upper Layer and DIMSE bytes for the unit tests, encoded by pynetdicom (the field's
encoder, so the parsers are tested against bytes another implementation makes), and
hand-made TCP stream events."""

from __future__ import annotations

import io

from dicomtrace.tcp import Connection, StreamData, StreamGap

APP_CONTEXT = "1.2.840.10008.3.1.1.1"
VERIFICATION = "1.2.840.10008.1.1"
CT = "1.2.840.10008.5.1.4.1.1.2"
GET = "1.2.840.10008.5.1.4.1.2.2.3"
IMPLICIT = "1.2.840.10008.1.2"
MAX_PDU = 16384


def presentation_context(cid: int, abstract: str, syntaxes: list[str], result: int | None = None):
    from pynetdicom.presentation import PresentationContext
    cx = PresentationContext()
    cx.context_id = cid
    cx.abstract_syntax = abstract
    cx.transfer_syntax = syntaxes
    if result is not None:
        cx.result = result
    return cx


def associate(accept: bool | None = None, contexts=((1, VERIFICATION),), calling="SCU", called="SCP") -> bytes:
    """A-ASSOCIATE-RQ (accept None) or -AC (every context accepted with implicit VR)."""
    from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RQ
    from pynetdicom.pdu_primitives import A_ASSOCIATE, MaximumLengthNotification, \
        ImplementationClassUIDNotification
    p = A_ASSOCIATE()
    p.application_context_name = APP_CONTEXT
    p.calling_ae_title, p.called_ae_title = calling, called
    ml = MaximumLengthNotification()
    ml.maximum_length_received = MAX_PDU
    ic = ImplementationClassUIDNotification()
    ic.implementation_class_uid = "1.2.826.0.1.3680043.9.7433.1"
    p.user_information = [ml, ic]
    if accept is None:
        p.presentation_context_definition_list = [presentation_context(c, a, [IMPLICIT]) for c, a in contexts]
        pdu = A_ASSOCIATE_RQ()
    else:
        p.result = 0
        p.presentation_context_definition_results_list = [presentation_context(c, a, [IMPLICIT], 0) for c, a in contexts]
        pdu = A_ASSOCIATE_AC()
    pdu.from_primitive(p)
    return pdu.encode()


def reject() -> bytes:
    return bytes([3, 0, 0, 0, 0, 4, 0, 1, 1, 7])  # rejected-permanent, service user, called AE


def release_rq() -> bytes:
    from pynetdicom.pdu import A_RELEASE_RQ
    return A_RELEASE_RQ().encode()


def release_rp() -> bytes:
    from pynetdicom.pdu import A_RELEASE_RP
    return A_RELEASE_RP().encode()


def abort() -> bytes:
    from pynetdicom.pdu import A_ABORT_RQ
    pdu = A_ABORT_RQ()
    pdu.source, pdu.reason_diagnostic = 0, 0  # service user, no reason given
    return pdu.encode()


def pdata_pdus(msg, context_id: int, max_pdu: int) -> list[bytes]:
    """A DIMSE message as pynetdicom's P-DATA-TF PDUs (command first, then the data set)."""
    from pynetdicom.pdu import P_DATA_TF
    out = []
    for prim in msg.encode_msg(context_id, max_pdu):
        pdu = P_DATA_TF()
        pdu.from_primitive(prim)
        out.append(pdu.encode())
    return out


def _pdata(msg, context_id: int, max_pdu: int) -> bytes:
    return b"".join(pdata_pdus(msg, context_id, max_pdu))


def dimse(message: str, context_id: int = 1, max_pdu: int = MAX_PDU, **elements) -> bytes:
    """A DIMSE message (pynetdicom's class name, e.g. "C_STORE_RQ") with these elements
    (DataSet / Identifier as bytes), as P-DATA-TF PDUs."""
    from pynetdicom import dimse_messages, dimse_primitives
    prim = getattr(dimse_primitives, message.rsplit("_", 1)[0])()
    for k, v in elements.items():
        setattr(prim, k, io.BytesIO(v) if isinstance(v, bytes) else v)
    msg = getattr(dimse_messages, message)()
    msg.primitive_to_message(prim)
    return _pdata(msg, context_id, max_pdu)


def echo_rq(mid: int = 1, context_id: int = 1) -> bytes:
    return dimse("C_ECHO_RQ", context_id, MessageID=mid, AffectedSOPClassUID=VERIFICATION)


def echo_rsp(mid: int = 1, status: int = 0, context_id: int = 1) -> bytes:
    return dimse("C_ECHO_RSP", context_id, MessageIDBeingRespondedTo=mid, AffectedSOPClassUID=VERIFICATION,
                 Status=status)


def store_rq(mid: int, dataset: bytes, context_id: int = 1, max_pdu: int = MAX_PDU,
             uid: str = "1.2.3.4") -> bytes:
    return dimse("C_STORE_RQ", context_id, max_pdu, MessageID=mid, AffectedSOPClassUID=CT,
                 AffectedSOPInstanceUID=uid, Priority=2, DataSet=dataset)


def store_rsp(mid: int, status: int = 0, context_id: int = 1) -> bytes:
    return dimse("C_STORE_RSP", context_id, MessageIDBeingRespondedTo=mid, AffectedSOPClassUID=CT,
                 AffectedSOPInstanceUID="1.2.3.4", Status=status)


def connection(cid: int = 1, server_port: int = 104, from_start: bool = True) -> Connection:
    """A TCP connection 10.0.0.1:50000 -> 10.0.0.2:server_port (its start captured or not)."""
    c = Connection(cid, 0x0A000001, 50000, 0x0A000002, server_port, "syn", 0.0, 1)
    if from_start:
        c.half[0].isn = c.half[1].isn = 1000
    return c


class Stream:
    """StreamData events of one connection, one direction's offset counted per direction."""

    def __init__(self, conn: Connection):
        self.conn = conn
        self.offsets = [0, 0]
        self.frame = 0

    def data(self, direction: int, data: bytes, time: float | None = None) -> StreamData:
        self.frame += 1
        ev = StreamData(self.conn, direction, self.offsets[direction], data, self.frame,
                        float(self.frame) if time is None else time)
        self.offsets[direction] += len(data)
        return ev

    def gap(self, direction: int, size: int) -> StreamGap:
        self.frame += 1
        ev = StreamGap(self.conn, direction, self.offsets[direction], size, self.frame, float(self.frame))
        self.offsets[direction] += size
        return ev


def dataset_bytes(values: dict, implicit: bool = False, charset: str | None = None) -> bytes:
    """A data set of ``keyword: value`` encoded by pydicom, little endian (implicit or explicit
    VR), its Specific Character Set first when given; values pydicom warns about are meant."""
    import warnings

    from pydicom.dataset import Dataset
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    ds = Dataset()
    if charset:
        ds.SpecificCharacterSet = charset
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for keyword, value in values.items():
            setattr(ds, keyword, value)
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, implicit
    write_dataset(fp, ds)
    return fp.getvalue()
