"""Ring-buffer captures from two capture points (sensors), made once per test session.

ward/  tcpdump -C 1 -W 20 (files ring.pcap00, ring.pcap01 ...): dcmtk storescu sends
       six 1.6 MB objects to storescp in ONE association, so every object crosses a
       file boundary.
core/  tcpdump -C 1 (files core.pcap, core.pcap1 ...): two associations to a
       pynetdicom archive "ARCHIVE" that answers 0xA700 (out of resources) for some
       objects: MODALITY1 sends five (the 2nd and 4th fail), MODALITY2 sends three
       (all succeed).

Together at least 20 files: the ring of the Dask and query tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import lab

OBJECT_SIZE = 1_600_000
WARD_OBJECTS = 6
CORE_RUNS = (("MODALITY1", 5, {1, 3}), ("MODALITY2", 3, set()))  # calling AE, objects, failing indexes
OUT_OF_RESOURCES = 0xA700


@dataclass
class RingSensors:
    root: Path                 # holds ward/ and core/
    ward: Path
    core: Path
    ward_files: list[Path]     # in the order tcpdump wrote them
    core_files: list[Path]
    ward_objects: list         # lab.DicomFileInfo sent by storescu
    core_statuses: dict        # calling AE -> statuses pynetdicom got


def build(root: Path) -> RingSensors:
    objects = lab.make_dicom_files(root / "objects", [
        lab.DicomSpec(sop=("CT", "MR")[i % 2], size=OBJECT_SIZE, name=f"obj{i}", seed=i)
        for i in range(WARD_OBJECTS + sum(n for _, n, _ in CORE_RUNS))])
    ward_objects, core_objects = objects[:WARD_OBJECTS], objects[WARD_OBJECTS:]

    ward = root / "ward"
    ward.mkdir()
    port = lab.free_port()
    cap = lab.Capture(ward / "ring.pcap", "lo", f"tcp port {port}", ring=(1, 20))
    with cap:
        with lab.StoreSCP(root / "received", port, log_dir=root):
            lab.run_storescu("127.0.0.1", port, [o.path for o in ward_objects])
    ward_files = cap.ring_files()

    core = root / "core"
    core.mkdir()
    statuses = {}
    cap = lab.Capture(core / "core.pcap", "lo", "", ring=(1, None))
    with _archive() as scp:
        cap.bpf = f"tcp port {scp.port}"
        with cap:
            start = 0
            for calling, n, failing in CORE_RUNS:
                sent = core_objects[start:start + n]
                start += n
                scp.failing = {sent[i].sop_instance_uid for i in failing}
                statuses[calling] = lab.pynetdicom_store("127.0.0.1", scp.port, [o.path for o in sent],
                                                         aec="ARCHIVE", aet=calling)
    core_files = cap.ring_files()
    return RingSensors(root, ward, core, ward_files, core_files, ward_objects, statuses)


class _archive(lab.PynetdicomSCP):
    """A pynetdicom storage SCP that answers 0xA700 for the instances in ``failing``."""

    def __init__(self):
        super().__init__(aet="ARCHIVE")
        self.failing: set[str] = set()

    def __enter__(self):
        from pynetdicom import AE, AllStoragePresentationContexts, evt

        def on_store(event):
            return OUT_OF_RESOURCES if event.request.AffectedSOPInstanceUID in self.failing else 0x0000

        ae = AE(ae_title=self.aet)
        ae.maximum_pdu_size = self.max_pdu
        ae.network_timeout = ae.acse_timeout = ae.dimse_timeout = 30
        for cx in AllStoragePresentationContexts:
            ae.add_supported_context(cx.abstract_syntax)
        self.server = ae.start_server((self.host, self.port), block=False,
                                      evt_handlers=[(evt.EVT_C_STORE, on_store)])
        lab.wait_listening(self.port)
        return self
