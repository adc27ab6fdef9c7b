"""`dicomtrace store HOST PORT`: C-STORE files or generated test images; a size sweep."""

from __future__ import annotations

from dicomtrace.cli.checks import CHECK_EXIT_HELP, add_check_args, checked, emit, target
from dicomtrace.cli.common import fail, positive_float, positive_int


def add_arguments(p) -> None:
    p.epilog = (CHECK_EXIT_HELP + ". Generated images: pixel data of --size MB, any SOP class; "
                "transfer syntaxes: Implicit/Explicit VR Little Endian, Deflated, RLE Lossless; "
                "JPEG-LS and JPEG 2000 when pydicom's encoder plugins (pyjpegls, "
                "pylibjpeg-openjpeg) are installed; JPEG baseline cannot be encoded by pydicom.")
    add_check_args(p)
    p.add_argument("files", nargs="*", metavar="FILE", help="DICOM Part 10 files to send")
    p.add_argument("--generate", type=positive_int, metavar="N",
                   help="send N generated test images instead of files")
    p.add_argument("--size", type=positive_float, metavar="MB",
                   help="pixel data size of each generated image (default 0.5)")
    p.add_argument("--transfer-syntax", metavar="UID",
                   help="transfer syntax of generated images, UID or keyword (default Explicit "
                        "VR Little Endian; e.g. RLELossless)")
    p.add_argument("--sop-class", metavar="CLASS",
                   help="SOP class of generated images: CT, MR, SC, CR, US, a keyword such as "
                        "MRImageStorage, or a UID (default CT)")
    p.add_argument("--sizes", metavar="MB,MB,...",
                   help="threshold sweep: one association per size (e.g. 1,10,100); says the "
                        "first size that fails and the sizes that slow down")


def sizes_of(args, text: str) -> list[float]:
    try:
        sizes = [float(s) for s in text.split(",") if s.strip()]
    except ValueError:
        sizes = []
    if not sizes or any(not s > 0 for s in sizes):
        fail(args, f"--sizes {text!r}: give positive sizes in MB, e.g. 1,10,100")
    return sizes


def run(args, out, err) -> int:
    from dicomtrace.probe import images, store

    given = [n for n, v in (("FILE", args.files), ("--generate", args.generate),
                            ("--sizes", args.sizes)) if v]
    if len(given) != 1:
        fail(args, "give FILEs, --generate N or --sizes LIST (one of them)"
             if not given else f"{' and '.join(given)} exclude each other: give one")
    if args.files:
        unused = [o for o, v in (("--size", args.size), ("--transfer-syntax", args.transfer_syntax),
                                 ("--sop-class", args.sop_class)) if v is not None]
        if unused:
            fail(args, f"{', '.join(unused)} describe generated images: use them with "
                       "--generate or --sizes, not with FILEs")
    if args.sizes and args.size is not None:
        fail(args, "--size and --sizes exclude each other")
    try:
        ts = images.transfer_syntax_uid(args.transfer_syntax or "1.2.840.10008.1.2.1")
        sop = images.sop_class_uid(args.sop_class or "CT")
        items = store.load_files(args.files) if args.files else None
    except ValueError as e:
        fail(args, str(e))
    sizes = sizes_of(args, args.sizes) if args.sizes else None
    peer = target(args)
    if sizes:
        report = checked(args, lambda: store.sweep(peer, sizes, sop, ts))
    else:
        report = checked(args, lambda: store.store(
            peer, items or store.generate(args.generate, args.size or 0.5, sop, ts)))
    return emit(report, args, out)
