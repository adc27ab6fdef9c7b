#!/usr/bin/env python3
"""Rebuild examples/sample.pcap with real peers on loopback (needs root, tcpdump, dcmtk).

What it holds: a C-ECHO; a storescu -> storescp association storing three
objects; an association rejected because of a wrong called AE title; and a
pynetdicom storage SCP that answers 0xA700 (out of resources) to one of two
C-STOREs.  `dicomtrace analyze examples/sample.pcap` explains all of it.
"""

import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

import lab  # noqa: E402


def full_scp(port: int):
    """A pynetdicom storage SCP that is out of space for the second object and only
    answers to the called AE title ARCHIVE."""
    from pynetdicom import AE, AllStoragePresentationContexts, evt
    from pynetdicom.sop_class import Verification

    count = {"n": 0}

    def on_store(event):
        count["n"] += 1
        return 0xA700 if count["n"] == 2 else 0x0000

    ae = AE(ae_title="ARCHIVE")
    ae.require_called_aet = True
    ae.add_supported_context(Verification)
    for cx in AllStoragePresentationContexts:
        ae.add_supported_context(cx.abstract_syntax)
    return ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])


def main() -> None:
    out = HERE / "sample.pcap"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        files = lab.make_dicom_files(tmp / "in", [
            lab.DicomSpec(sop="CT", size=40_000, name="ct1", patient="p1", study="s1", series="a"),
            lab.DicomSpec(sop="CT", size=40_000, name="ct2", patient="p1", study="s1", series="a"),
            lab.DicomSpec(sop="MR", size=30_000, name="mr1", patient="p2", study="s2", explicit_vr=False),
        ])
        paths = [f.path for f in files]
        scp_port, bad_port = 11112, 104
        with lab.Capture(out, "lo", f"tcp port {scp_port} or tcp port {bad_port}"):
            with lab.StoreSCP(tmp / "recv", scp_port, aet="STORESCP"):
                lab.run_echoscu("127.0.0.1", scp_port, aec="STORESCP", aet="MODALITY")
                lab.run_storescu("127.0.0.1", scp_port, paths, aec="STORESCP", aet="MODALITY")
            server = full_scp(bad_port)
            try:
                lab.run_echoscu("127.0.0.1", bad_port, aec="PACS", aet="ROUTER", check=False)
                lab.pynetdicom_store("127.0.0.1", bad_port, paths[:2], aec="ARCHIVE", aet="ROUTER")
            finally:
                server.shutdown()
    for extra in HERE.glob("sample.pcap.*.log"):
        extra.unlink()
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
