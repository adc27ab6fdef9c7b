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


def print_table(console: Console, columns, rows) -> None:
    """A :func:`fitting_table` of plain text, printed.  ``columns``: (heading, no_wrap,
    overflow) each; ``rows``: tuples of str.

    rich measures and draws a table at ~0.35 ms a row: 0.07 s for the 200 files of the bench
    capture's export, 17 s for a day's 50,000.  When the console draws no style and every
    cell is plain ASCII that fits, the table is the same text written directly
    (:func:`_plain_lines`; a unit test compares it with rich's)."""
    lines = _plain_lines(console, [c[0] for c in columns], rows)
    if lines is not None:
        console.file.write("".join(line + "\n" for line in lines))
        return
    console.print(columns_table(console, columns, rows))


def columns_table(console: Console, columns, rows) -> Table:
    """The :func:`fitting_table` of :func:`print_table`'s columns and rows, for rich: the
    cells as text, never as markup (a file or AE name may hold ``[...]`` or ``:x:``)."""
    t = fitting_table(console)
    for heading, no_wrap, overflow in columns:
        t.add_column(Text(heading), no_wrap=no_wrap, overflow=overflow)
    for row in rows:
        t.add_row(*map(Text, row))
    return t


def _plain(cell: str) -> bool:
    """Text that rich prints as it is: printable ASCII (one column a character)."""
    return cell.isascii() and cell.isprintable()


def _plain_lines(console: Console, headings: list[str], rows) -> list[str] | None:
    """The lines rich draws for :func:`columns_table` of these cells, or None when rich
    would do more than pad them (styles, wide or control characters, or columns that do
    not fit the width as they are)."""
    if console.color_system is not None or console.record or not all(map(_plain, headings)):
        return None
    widths = [len(h) for h in headings]
    for row in rows:
        if len(row) != len(widths):
            return None
        for i, cell in enumerate(row):
            if not _plain(cell):
                return None
            if len(cell) > widths[i]:
                widths[i] = len(cell)
    last = len(widths) - 1
    if console.width >= WIDE_CONSOLE:  # heavy head box, no edge: " | " between columns
        if sum(widths) + 3 * last > console.width:
            return None

        def line(cells, sep):
            return sep.join((" " if i else "") + c.ljust(w) + (" " if i < last else "")
                            for i, (c, w) in enumerate(zip(cells, widths)))

        rule = "\u2547".join("\u2501" * (w + (i > 0) + (i < last)) for i, w in enumerate(widths))
        return [line(headings, "\u2503"), rule] + [line(r, "\u2502") for r in rows]
    if sum(widths) + last > console.width:  # no box: one space after each column but the last
        return None
    return [" ".join(c.ljust(w) for c, w in zip(r, widths)) for r in [headings, *rows]]


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
