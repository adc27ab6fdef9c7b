"""DICOM port lists such as ``104,11112,4242,50000-51000``."""

from __future__ import annotations

DEFAULT_PORTS = "104,11112"


def parse_ports(text: str) -> frozenset[int]:
    """Parse a comma-separated list of ports and ranges; raise ValueError with a
    message for the user when it is not one."""
    ports: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        try:
            a = int(lo)
            b = int(hi) if sep else a
        except ValueError:
            raise ValueError(f"not a port or port range: {part!r}") from None
        if not (0 < a <= 65535 and 0 < b <= 65535 and a <= b):
            raise ValueError(f"port out of range 1-65535: {part!r}")
        ports.update(range(a, b + 1))
    return frozenset(ports)
