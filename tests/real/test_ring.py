"""Ring buffers read as one capture (issue #16): tcpdump -C/-W and dumpcap file names,
files ordered by their first packet, connections and associations stitched across file
boundaries, capture points (sensors) kept apart."""

from __future__ import annotations

import json
import shutil

import pytest

import lab
from dicomtrace.capture.multi import Sensor, locate, order_files, plan_sensors, ring_name, CaptureFile

SAMPLE = lab.REPO_ROOT / "examples" / "sample.pcap"
BOUNDARY_CODES = {"capture-starts-midstream", "association-incomplete", "tcp-data-missing",
                  "object-incomplete", "connection-closed-without-release"}


def analyze(*args) -> dict:
    return json.loads(lab.run_dicomtrace("analyze", *map(str, args), "--format", "json").stdout)


def without_sensor(doc: dict) -> dict:
    for a in doc["associations"]:
        a.pop("sensor", None)
    return doc


@pytest.mark.parametrize("name, expected", [
    ("cap.pcap", None),
    ("cap.pcap7", ("cap.pcap", 7)),          # tcpdump -C
    ("cap03", ("cap", 3)),                   # tcpdump -C -W 20
    ("ring_00012_20261201101500.pcapng", ("ring.pcapng", 12)),  # dumpcap -b
    ("ring_00001_20261201101500", ("ring", 1)),
])
def test_ring_names(name, expected):
    assert ring_name(name) == expected


def test_locate_names_file_and_frame():
    files = [CaptureFile("a", "s", first_frame=1, frames=10), CaptureFile("b", "s", first_frame=11, frames=5)]
    assert locate(files, 1) == ("a", 1)
    assert locate(files, 11) == ("b", 1)
    assert locate(files, 15) == ("b", 5)
    assert locate(files, 16) is None


@pytest.fixture
def split_sample(tmp_path):
    """sample.pcap cut into 8-frame files named as a wrapped tcpdump -W ring: the
    numbers do not follow time (the oldest file has the highest number)."""
    parts = tmp_path / "parts"
    parts.mkdir()
    lab.run(["editcap", "-F", "pcap", "-c", "8", SAMPLE, parts / "p.pcap"])
    pieces = sorted(parts.iterdir())
    ring = tmp_path / "ring"
    ring.mkdir()
    n = len(pieces)
    for i, p in enumerate(pieces):  # wrapped: the first in time is number n-2
        shutil.copy(p, ring / f"cap{(i + n - 2) % n:02d}")
    return ring, pieces


def test_wrapped_ring_is_ordered_by_first_packet(split_sample):
    ring, pieces = split_sample
    [sensor] = plan_sensors([str(ring)])
    assert sensor.name == "ring"
    n = len(pieces)
    assert [p.rsplit("/", 1)[1] for p in sensor.files] == [f"cap{(i + n - 2) % n:02d}" for i in range(n)]
    assert order_files(list(reversed(sensor.files))) == sensor.files


def test_split_sample_equals_the_whole(split_sample):
    ring, pieces = split_sample
    whole = analyze(SAMPLE)
    doc = analyze(ring)
    assert {a["sensor"] for a in doc["associations"]} == {"ring"}
    assert without_sensor(doc)["associations"] == whole["associations"]
    assert doc["findings"] == whole["findings"]
    files = doc["capture"]["files"]
    assert len(files) == len(pieces) and sum(f["frames"] for f in files) == whole["capture"]["packets"]
    assert [f["first_frame"] for f in files] == [1 + 8 * i for i in range(len(files))]
    # the terminal names the file and the frame within it of each finding's first frame
    text = " ".join(lab.run_dicomtrace("analyze", ring).stdout.decode().split())
    for f in doc["findings"]:
        if f.get("frames"):
            first = min(f["frames"])
            i = (first - 1) // 8
            name = f"cap{(i + len(pieces) - 2) % len(pieces):02d}"
            assert f"({name} frame {first - 8 * i})" in text, (f["code"], first)


def test_two_sensors_never_merge_the_same_traffic(split_sample, tmp_path):
    ring, _ = split_sample
    other = tmp_path / "other"
    shutil.copytree(ring, other)
    whole = analyze(SAMPLE)
    doc = analyze(ring, other)
    n = len(whole["associations"])
    assert len(doc["associations"]) == 2 * n
    assert [a["sensor"] for a in doc["associations"]] == ["ring"] * n + ["other"] * n
    assert [a["id"] for a in doc["associations"]] == list(range(1, 2 * n + 1))
    # the same by --sensor NAME=GLOB, and the connections listed twice as well
    named = analyze("--sensor", f"east={ring}/*", "--sensor", f"west={other}/*")
    assert [a["sensor"] for a in named["associations"]] == ["east"] * n + ["west"] * n
    conv = json.loads(lab.run_dicomtrace("conversations", ring, other, "--format", "json").stdout)
    one = json.loads(lab.run_dicomtrace("conversations", SAMPLE, "--format", "json").stdout)
    assert len(conv["connections"]) == 2 * len(one["connections"])
    # each connection names its capture point, as the associations do; one file: no key
    k = len(one["connections"])
    assert [c["sensor"] for c in conv["connections"]] == ["ring"] * k + ["other"] * k
    assert not any("sensor" in c for c in one["connections"])


def test_folders_of_the_same_name_stay_apart(tmp_path):
    for site in ("site1", "site2"):
        (tmp_path / site / "eth0").mkdir(parents=True)
        shutil.copy(SAMPLE, tmp_path / site / "eth0" / "cap.pcap")
    sensors = plan_sensors([str(tmp_path / "site1" / "eth0"), str(tmp_path / "site2" / "eth0")])
    assert [s.name for s in sensors] == ["site1/eth0", "site2/eth0"]


def test_bad_inputs_are_one_line_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    for args, words in [((empty,), "no pcap or pcapng files"),
                        ((tmp_path / "missing",), "cannot open"),
                        (("-", SAMPLE), "standard input"),
                        (("--sensor", "x=/nonexistent/*"), "no file matches")]:
        res = lab.run_dicomtrace("analyze", *map(str, args), check=False)
        assert res.returncode == 2
        err = res.stderr.decode()
        assert words in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_overlapping_files_are_not_one_ring(tmp_path):
    """Two files of one folder covering the same time are no ring buffer: one line, exit 2."""
    for name in ("a.pcap", "b.pcap"):
        shutil.copy(SAMPLE, tmp_path / name)
    res = lab.run_dicomtrace("analyze", tmp_path, check=False)
    err = res.stderr.decode()
    assert res.returncode == 2 and len(err.strip().splitlines()) == 1
    assert "overlap in time" in err and "--same-traffic" in err and "--sensor" in err


def test_tcpdump_ring_is_one_association(ring_sensors, tmp_path):
    """tcpdump -C 1 -W 20 of six 1.6 MB C-STOREs: one association with every store, as
    in the same traffic merged into one file with mergecap -a; nothing at the seams."""
    files = ring_sensors.ward_files
    assert len(files) >= 6
    doc = analyze(ring_sensors.ward)
    [assoc] = doc["associations"]
    stores = assoc["operations"]
    assert [op["command"] for op in stores] == ["C-STORE"] * len(ring_sensors.ward_objects)
    assert [op["sop_instance_uid"] for op in stores] == [o.sop_instance_uid for o in ring_sensors.ward_objects]
    assert all(op["status"] == 0 and op["dataset_complete"] for op in stores)
    assert assoc["outcome"] == "released" and not assoc["capture_started_midstream"]
    assert not BOUNDARY_CODES & {f["code"] for f in doc["findings"]}
    # every object crosses a file boundary: its request starts and ends in different files
    seq = [CaptureFile(f["path"], f["sensor"], first_frame=f["first_frame"], frames=f["frames"])
           for f in doc["capture"]["files"]]
    assert [f.path for f in seq] == [str(p) for p in files]
    for op in stores:
        assert locate(seq, op["request_frame"])[0] != locate(seq, op["request_last_frame"])[0]

    merged = tmp_path / "merged.pcap"
    lab.run(["mergecap", "-F", "pcap", "-a", "-w", merged, *files])
    one = analyze(merged)
    assert without_sensor(doc)["associations"] == one["associations"]
    assert doc["findings"] == one["findings"]
    assert doc["objects"] == one["objects"]
    assert doc["capture"]["packets"] == one["capture"]["packets"]


def test_sensor_dataclass_pickles():
    import pickle

    s = Sensor("ward", ["a", "b"])
    assert pickle.loads(pickle.dumps(s)) == s
