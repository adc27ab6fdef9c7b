"""`dicomtrace query DIR`: the built-in questions and any SQL over the Parquet tables of
`analyze --tables DIR` (issue #16), on the two-sensor ring of tests/ring_lab.py."""

from __future__ import annotations

import csv
import io

import pytest

import lab
import ring_lab

pytest.importorskip("duckdb")
pq = pytest.importorskip("pyarrow.parquet")

from dicomtrace.scale.query import QUESTIONS  # noqa: E402


@pytest.fixture(scope="module")
def ring_tables(ring_sensors, tmp_path_factory):
    d = tmp_path_factory.mktemp("ring_tables")
    lab.run_dicomtrace("analyze", ring_sensors.ward, ring_sensors.core, "--tables", d)
    return d


def query_csv(*args) -> list[dict]:
    out = lab.run_dicomtrace("query", *map(str, args), "--csv").stdout.decode()
    return list(csv.DictReader(io.StringIO(out)))


@pytest.mark.parametrize("question", sorted(QUESTIONS))
def test_every_built_in_question_answers(ring_tables, question):
    rows = query_csv(ring_tables, question)
    assert rows, question
    text = lab.run_dicomtrace("query", ring_tables, question).stdout.decode()
    assert f"{len(rows)} row" in text


def test_failures_by_ae_pair_is_the_hand_count(ring_sensors, ring_tables):
    """Count by hand what the archive answered each modality, as pynetdicom saw it."""
    rows = {(r["sensor"], r["calling_ae"], r["called_ae"]): r for r in query_csv(ring_tables, "failures-by-ae-pair")}
    expected = {("ward", "STORESCU", "STORESCP"): (len(ring_sensors.ward_objects), 0)}
    for calling, statuses in ring_sensors.core_statuses.items():
        expected[("core", calling, "ARCHIVE")] = (len(statuses),
                                                  sum(s == ring_lab.OUT_OF_RESOURCES for s in statuses))
    assert expected[("core", "MODALITY1", "ARCHIVE")] == (5, 2)
    assert {k: (int(r["operations"]), int(r["failed"])) for k, r in rows.items()} == expected
    assert rows[("core", "MODALITY1", "ARCHIVE")]["failure_percent"] == "40.0"


def test_tables_carry_sensor_file_and_time(ring_sensors, ring_tables):
    ops = pq.read_table(ring_tables / "operations.parquet").to_pylist()
    ward = [o for o in ops if o["sensor"] == "ward"]
    assert [o["sop_instance_uid"] for o in ward] == [f.sop_instance_uid for f in ring_sensors.ward_objects]
    files = {str(p) for p in ring_sensors.ward_files}
    assert all(o["capture_file"] in files and o["file_frame"] >= 1 and o["request_time"] > 0 for o in ward)
    # a request's file_frame is its frame counted in its own file
    assert len({o["capture_file"] for o in ward}) > 1


def test_any_sql(ring_tables):
    rows = query_csv(ring_tables, "--sql",
                     "SELECT sensor, count(*) AS n FROM objects GROUP BY sensor ORDER BY sensor")
    assert rows == [{"sensor": "core", "n": "8"}, {"sensor": "ward", "n": "6"}]


@pytest.mark.parametrize("args, words", [
    (("--sql", "SELECT nope FROM operations"), "nope"),
    ((), "QUESTION"),
    (("failures-by-hour", "--sql", "SELECT 1"), "not both"),
])
def test_bad_queries_are_one_line(ring_tables, args, words):
    res = lab.run_dicomtrace("query", ring_tables, *args, check=False)
    err = res.stderr.decode()
    assert res.returncode == 2 and len(err.strip().splitlines()) == 1 and words in err


def test_folder_without_tables(tmp_path):
    res = lab.run_dicomtrace("query", tmp_path, "failures-by-hour", check=False)
    assert res.returncode == 2 and "no dicomtrace tables" in res.stderr.decode()


def test_docs_name_every_column_and_question():
    from dicomtrace.scale.tables import COLUMNS

    doc = (lab.REPO_ROOT / "docs" / "tables.md").read_text()
    for table, cols in COLUMNS.items():
        assert f"## {table}" in doc
        for name, _, _ in cols:
            assert name in doc or (name.startswith("s2c_") and "s2c_..." in doc), (table, name)
    for q in QUESTIONS:
        assert f"`{q}`" in doc
