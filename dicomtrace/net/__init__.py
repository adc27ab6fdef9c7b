"""Link, IP and TCP headers, decoded a batch of frames at a time."""

from dicomtrace.net.decode import NetStats, Segments, decode_batch, format_ip

__all__ = ["NetStats", "Segments", "decode_batch", "format_ip"]
