"""NSS key log files (the format of SSLKEYLOGFILE, Python's ``ssl`` ``keylog_filename`` and
OpenSSL's keylog callback): one ``LABEL <client random, hex> <secret, hex>`` per line.

Labels used: ``CLIENT_RANDOM`` (TLS 1.2 and older: the 48-byte master secret),
``CLIENT_HANDSHAKE_TRAFFIC_SECRET``, ``SERVER_HANDSHAKE_TRAFFIC_SECRET``,
``CLIENT_TRAFFIC_SECRET_0``, ``SERVER_TRAFFIC_SECRET_0`` (TLS 1.3, RFC 8446 7.1).  Other labels
(``EXPORTER_SECRET``, ``CLIENT_EARLY_TRAFFIC_SECRET``, ``RSA``) are kept but not needed.
"""

from __future__ import annotations

import re

LABELS_13 = ("CLIENT_HANDSHAKE_TRAFFIC_SECRET", "SERVER_HANDSHAKE_TRAFFIC_SECRET",
             "CLIENT_TRAFFIC_SECRET_0", "SERVER_TRAFFIC_SECRET_0")
_LINE = re.compile(r"^([A-Z0-9_]+)\s+([0-9A-Fa-f]+)\s+([0-9A-Fa-f]+)\s*$")


class KeyLogError(ValueError):
    """The key log cannot be used at all (unreadable, or not one valid line)."""


class KeyLog:
    """Secrets by (label, client random)."""

    def __init__(self):
        self.secrets: dict[tuple[str, bytes], bytes] = {}
        self.bad_lines: list[int] = []
        self.path: str | None = None

    def __len__(self) -> int:
        return len(self.secrets)

    def add_line(self, line: str, number: int = 0) -> None:
        line = line.strip()
        if not line or line.startswith("#"):
            return
        m = _LINE.match(line)
        if m is None or len(m.group(2)) % 2 or len(m.group(3)) % 2:
            self.bad_lines.append(number)
            return
        self.secrets[(m.group(1), bytes.fromhex(m.group(2)))] = bytes.fromhex(m.group(3))

    def get(self, label: str, client_random: bytes) -> bytes | None:
        return self.secrets.get((label, client_random))

    def master_secret(self, client_random: bytes) -> bytes | None:
        """TLS 1.2: CLIENT_RANDOM gives the master secret (RFC 5246 8.1)."""
        s = self.get("CLIENT_RANDOM", client_random)
        return s if s is not None and len(s) == 48 else None

    def tls13_secrets(self, client_random: bytes) -> dict[str, bytes]:
        return {lab: s for lab in LABELS_13 if (s := self.get(lab, client_random)) is not None}

    def has(self, client_random: bytes) -> bool:
        return any(cr == client_random for _, cr in self.secrets)


def load_keylog(path: str) -> KeyLog:
    """Read a key log file; KeyLogError (one line, for the command line) when it is unusable."""
    kl = KeyLog()
    kl.path = path
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise KeyLogError(f"cannot read TLS key log {path}: {exc.strerror or exc}") from None
    text = raw.decode("ascii", "replace")
    for i, line in enumerate(text.splitlines(), 1):
        kl.add_line(line, i)
    if not kl.secrets:
        raise KeyLogError(f"{path} is not an NSS key log (no line like "
                          "'CLIENT_RANDOM <hex> <hex>' or 'CLIENT_TRAFFIC_SECRET_0 <hex> <hex>')")
    return kl
