"""`dicomtrace schema`: print the JSON Schema that `analyze --format json` follows."""

from __future__ import annotations


def add_arguments(p) -> None:
    pass


def run(args, out, err) -> int:
    import sys

    from dicomtrace.schema import schema_text

    sys.stdout.write(schema_text())
    return 0
