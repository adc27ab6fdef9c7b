"""Command line: one module per command, parsing and wiring only (no analysis logic).

A command is a module of this package with ``HELP`` (one line for ``dicomtrace --help``),
``add_arguments(parser)`` and ``run(args, out, err) -> exit code``, named in
:data:`COMMANDS`.  See docs/architecture.md, "How to add a command".

Exit codes: 0 the capture was read and analysed; 1 it was analysed but parts
of it could not be read (each problem printed as a warning); 2 it could not be
read at all, or the command line was wrong, or an output could not be written;
130 interrupted.
"""

from __future__ import annotations

import importlib
import os
import sys

from dicomtrace import __version__
from dicomtrace.cli.common import (EXIT_FATAL, EXIT_INTERRUPTED, EXIT_OK, ArgumentParser,
                                   CommandLineError)

# The registry: sub-command name -> module under dicomtrace.cli (in --help order).
COMMANDS = {
    "analyze": "analyze",
    "conversations": "conversations",
    "report": "report",
    "export": "export",
    "compare": "compare",
    "schema": "schema",
    "query": "query",
    "live": "live",
    "echo": "echo",
    "store": "store",
    "listen": "listen",
    "monitor": "monitor",
}


def build_parser() -> ArgumentParser:
    ap = ArgumentParser(prog="dicomtrace", description="DICOM network analyzer")
    ap.add_argument("--version", action="version", version=f"dicomtrace {__version__}")
    sub = ap.add_subparsers(dest="subcommand", metavar="COMMAND", parser_class=ArgumentParser)
    sub.required = True
    ap.commands = {}
    for name, module in COMMANDS.items():
        mod = importlib.import_module(f"dicomtrace.cli.{module}")
        p = sub.add_parser(name, help=mod.HELP, description=mod.HELP)
        mod.add_arguments(p)
        p.set_defaults(run=mod.run, prog=p.prog)
        ap.commands[name] = p
    return ap


def _consoles():
    from rich.console import Console

    class Output(Console):
        def on_broken_pipe(self) -> None:
            # rich exits with 1 here; the reader going away (``| head``) is not an error
            raise BrokenPipeError

    out = Output(highlight=False)
    if not out.is_terminal:
        # piped or redirected: COLUMNS when set (rich reads it), else wide enough for tables
        out = Output(highlight=False, width=None if os.environ.get("COLUMNS") else 132)
    err = Console(stderr=True, highlight=False, width=10000)
    return out, err


def _detach_stdout() -> None:
    """The reader of our output went away (``| head``): send the rest nowhere, so that
    the interpreter's final flush does not fail either."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def main(argv: list[str] | None = None) -> int:
    import warnings

    # No library warning reaches the user: what pydicom says about the wire is caught where
    # data sets are read (a finding, dataset-problem); anything else is not theirs to read.
    warnings.filterwarnings("ignore", module=r"(pydicom|numpy|pynetdicom)(\.|$)")
    ap = build_parser()
    args, extra = ap.parse_known_args(argv)
    if extra:
        ap.commands[args.subcommand].error(f"unrecognized arguments: {' '.join(extra)}")
    out, err = _consoles()
    debug = bool(os.environ.get("DICOMTRACE_DEBUG"))
    from dicomtrace.capture import CaptureError

    try:
        code = args.run(args, out, err)
        sys.stdout.flush()
        return code
    except CommandLineError as e:
        sys.stderr.write(f"{e.command or args.prog}: error: {e}\n")
        return EXIT_FATAL
    except CaptureError as e:
        err.print(f"dicomtrace: error: {e}", markup=False, highlight=False)
        return EXIT_FATAL
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _detach_stdout()
        return EXIT_OK
    except OSError as e:
        if debug:
            raise
        # an output that failed while being written (disk full, a file system gone)
        if e.filename and e.filename not in (getattr(args, "capture", None) or []):
            sys.stderr.write(f"{args.prog}: error: cannot write {e.filename}: {e.strerror or e}\n")
        else:
            sys.stderr.write(f"{args.prog}: error: {e.strerror or e}\n")
        return EXIT_FATAL
    except Exception as e:  # never a traceback for the user; DICOMTRACE_DEBUG=1 shows it
        if debug:
            raise
        err.print(f"dicomtrace: internal error: {type(e).__name__}: {e} "
                  "(run with DICOMTRACE_DEBUG=1 for details, and please report it)", markup=False)
        return EXIT_FATAL
