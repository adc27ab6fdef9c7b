"""`dicomtrace export`: the objects that crossed the wire as DICOM Part 10 files (PS3.10)."""

from __future__ import annotations

from dicomtrace.cli.analyze import analysed
from dicomtrace.cli.common import (add_analysis_args, add_capture_args, check_capture_args,
                                   ae_title, check_output_dir, comma_choices,
                                   non_negative_int, note, uid, warn_problems)

# export.part10.KINDS (kept here so that --help does not import pydicom; a test compares)
KINDS = ("stores", "identifiers", "n-datasets", "commands")
LAYOUTS = ("flat", "patient/study/series")


def add_arguments(p) -> None:
    from dicomtrace.output import formats

    add_capture_args(p, formats("export"))
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="directory for the files")
    p.add_argument("--layout", choices=LAYOUTS, default="flat",
                   help="flat: ASSOC_MSGID_SOPINSTANCE.dcm (default); or PatientID/Study/Series/ "
                        "(every kind of file, see --include)")
    p.add_argument("--complete-only", action="store_true",
                   help="skip data sets not completely captured (otherwise written as .partial)")
    p.add_argument("--min-size", type=non_negative_int, default=0, metavar="BYTES",
                   help="skip smaller data sets")
    p.add_argument("--sop-class", action="append", type=uid, default=[], metavar="UID",
                   help="only this SOP class")
    p.add_argument("--association", action="append", type=int, default=[], metavar="ID")
    p.add_argument("--ae", action="append", type=ae_title, default=[], metavar="TITLE",
                   help="only associations with this calling or called AE title")
    add_analysis_args(p)
    p.add_argument("--include", type=comma_choices(KINDS), default=["stores"], metavar="KINDS",
                   help="what to write besides the C-STORE data sets, a comma list of: "
                        "identifiers (C-FIND/C-MOVE/C-GET requests and matches), n-datasets, "
                        "commands")


def run(args, out, err) -> int:
    from pathlib import Path

    from dicomtrace.export.part10 import ExportOptions
    from dicomtrace.output import render

    check_capture_args(args, err)
    check_output_dir(args, args.output)
    include = frozenset(args.include) | {"stores"}  # --include adds to the stored objects
    opts = ExportOptions(Path(args.output), args.layout, args.complete_only, args.min_size,
                         frozenset(args.sop_class), frozenset(args.association),
                         frozenset(args.ae), include)
    result = analysed(args, err, export_options=opts, shown="export")
    result.options["output_dir"] = args.output
    selectors = [f"--{name.replace('_', '-')} {','.join(map(str, values))}" for name, values in
                 (("association", args.association), ("ae", args.ae), ("sop_class", args.sop_class))
                 if values]
    if selectors and not result.exported:
        n = len(result.analysis.associations)
        note(args, err, f"nothing written: the capture holds {n} association"
                        f"{'s' if n != 1 else ''}, and nothing in them matches {', '.join(selectors)}")
    render("export", args.format, result, out)
    return warn_problems(result.analysis.capture, err)
