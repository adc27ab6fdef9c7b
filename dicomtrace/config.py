"""The analysis settings every stage may read (a frozen, picklable value: the workers of a
parallel or distributed run get a copy)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AnalysisConfig:
    ports: frozenset[int]  # connections on these TCP ports are DICOM
    heuristic: bool = True  # also look for DICOM on every other port (ul/detect.py)
    tls_ports: frozenset[int] = frozenset({2762})  # DICOM over TLS (PS3.15 B.1)
    tls_keylog: object = None  # tls.KeyLog: secrets to decrypt TLS with (--tls-keylog)
