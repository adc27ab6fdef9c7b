"""The terminal's building blocks: times, sizes, UIDs and tables that fit the console width.

Shared by every text output (the analysis, conversations, TLS, compare) so that none of them
imports another's module.
"""

from __future__ import annotations

from datetime import datetime, timezone

from rich.console import Console
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from dicomtrace.uids import uid_name


def clock(t: float | None) -> str:
    if t is None:
        return "-"
    return datetime.fromtimestamp(t, timezone.utc).strftime("%H:%M:%S.%f")[:-3]


def ms(s: float | None) -> str:
    return "-" if s is None else f"{s * 1000:.1f} ms"


def uid_label(uid: str | None, width: int | None = None) -> str:
    """The name of a well-known UID, else the UID (shortened to ``width``, see short_uid)."""
    if not uid:
        return "-"
    name = uid_name(uid)
    return f"{name}" if name else short_uid(uid, width)


def short_uid(uid: str | None, width: int | None) -> str:
    """``1.2.840.1...4.5.6``: a UID longer than ``width`` loses its middle, never its ends
    (the root says who made it, the end tells instances apart); None keeps it whole."""
    if not uid:
        return "-"
    if width is None or len(uid) <= width:
        return uid
    keep = max(width - 3, 2)
    head = (keep + 1) // 2
    return f"{uid[:head]}...{uid[len(uid) - (keep - head):]}"


WIDE_CONSOLE = 120  # from this width on, tables have room for boxes


def uid_width(console: Console, wide: bool) -> int | None:
    """How long a UID may be in a table row on this console (None: whole, --wide)."""
    return None if wide else max(16, min(64, console.width - 64))


def fitting_table(console: Console, **kw) -> Table:
    """A table that fits the console: boxed headings when there is room, else no box and
    one space between columns, so that an 80-column terminal keeps every column whole."""
    kw.setdefault("title_justify", "left")
    kw.setdefault("caption_justify", "left")
    if console.width >= WIDE_CONSOLE:
        return Table(header_style="bold", show_edge=False, pad_edge=False, **kw)
    return Table(header_style="bold underline", box=None, padding=(0, 1, 0, 0), pad_edge=False,
                 **kw)


def indented(text: str | Text, indent: int = 2, style: str = "") -> Padding:
    """Prose whose wrapped lines stay indented under their heading."""
    return Padding(text if isinstance(text, Text) else Text(text, style=style), (0, 0, 0, indent),
                   expand=False)


def hanging(mark: str, text: str, indent: int = 2, style: str = "") -> Table:
    """``  → advice`` with the wrapped lines under the advice, not under the mark."""
    t = Table.grid(padding=0)
    t.add_column(width=indent + len(mark), no_wrap=True)
    t.add_column(ratio=1)
    t.add_row(Text(" " * indent + mark, style=style), Text(text, style=style))
    return t


def rate(bps: float | None) -> str:
    if bps is None:
        return "-"
    mbit = bps * 8 / 1e6
    return f"{bps / 1e6:.1f} MB/s ({mbit:.0f} Mbit/s)" if mbit >= 1 else f"{bps / 1e3:.1f} KB/s"


def size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)
