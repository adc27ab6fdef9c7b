#!/usr/bin/env python3
"""Generate synthetic CT objects for the C-STORE benchmark capture.

Writes RUNS sub-directories (run01, run02, ...) of PER_RUN DICOM Part-10 files
each. Every object is a CT Image Storage instance with ROWS x COLUMNS 16-bit
pixels (default 1250 x 2000 = 5,000,000 bytes of pixel data) and a unique SOP Instance
UID. UIDs are derived deterministically from (seed, run, index) so repeated
builds send the same objects; each run is one patient/study, which makes one
association per study in the capture.

Used by bench/build_capture.sh; not part of the dicomtrace package.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

# fixed, derived under the 2.25 (UUID) root so it needs no registered org root
IMPL_UID = generate_uid(prefix=None, entropy_srcs=["dicomtrace-bench-implementation"])


def uid(seed: str, *parts: object) -> str:
    return generate_uid(prefix=None, entropy_srcs=[seed, *map(str, parts)])


def make_object(seed: str, run: int, idx: int, rows: int, cols: int, pixels: np.ndarray) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = uid(seed, "sop", run, idx)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = IMPL_UID
    meta.ImplementationVersionName = "DTBENCH_1"

    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = uid(seed, "study", run)
    ds.SeriesInstanceUID = uid(seed, "series", run)
    ds.FrameOfReferenceUID = uid(seed, "for", run)
    ds.PatientName = f"BENCH^RUN{run:02d}"
    ds.PatientID = f"DTBENCH{run:04d}"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyDate = "20240101"
    ds.StudyTime = "120000"
    ds.StudyID = f"{run}"
    ds.AccessionNumber = f"ACC{run:06d}"
    ds.ReferringPhysicianName = ""
    ds.Modality = "CT"
    ds.Manufacturer = "dicomtrace-bench"
    ds.SeriesNumber = 1
    ds.InstanceNumber = idx + 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.ImagePositionPatient = [0.0, 0.0, float(idx)]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.PixelSpacing = [0.5, 0.5]
    ds.SliceThickness = 1.0
    ds.KVP = 120
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = cols
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    ds.PixelData = pixels.tobytes()
    return ds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, type=Path, help="output directory")
    ap.add_argument("--runs", type=int, default=5, help="number of associations (sub-directories)")
    ap.add_argument("--per-run", type=int, default=40, help="objects per association")
    ap.add_argument("--rows", type=int, default=1250)
    ap.add_argument("--cols", type=int, default=2000)
    ap.add_argument("--seed", default="dicomtrace-bench-v1")
    args = ap.parse_args(argv)

    rng = np.random.default_rng(12345)
    base = rng.integers(0, 4096, size=(args.rows, args.cols), dtype=np.uint16)
    total = 0
    for run in range(1, args.runs + 1):
        d = args.out / f"run{run:02d}"
        d.mkdir(parents=True, exist_ok=True)
        for idx in range(args.per_run):
            # cheap per-object variation so no two objects carry identical pixels
            pixels = (base + np.uint16(run * 131 + idx * 7)) & np.uint16(0x0FFF)
            ds = make_object(args.seed, run, idx, args.rows, args.cols, pixels)
            path = d / f"ct{idx:03d}.dcm"
            ds.save_as(path, enforce_file_format=True)
            total += path.stat().st_size
    print(f"generated {args.runs * args.per_run} objects, {total} bytes in {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
