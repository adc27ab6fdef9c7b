"""--scheduler: the work of a ring of >= 20 files from two sensors spread over a real Dask
cluster (a scheduler and two workers on loopback) gives the same analysis and the same
Parquet tables as one process (issue #16)."""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
from pathlib import Path

import pytest

import lab

pq = pytest.importorskip("pyarrow.parquet")
pytest.importorskip("distributed")

DASK = Path(sys.executable).with_name("dask")


@contextlib.contextmanager
def dask_cluster(log_dir: Path, workers: int = 2):
    """`dask scheduler` and `workers` x `dask worker --nthreads 1` on 127.0.0.1 (free
    ports, no dashboard), all ended on exit; yields the scheduler's address."""
    if not DASK.exists() and shutil.which("dask") is None:
        pytest.skip("dask command not installed")
    dask = str(DASK) if DASK.exists() else shutil.which("dask")
    port = lab.free_port()
    address = f"tcp://127.0.0.1:{port}"
    with contextlib.ExitStack() as stack:
        stack.enter_context(lab.Peer(
            [dask, "scheduler", "--host", "127.0.0.1", "--port", port, "--no-dashboard",
             "--idle-timeout", "300"], port=port, log_dir=log_dir, name="dask-scheduler",
            start_timeout=60))
        for i in range(workers):
            stack.enter_context(lab.Peer(
                [dask, "worker", address, "--nthreads", "1", "--no-nanny", "--host", "127.0.0.1",
                 "--no-dashboard", "--memory-limit", "0", "--death-timeout", "60",
                 "--name", f"w{i}"], log_dir=log_dir, name=f"dask-worker-{i}", cwd=lab.REPO_ROOT))
        from distributed import Client

        with Client(address, timeout=60) as client:
            client.wait_for_workers(workers, timeout=120)
        yield address


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with dask_cluster(tmp_path_factory.mktemp("dask")) as address:
        yield address


def tables(directory: Path) -> dict:
    return {p.stem: pq.read_table(p) for p in sorted(directory.glob("*.parquet"))}


def test_dask_gives_the_tables_of_one_process(ring_sensors, cluster, tmp_path, monkeypatch):
    """Each sensor's ring cut into parts of whole files (at least 1 MB, and with --jobs 3
    at least a byte): the files are spread over the workers."""
    assert len(ring_sensors.ward_files) + len(ring_sensors.core_files) >= 20
    sensors = (ring_sensors.ward, ring_sensors.core)
    one = lab.run_dicomtrace("analyze", *sensors, "--jobs", "1", "--format", "json",
                             "--tables", tmp_path / "one").stdout
    from dicomtrace.capture.multi import plan_sensors
    from dicomtrace.parallel import plan_parts

    plans = plan_parts(plan_sensors([str(s) for s in sensors]), 2,
                       lambda tasks: [fn(*a) for fn, a in tasks], min_part=1 << 20)
    assert [len(p.parts) for p in plans] == [2, 2]  # four tasks of whole files
    assert all(x.start is None and x.stop is None for p in plans for part in p.parts for x in part.pieces)
    monkeypatch.setenv("DICOMTRACE_MIN_PART", str(1 << 20))
    spread = lab.run_dicomtrace("analyze", *sensors, "--scheduler", cluster, "--jobs", "2",
                                "--format", "json", "--tables", tmp_path / "dask").stdout
    assert json.loads(spread) == json.loads(one)
    monkeypatch.setenv("DICOMTRACE_MIN_PART", "1")
    cut = lab.run_dicomtrace("analyze", *sensors, "--scheduler", cluster, "--jobs", "3",
                             "--format", "json").stdout
    assert json.loads(cut) == json.loads(one)
    a, b = tables(tmp_path / "one"), tables(tmp_path / "dask")
    assert set(a) == {"connections", "associations", "presentation_contexts", "operations",
                      "findings", "objects"}
    assert set(a) == set(b)
    for name in a:
        assert a[name].equals(b[name]), name
    assert {s.as_py() for s in a["associations"]["sensor"]} == {"ward", "core"}
    assert a["operations"].num_rows == 14


def test_dask_export_writes_the_files_of_one_process(ring_sensors, cluster, tmp_path, monkeypatch):
    """The workers write the data sets (same machine: same paths), this process names them;
    each sensor's ring in parts of whole files."""
    import hashlib

    monkeypatch.setenv("DICOMTRACE_MIN_PART", str(1 << 20))
    sensors = (ring_sensors.ward, ring_sensors.core)
    trees = []
    for name, extra in (("one", ()), ("dask", ("--scheduler", cluster))):
        lab.run_dicomtrace("export", *sensors, "-o", tmp_path / name, *extra)
        trees.append({p.name: hashlib.sha256(p.read_bytes()).hexdigest()
                      for p in sorted((tmp_path / name).rglob("*")) if p.is_file()})
    assert len(trees[0]) == 14 and trees[0] == trees[1]


def test_local_pool_gives_the_tables_of_one_process(ring_sensors, tmp_path):
    sensors = (ring_sensors.ward, ring_sensors.core)
    for jobs in ("1", "2"):
        lab.run_dicomtrace("analyze", *sensors, "--jobs", jobs, "--tables", tmp_path / jobs)
    a, b = tables(tmp_path / "1"), tables(tmp_path / "2")
    assert all(a[name].equals(b[name]) for name in a)


def test_unreachable_scheduler_is_one_line(tmp_path):
    port = lab.free_port()
    res = lab.run_dicomtrace("analyze", lab.REPO_ROOT / "examples" / "sample.pcap", "--scheduler",
                             f"tcp://127.0.0.1:{port}", check=False, timeout=120)
    err = res.stderr.decode()
    assert res.returncode == 2 and len(err.strip().splitlines()) == 1 and "Dask scheduler" in err
