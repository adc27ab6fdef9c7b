"""Command line: one module per command, parsing and wiring only (no analysis logic).

A command is a module of this package with ``add_arguments(parser)`` and
``run(args, out, err) -> exit code``, named in :data:`COMMANDS` with its one line of help
(for ``dicomtrace --help``).  Only the chosen command's module is imported, when argparse
reaches its name: ``dicomtrace --help`` and a command's start-up do not pay for the
others' imports (pynetdicom for the active checks, say).  See docs/architecture.md, "How
to add a command".

Exit codes: 0 the capture was read and analysed; 1 it was analysed but parts
of it could not be read (each problem printed as a warning); 2 it could not be
read at all, or the command line was wrong, or an output could not be written;
130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from dicomtrace import __version__
from dicomtrace.cli.common import (EXIT_FATAL, EXIT_INTERRUPTED, EXIT_OK, ArgumentParser,
                                   CommandLineError)

# numpy's OpenBLAS starts a thread per core as it is loaded (a fifth of numpy's import, twice
# that in CPU), and nothing here does linear algebra: set before anything imports numpy (the
# program's package, not the library's, so that it stays the program's choice).  A setting
# of the user's is kept.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

# The registry: sub-command name -> (module under dicomtrace.cli, the one line that
# `dicomtrace --help` shows and that is also the command's description), in --help order.
# The lines are kept here so that listing the commands imports none of them.
COMMANDS = {
    "analyze": ("analyze", "decode every DICOM association and say what went wrong"),
    "conversations": ("conversations", "list the TCP connections with health counters"),
    "report": ("report", "write a self-contained HTML report with graphs"),
    "export": ("export", "write the objects that crossed the wire as DICOM Part 10 files"),
    "compare": ("compare", "what changed between two captures of the same transactions "
                           "(exit 1: something got worse)"),
    "schema": ("schema", "print the JSON Schema of the --format json output (the contract)"),
    "query": ("query", "answer questions over the tables of analyze --tables DIR (DuckDB)"),
    "live": ("live", "capture from an interface and analyse while packets arrive"),
    "echo": ("echo", "C-ECHO a peer: TCP connect, association set-up and round-trip times"),
    "store": ("store", "C-STORE files or generated test images: time, throughput, status; "
                       "a size sweep"),
    "listen": ("listen", "a test SCP (storage, verification, C-FIND, C-MOVE) that mimics a "
                         "PACS in good or bad ways"),
    "monitor": ("monitor", "periodic C-ECHO (and C-STORE): success rate, latency, state "
                           "changes, Prometheus metrics"),
}


def load_command(parser: ArgumentParser) -> ArgumentParser:
    """Import a sub-command's module and give its parser the options and ``run``
    (once; a parser that is not a command's is returned as it is)."""
    module = getattr(parser, "command_module", None)
    if module is not None and not getattr(parser, "command_loaded", False):
        mod = importlib.import_module(f"dicomtrace.cli.{module}")
        mod.add_arguments(parser)
        parser.set_defaults(run=mod.run, prog=parser.prog)
        parser.command_loaded = True
    return parser


class _Commands(argparse._SubParsersAction):
    """The sub-commands' positional: the chosen command is loaded just before argparse
    hands it the rest of the command line (so its --help and its errors are whole)."""

    def __call__(self, parser, namespace, values, option_string=None):
        chosen = self._name_parser_map.get(values[0])
        if chosen is not None:
            load_command(chosen)
        super().__call__(parser, namespace, values, option_string)


def build_parser(load: bool = False) -> ArgumentParser:
    """The command line's parser; each command's options are added when it is chosen
    (``load=True``: all of them now, for tools that walk every option)."""
    ap = ArgumentParser(prog="dicomtrace", description="DICOM network analyzer")
    ap.add_argument("--version", action="version", version=f"dicomtrace {__version__}")
    sub = ap.add_subparsers(dest="subcommand", metavar="COMMAND", parser_class=ArgumentParser,
                            action=_Commands)
    sub.required = True
    ap.commands = {}
    for name, (module, help_line) in COMMANDS.items():
        p = sub.add_parser(name, help=help_line, description=help_line)
        p.command_module = module
        ap.commands[name] = load_command(p) if load else p
    return ap


class LazyConsole:
    """A rich console made when it is first used.  The JSON and HTML writers only take its
    ``file`` (the stream it would write to), and a run that prints nothing on standard
    error needs no console there: so ``--format json`` does not import rich."""

    def __init__(self, make, stream):
        self._make, self._stream, self._console = make, stream, None

    @property
    def file(self):
        return self._stream() if self._console is None else self._console.file

    def __getattr__(self, name):
        if name in ("_make", "_stream", "_console"):  # (not set: a copy made without __init__)
            raise AttributeError(name)
        if self._console is None:
            self._console = self._make()
        return getattr(self._console, name)


def _out_console():
    from rich.console import Console

    class Output(Console):
        def on_broken_pipe(self) -> None:
            # rich exits with 1 here; the reader going away (``| head``) is not an error
            raise BrokenPipeError

    out = Output(highlight=False)
    if not out.is_terminal:
        # piped or redirected: COLUMNS when set (rich reads it), else wide enough for tables
        out = Output(highlight=False, width=None if os.environ.get("COLUMNS") else 132)
    return out


def _err_console():
    from rich.console import Console

    return Console(stderr=True, highlight=False, width=10000)


def _consoles():
    return (LazyConsole(_out_console, lambda: sys.stdout),
            LazyConsole(_err_console, lambda: sys.stderr))


def _detach_stdout() -> None:
    """The reader of our output went away (``| head``): send the rest nowhere, so that
    the interpreter's final flush does not fail either."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def main(argv: list[str] | None = None) -> int:
    """The program (``argv`` None: its own arguments, and the process ends after this) or
    one command line of a caller's.  Returns the exit code."""
    code = _main(argv)
    if argv is None:
        # The interpreter's teardown collects every object of every module: 0.05-0.1 s of
        # pydicom's and numpy's after the work is done.  Frozen, they are left to the exit
        # (files and atexit handlers are still closed and run as usual).
        import gc

        gc.freeze()
    return code


def _main(argv: list[str] | None) -> int:
    import warnings

    # No library warning reaches the user: what pydicom says about the wire is caught where
    # data sets are read (a finding, dataset-problem); anything else is not theirs to read.
    warnings.filterwarnings("ignore", module=r"(pydicom|numpy|pynetdicom)(\.|$)")
    ap = build_parser()
    args, extra = ap.parse_known_args(argv)
    if extra:
        ap.commands[args.subcommand].error(f"unrecognized arguments: {' '.join(extra)}")
    from dicomtrace.settings import check_environment

    bad = check_environment()
    if bad:  # (read deep in the stages, often in a worker: said here, before any reading)
        sys.stderr.write(f"{args.prog}: error: {'; '.join(bad)}\n")
        return EXIT_FATAL
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
