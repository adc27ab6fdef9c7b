"""Test images for ``store``: Part 10 data sets of a chosen size, SOP class and transfer
syntax, made with pydicom (compressed syntaxes through pydicom's pixel data encoders)."""

from __future__ import annotations

import math

from pydicom.uid import (
    JPEG2000, UID, DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian,
    JPEG2000Lossless, JPEGLSLossless, JPEGLSNearLossless, RLELossless, generate_uid,
)

# pydicom 3 encodes these: RLE itself, JPEG-LS with pyjpegls, JPEG 2000 with pylibjpeg-openjpeg
COMPRESSED = (RLELossless, JPEGLSLossless, JPEGLSNearLossless, JPEG2000Lossless, JPEG2000)
UNCOMPRESSED = (ImplicitVRLittleEndian, ExplicitVRLittleEndian)
NATIVE = UNCOMPRESSED + (DeflatedExplicitVRLittleEndian,)
SOP_ALIASES = {"CT": "1.2.840.10008.5.1.4.1.1.2", "MR": "1.2.840.10008.5.1.4.1.1.4",
               "SC": "1.2.840.10008.5.1.4.1.1.7", "CR": "1.2.840.10008.5.1.4.1.1.1",
               "US": "1.2.840.10008.5.1.4.1.1.6.1"}
MODALITIES = {"1.2.840.10008.5.1.4.1.1.2": "CT", "1.2.840.10008.5.1.4.1.1.4": "MR",
              "1.2.840.10008.5.1.4.1.1.1": "CR", "1.2.840.10008.5.1.4.1.1.6.1": "US"}
COLUMNS = 512
MAX_SINGLE_FRAME_ROWS = 4096  # larger images become frames of 512 x 512


def sop_class_uid(text: str) -> str:
    """CT, MR, SC, CR, US, a pydicom keyword (CTImageStorage) or a UID."""
    from pydicom.uid import UID_dictionary

    if text.upper() in SOP_ALIASES:
        return SOP_ALIASES[text.upper()]
    for uid, entry in UID_dictionary.items():
        if text in (uid, entry[4]):
            return uid
    raise ValueError(f"unknown SOP class {text!r}: give CT, MR, SC, CR, US, a keyword such as "
                     "CTImageStorage, or a UID")


def transfer_syntax_uid(text: str) -> UID:
    """A transfer syntax UID or keyword that pydicom can write (checked, with the reason)."""
    from pydicom.uid import UID_dictionary

    uid = next((UID(u) for u, e in UID_dictionary.items()
                if text in (u, e[4]) and e[1] == "Transfer Syntax"), None)
    if uid is None:
        raise ValueError(f"unknown transfer syntax {text!r}")
    if uid in NATIVE:
        return uid
    problem = encoder_problem(uid)
    if problem:
        raise ValueError(problem)
    return uid


def encoder_problem(uid: UID) -> str | None:
    from pydicom.pixels import get_encoder

    try:
        enc = get_encoder(uid)
    except NotImplementedError:
        return f"pydicom cannot encode {uid.name} ({uid}); encodable here: {', '.join(supported())}"
    if not enc.is_available:
        return (f"{uid.name} needs an encoder plugin that is not installed "
                f"({'; '.join(enc.missing_dependencies)})")
    return None


def supported() -> list[str]:
    """Transfer syntaxes this installation can generate."""
    out = [u.name for u in NATIVE]
    return out + [u.name for u in COMPRESSED if encoder_problem(u) is None]


def make_image(size_mb: float, sop_class: str, transfer_syntax: UID, index: int = 1,
               seed: int | None = None):
    """A data set whose pixel data is about ``size_mb`` MB (uncompressed, 16-bit noise over a
    gradient, so compression gains a little but not much)."""
    import numpy as np
    from pydicom.dataset import Dataset, FileMetaDataset

    pixel_bytes = max(int(size_mb * 1_000_000), 2 * COLUMNS)
    rows_total = math.ceil(pixel_bytes / (2 * COLUMNS))
    if rows_total <= MAX_SINGLE_FRAME_ROWS:
        frames, rows = 1, rows_total
    else:
        rows = COLUMNS
        frames = math.ceil(rows_total / rows)
    rng = np.random.default_rng(index if seed is None else seed)
    shape = (frames, rows, COLUMNS) if frames > 1 else (rows, COLUMNS)
    grad = (np.arange(COLUMNS, dtype=np.uint16) * 4)[None, :]
    pixels = (rng.integers(0, 256, size=shape, dtype=np.uint16) + grad) & 0x0FFF

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientName = "DICOMTRACE^TEST"
    ds.PatientID = "DICOMTRACE-TEST"
    ds.StudyDate = ds.SeriesDate = "20260101"
    ds.Modality = MODALITIES.get(sop_class, "OT")
    ds.SeriesNumber = 1
    ds.InstanceNumber = index
    ds.StudyDescription = f"dicomtrace test image {size_mb:g} MB"
    if sop_class == SOP_ALIASES["SC"]:
        ds.ConversionType = "WSD"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = rows, COLUMNS
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = pixels.tobytes()
    if transfer_syntax not in NATIVE:
        ds.compress(transfer_syntax, encoding_plugin="", generate_instance_uid=False)
    else:
        ds.file_meta.TransferSyntaxUID = transfer_syntax
    return ds


def encoded_size(ds) -> int:
    """Bytes of the data set as sent (its transfer syntax, no file meta): PS3.5 encoding."""
    from pynetdicom.dsutils import encode

    ts = ds.file_meta.TransferSyntaxUID
    data = encode(ds, ts.is_implicit_VR, ts.is_little_endian, ts.is_deflated)
    return len(data) if data is not None else 0
