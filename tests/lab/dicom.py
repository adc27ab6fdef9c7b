"""DICOM files the peers send, and one PDV walker for streams (PS3.8 9.3.5)."""

from __future__ import annotations

import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from lab.base import LabError

# --------------------------------------------------------------------------
# DICOM files
# --------------------------------------------------------------------------

SOP_CLASSES = {
    "CT": ("1.2.840.10008.5.1.4.1.1.2", "CT"),
    "MR": ("1.2.840.10008.5.1.4.1.1.4", "MR"),
    "SC": ("1.2.840.10008.5.1.4.1.1.7", "OT"),
}
EXPLICIT_VR_LE = "1.2.840.10008.1.2.1"
IMPLICIT_VR_LE = "1.2.840.10008.1.2"
UID_ROOT = "1.2.826.0.1.3680043.8.498."  # pydicom's root, used by generate_uid


@dataclass
class DicomSpec:
    """What file to make.

    size: approximate total file size in bytes (pixel data fills it: 16-bit
    random pixels, so it does not compress). patient/study/series are labels:
    files with the same label share that UID (default: each file its own).
    """
    sop: str = "CT"               # CT | MR | SC
    size: int = 16 * 1024
    explicit_vr: bool = True
    name: str | None = None
    patient: str | None = None
    study: str | None = None
    series: str | None = None
    seed: int | None = None


@dataclass
class DicomFileInfo:
    path: Path
    name: str
    sop: str
    modality: str
    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    patient_id: str
    patient_name: str
    transfer_syntax_uid: str
    file_size: int
    dataset_offset: int           # where the data set starts (after preamble, DICM, meta group)
    rows: int
    columns: int

    @property
    def dataset_size(self) -> int:
        return self.file_size - self.dataset_offset

    def dataset_bytes(self) -> bytes:
        return self.path.read_bytes()[self.dataset_offset:]

    def as_dict(self) -> dict:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["path"] = str(self.path)
        d["dataset_size"] = self.dataset_size
        return d


def _uid(*parts) -> str:
    from pydicom.uid import generate_uid
    return str(generate_uid(prefix=UID_ROOT, entropy_srcs=[str(p) for p in parts]))


def dataset_offset_of(path: str | os.PathLike) -> int:
    """Offset of the data set in a Part 10 file (128 preamble + 'DICM' + meta group)."""
    with open(path, "rb") as f:
        head = f.read(144)
    if len(head) < 144 or head[128:132] != b"DICM":
        raise LabError(f"{path}: not a Part 10 file")
    tag, vr, vlen, value = head[132:136], head[136:138], head[138:140], head[140:144]
    if tag != b"\x02\x00\x00\x00" or vr != b"UL" or struct.unpack("<H", vlen)[0] != 4:
        raise LabError(f"{path}: no (0002,0000) group length first")
    return 144 + struct.unpack("<I", value)[0]


def make_dicom_files(directory: str | os.PathLike, specs: Iterable[DicomSpec | dict]) -> list[DicomFileInfo]:
    """Write one Part 10 file per spec into directory; return what was written.

    UIDs are deterministic (derived from the spec's name/labels) but unique per
    file unless labels are shared.
    """
    import numpy as np
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import UID

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    out: list[DicomFileInfo] = []
    for index, spec in enumerate(specs):
        if isinstance(spec, dict):
            spec = DicomSpec(**spec)
        sop = spec.sop.upper()
        if sop not in SOP_CLASSES:
            raise ValueError(f"unknown SOP kind {spec.sop!r}; use one of {sorted(SOP_CLASSES)}")
        sop_class, modality = SOP_CLASSES[sop]
        name = spec.name or f"{index + 1:03d}_{sop.lower()}_{'ex' if spec.explicit_vr else 'im'}_{spec.size}"
        patient = spec.patient or name
        study = spec.study or name
        series = spec.series or name
        seed = spec.seed if spec.seed is not None else index + 1

        # pixel geometry: 16-bit, columns fixed, rows to reach the size (~1.5 KB of header)
        pixel_budget = max(spec.size - 1500, 64)
        columns = 256 if pixel_budget >= 256 * 2 * 8 else 16
        rows = max(1, math.ceil(pixel_budget / (2 * columns)))
        rng = np.random.default_rng(seed)
        pixels = rng.integers(0, 4096, size=rows * columns, dtype=np.uint16)

        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = UID(sop_class)
        meta.MediaStorageSOPInstanceUID = UID(_uid("instance", name, seed))
        meta.TransferSyntaxUID = UID(EXPLICIT_VR_LE if spec.explicit_vr else IMPLICIT_VR_LE)
        meta.ImplementationClassUID = UID(UID_ROOT + "1")
        meta.ImplementationVersionName = "DTLAB_1"

        ds = Dataset()
        ds.file_meta = meta
        ds.preamble = b"\0" * 128
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"] if sop != "SC" else ["DERIVED", "SECONDARY"]
        ds.SOPClassUID = meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyDate = "20240102"
        ds.StudyTime = "101112"
        ds.AccessionNumber = f"ACC{index + 1:04d}"
        ds.Modality = modality
        ds.Manufacturer = "dicomtrace lab"
        ds.ReferringPhysicianName = "Ref^Doctor"
        ds.StudyDescription = f"Lab study {study}"
        ds.SeriesDescription = f"Lab series {series}"
        ds.PatientName = f"Lab^{patient}"
        ds.PatientID = f"PID-{patient}"[:64]
        ds.PatientBirthDate = "19700101"
        ds.PatientSex = "O"
        ds.StudyInstanceUID = _uid("study", study)
        ds.SeriesInstanceUID = _uid("series", series)
        ds.StudyID = f"S{index + 1}"
        ds.SeriesNumber = 1
        ds.InstanceNumber = index + 1
        if sop == "SC":
            ds.ConversionType = "WSD"
        else:
            ds.ImagePositionPatient = [0, 0, index]
            ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
            ds.PixelSpacing = [0.5, 0.5]
            ds.SliceThickness = 1
            ds.FrameOfReferenceUID = _uid("for", study)
        if sop == "CT":
            ds.KVP = 120
            ds.RescaleIntercept = -1024
            ds.RescaleSlope = 1
        if sop == "MR":
            ds.ScanningSequence = "SE"
            ds.SequenceVariant = "NONE"
            ds.ScanOptions = ""
            ds.MRAcquisitionType = "2D"
            ds.EchoTime = 10
            ds.RepetitionTime = 500
            ds.MagneticFieldStrength = 1.5
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = rows
        ds.Columns = columns
        ds.BitsAllocated = 16
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
        ds.PixelData = pixels.tobytes()

        path = directory / f"{name}.dcm"
        ds.save_as(path, enforce_file_format=True)
        out.append(DicomFileInfo(
            path=path, name=name, sop=sop, modality=modality, sop_class_uid=sop_class,
            sop_instance_uid=str(ds.SOPInstanceUID), study_instance_uid=str(ds.StudyInstanceUID),
            series_instance_uid=str(ds.SeriesInstanceUID), patient_id=str(ds.PatientID),
            patient_name=str(ds.PatientName), transfer_syntax_uid=str(meta.TransferSyntaxUID),
            file_size=path.stat().st_size, dataset_offset=dataset_offset_of(path),
            rows=rows, columns=columns))
    return out



# --------------------------------------------------------------------------
# DICOM Upper Layer, just enough to check streams (independent of dicomtrace)
# --------------------------------------------------------------------------

PDU_NAMES = {1: "A-ASSOCIATE-RQ", 2: "A-ASSOCIATE-AC", 3: "A-ASSOCIATE-RJ", 4: "P-DATA-TF",
             5: "A-RELEASE-RQ", 6: "A-RELEASE-RP", 7: "A-ABORT"}


def split_pdus(stream: bytes) -> list[tuple[int, int, bytes]]:
    """[(offset, pdu type, body)] of a complete, gap-free UL byte stream (strict)."""
    out, off = [], 0
    while off < len(stream):
        if off + 6 > len(stream):
            raise LabError(f"truncated PDU header at {off}")
        ptype, length = stream[off], struct.unpack(">I", stream[off + 2:off + 6])[0]
        if ptype not in PDU_NAMES:
            raise LabError(f"unknown PDU type {ptype:#x} at {off}")
        body = stream[off + 6:off + 6 + length]
        if len(body) != length:
            raise LabError(f"truncated PDU at {off}: {len(body)} of {length}")
        out.append((off, ptype, body))
        off += 6 + length
    return out


@dataclass(frozen=True)
class PdvItem:
    """One presentation data value item of a P-DATA-TF (PS3.8 9.3.5.1, annex E.2), with the
    stream offsets of its PDU and of its own item header; ``is_command`` and ``is_last`` are
    bits 0 and 1 of its message control header."""
    pdu_offset: int
    pdu_end: int
    offset: int
    context_id: int
    control: int
    is_command: bool
    is_last: bool
    value: bytes
    value_offset: int


def pdv_items(stream: bytes) -> list[PdvItem]:
    """Every PDV item of a complete, gap-free UL byte stream, in order (the tests' one PDV walker)."""
    out = []
    for off, ptype, body in split_pdus(stream):
        if ptype != 4:
            continue
        pos = 0
        while pos + 6 <= len(body):
            ilen = struct.unpack(">I", body[pos:pos + 4])[0]
            mch = body[pos + 5]
            out.append(PdvItem(off, off + 6 + len(body), off + 6 + pos, body[pos + 4], mch, bool(mch & 1),
                               bool(mch & 2), body[pos + 6:pos + 4 + ilen], off + 12 + pos))
            pos += 4 + ilen
    return out


def pdata_messages(stream: bytes) -> list[dict]:
    """DIMSE messages in a UL stream: [{"context_id", "command": bool, "data": bytes, "pdvs": n}].

    PDV fragments (in P-DATA-TF PDUs) are joined per context and kind until
    the fragment flagged last; a command and its data set are separate items.
    """
    pending: dict[tuple[int, bool], list[bytes]] = {}
    out = []
    for item in pdv_items(stream):
        key = (item.context_id, item.is_command)
        pending.setdefault(key, []).append(item.value)
        if item.is_last:
            parts = pending.pop(key)
            out.append({"context_id": item.context_id, "command": key[1], "data": b"".join(parts),
                        "pdvs": len(parts)})
    return out


def accepted_transfer_syntaxes(server_stream: bytes) -> dict[int, str]:
    """Presentation context id -> accepted transfer syntax UID, from the A-ASSOCIATE-AC."""
    for _off, ptype, body in split_pdus(server_stream):
        if ptype != 2:
            continue
        out = {}
        pos = 68  # protocol version .. application context, after the fixed fields
        while pos + 4 <= len(body):
            itype, ilen = body[pos], struct.unpack(">H", body[pos + 2:pos + 4])[0]
            item = body[pos + 4:pos + 4 + ilen]
            if itype == 0x21:
                ctx, result = item[0], item[2]
                sub = item[4:]
                if result == 0 and len(sub) >= 4 and sub[0] == 0x40:
                    slen = struct.unpack(">H", sub[2:4])[0]
                    out[ctx] = sub[4:4 + slen].rstrip(b"\0 ").decode("ascii")
            pos += 4 + ilen
        return out
    return {}


def read_dataset_bytes(data: bytes, transfer_syntax: str):
    """Parse a data set (no meta group) as sent on the wire with the given transfer syntax."""
    import io
    from pydicom.filereader import read_dataset
    implicit = transfer_syntax == IMPLICIT_VR_LE
    little = transfer_syntax != "1.2.840.10008.1.2.2"
    return read_dataset(io.BytesIO(data), is_implicit_VR=implicit, is_little_endian=little)


def stored_datasets(client_stream: bytes, server_stream: bytes) -> list:
    """The data sets of the C-STORE requests in one association, parsed with pydicom."""
    ts = accepted_transfer_syntaxes(server_stream)
    return [read_dataset_bytes(m["data"], ts[m["context_id"]])
            for m in pdata_messages(client_stream) if not m["command"]]


def same_instance(a, b) -> bool:
    """Two data sets hold the same object: same SOP instance UID and pixel data."""
    return (str(a.SOPInstanceUID) == str(b.SOPInstanceUID)
            and bytes(a.PixelData) == bytes(b.PixelData))
