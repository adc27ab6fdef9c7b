"""`dicomtrace query DIR [QUESTION]`: the common questions (or any SQL) over the Parquet
tables that `analyze --tables DIR` wrote, answered by DuckDB."""

from __future__ import annotations

from dicomtrace.cli.common import fail


def add_arguments(p) -> None:
    from dicomtrace.scale.query import QUESTIONS

    p.add_argument("tables", metavar="DIR", help="the folder analyze --tables DIR wrote")
    p.add_argument("question", nargs="?", choices=tuple(QUESTIONS), metavar="QUESTION",
                   help="a built-in question: " + "; ".join(f"{k}: {v[0]}" for k, v in QUESTIONS.items()))
    p.add_argument("--sql", metavar="SQL",
                   help="any SQL over the tables (connections, associations, presentation_contexts, "
                        "operations, findings, objects; columns in docs/tables.md)")
    p.add_argument("--csv", action="store_true", help="print CSV instead of a table")


def run(args, out, err) -> int:
    from dicomtrace.scale.query import QUESTIONS, QueryError, answer, run_query

    if args.question and args.sql:
        fail(args, "give a QUESTION or --sql, not both")
    if not args.question and not args.sql:
        fail(args, "name a QUESTION (" + ", ".join(QUESTIONS) + ") or give --sql")
    try:
        columns, rows = answer(args.tables, args.question) if args.question \
            else run_query(args.tables, args.sql)
    except QueryError as e:
        fail(args, str(e))
    if args.csv:
        import csv
        import sys

        w = csv.writer(sys.stdout, lineterminator="\n")
        w.writerow(columns)
        w.writerows(["" if v is None else v for v in row] for row in rows)
        return 0
    from rich.table import Table

    t = Table(header_style="bold", show_edge=False,
              title=QUESTIONS[args.question][0] if args.question else None)
    for c in columns:
        t.add_column(c, overflow="fold")
    for row in rows:
        t.add_row(*("" if v is None else str(v) for v in row))
    out.print(t)
    out.print(f"{len(rows)} row{'s' if len(rows) != 1 else ''}")
    return 0
