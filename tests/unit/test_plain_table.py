"""print_table writes the lines rich would draw for the same table, or lets rich draw them."""

from __future__ import annotations

import io

from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from dicomtrace.output.text import _plain_lines, columns_table, print_table

COLUMNS = [("assoc", True, "ellipsis"), ("msg", True, "ellipsis"), ("bytes", True, "ellipsis"),
           ("complete", False, "ellipsis"), ("file", False, "fold")]


def rich_text(width: int, columns, rows, **kw) -> str:
    """What rich draws for the table (the reference)."""
    console = Console(file=io.StringIO(), width=width, highlight=False, **kw)
    console.print(columns_table(console, columns, rows))
    return console.file.getvalue()


def ours(width: int, columns, rows, **kw) -> tuple[str, bool]:
    console = Console(file=io.StringIO(), width=width, highlight=False, **kw)
    direct = _plain_lines(console, [c[0] for c in columns], rows) is not None
    print_table(console, columns, rows)
    return console.file.getvalue(), direct


def export_rows(n: int, partial: bool = False):
    return [(str(i // 40 + 1), str(i % 40 + 1), str(5000000 + i * 37),
             "no: the capture ended during the transfer" if partial and i % 7 == 0 else "yes",
             f"/tmp/out/{i // 40 + 1:03d}_{i % 40 + 1:05d}_2.25.{10 ** 37 + i * 7919}.dcm")
            for i in range(n)]


def test_an_export_listing_is_written_directly_and_equal_to_rich():
    for width in (80, 119, 120, 132, 200):
        for partial in (False, True):
            rows = export_rows(60, partial)
            if width < (200 if partial else 132):  # the paths do not fit beside the rest
                rows = [r[:4] + (r[4][-12:],) for r in rows]
            text, direct = ours(width, COLUMNS, rows)
            assert direct, width
            assert text == rich_text(width, COLUMNS, rows)


def test_what_does_not_fit_or_needs_rich_goes_to_rich():
    long = export_rows(3)
    assert ours(80, COLUMNS, long) == (rich_text(80, COLUMNS, long), False)  # folded paths
    for cell in ("caf\u00e9", "tab\there", "\u6f22\u5b57"):
        rows = [("1", "2", "3", "yes", cell)]
        assert ours(132, COLUMNS, rows) == (rich_text(132, COLUMNS, rows), False)
    for cell in ("[bold]x[/bold]", "a:smile:b", "/out/[1]/x.dcm"):  # text, not markup
        rows = [("1", "2", "3", "yes", cell)]
        assert ours(132, COLUMNS, rows) == (rich_text(132, COLUMNS, rows), True)
        assert cell in rich_text(132, COLUMNS, rows)
    rows = export_rows(2)
    styled = ours(132, COLUMNS, rows, force_terminal=True, color_system="standard")
    assert styled == (rich_text(132, COLUMNS, rows, force_terminal=True, color_system="standard"), False)


cells = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=30)


@settings(max_examples=300, deadline=None)
@given(st.integers(20, 220), st.lists(st.tuples(cells, cells, cells), max_size=6),
       st.tuples(cells, cells, cells))
def test_any_ascii_table_prints_as_rich_prints_it(width, rows, headings):
    columns = [(h or "h", i < 2, "ellipsis" if i < 2 else "fold") for i, h in enumerate(headings)]
    text, _direct = ours(width, columns, rows)
    assert text == rich_text(width, columns, rows)


def test_an_export_into_a_directory_named_like_markup_says_its_name(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    out = tmp_path / "out[bold]"
    import os

    r = subprocess.run([sys.executable, "-m", "dicomtrace", "export", "-o", str(out),
                        str(repo / "tests" / "golden" / "captures" / "store.pcap")],
                       capture_output=True, text=True, cwd=repo, timeout=120,
                       env={**os.environ, "COLUMNS": "400"})  # (whole paths, one a line)
    assert r.returncode == 0, r.stderr
    files = sorted(p.name for p in out.iterdir())
    assert files and all(f"{out}/{name}" in r.stdout for name in files)
    assert r.stdout.rstrip().endswith(f"{len(files)} file(s) written to {out}")
