"""Capture input: pcap, pcapng, gzip, standard input, live (tcpdump).

Readers turn bytes into :class:`FrameBatch` objects (many frames at once, with
their timestamps and link types) and know nothing about IP, TCP or DICOM.
"""

from dicomtrace.capture.frames import CaptureError, CaptureProblem, FrameBatch
from dicomtrace.capture.reader import open_capture

__all__ = ["CaptureError", "CaptureProblem", "FrameBatch", "open_capture"]
