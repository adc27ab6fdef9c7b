"""`dicomtrace echo HOST PORT`: C-ECHO with TCP connect, association and round-trip times."""

from __future__ import annotations

from dicomtrace.cli.checks import CHECK_EXIT_HELP, add_check_args, checked, emit, target
from dicomtrace.cli.common import positive_int


def add_arguments(p) -> None:
    p.epilog = CHECK_EXIT_HELP
    add_check_args(p)
    p.add_argument("--count", type=positive_int, default=1, metavar="N",
                   help="C-ECHOs to send on the association (default 1)")


def run(args, out, err) -> int:
    from dicomtrace.probe.echo import echo

    return emit(checked(args, lambda: echo(target(args), args.count)), args, out)
