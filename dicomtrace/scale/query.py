"""Questions over the Parquet tables (``dicomtrace query DIR``), answered by DuckDB.

Each table of DIR (``operations.parquet``...) is a view of the same name, so any SQL
runs over them (``--sql``); the common questions are named built-ins.  Times in the
tables are seconds since the epoch; the built-ins show them as UTC timestamps.
"""

from __future__ import annotations

import os

from dicomtrace.scale.tables import TABLE_NAMES

# name -> (what it answers, SQL)
QUESTIONS: dict[str, tuple[str, str]] = {
    "failures-by-ae-pair": (
        "operations and failed operations (final status a failure, or no response) by "
        "calling -> called AE title",
        """SELECT sensor, calling_ae, called_ae, count(*) AS operations,
                  count(*) FILTER (WHERE status_category IN ('failure', 'unanswered')) AS failed,
                  round(100.0 * count(*) FILTER (WHERE status_category IN ('failure', 'unanswered'))
                        / count(*), 1) AS failure_percent
           FROM operations GROUP BY ALL ORDER BY failure_percent DESC, operations DESC,
                sensor, calling_ae, called_ae"""),
    "failures-by-hour": (
        "operations and failed operations by hour (UTC) of the request",
        """SELECT date_trunc('hour', to_timestamp(request_time) AT TIME ZONE 'UTC') AS hour,
                  count(*) AS operations,
                  count(*) FILTER (WHERE status_category IN ('failure', 'unanswered')) AS failed,
                  round(100.0 * count(*) FILTER (WHERE status_category IN ('failure', 'unanswered'))
                        / count(*), 1) AS failure_percent
           FROM operations GROUP BY ALL ORDER BY hour"""),
    "slowest-operations": (
        "the 20 operations that waited longest for their final response",
        """SELECT sensor, association, message_id, command, calling_ae, called_ae,
                  round(latency * 1000, 3) AS latency_ms, dataset_bytes, status_category,
                  regexp_replace(capture_file, '^.*/', '') AS file, file_frame
           FROM operations WHERE latency IS NOT NULL
           ORDER BY latency DESC, sensor, association, message_id LIMIT 20"""),
    "findings-by-code": (
        "findings by code and severity, per hour (UTC) of their first frame",
        """SELECT date_trunc('hour', to_timestamp(time) AT TIME ZONE 'UTC') AS hour, code, severity,
                  count(*) AS findings, count(DISTINCT association) AS associations
           FROM findings GROUP BY ALL ORDER BY hour, findings DESC, code"""),
    "throughput-by-association": (
        "bytes and throughput of each association, busiest first",
        """SELECT sensor, association, calling_ae, called_ae, operations, failed_operations,
                  bytes_requestor + bytes_acceptor AS bytes, round(duration, 3) AS seconds,
                  round(throughput / 1e6, 3) AS mb_per_s, outcome
           FROM associations ORDER BY bytes DESC, sensor, association"""),
}


class QueryError(Exception):
    """A query that cannot run (no tables, bad SQL): one line for the user."""


def connect(directory: str):
    """A DuckDB connection with a view per table found in ``directory``."""
    try:
        import duckdb
    except ImportError:
        raise QueryError("query needs duckdb: pip install 'dicomtrace[scale]'") from None
    if not os.path.isdir(directory):
        raise QueryError(f"{directory}: no such folder (write tables with analyze --tables DIR)")
    found = [n for n in TABLE_NAMES if os.path.isfile(os.path.join(directory, f"{n}.parquet"))]
    if not found:
        raise QueryError(f"{directory}: no dicomtrace tables here (write them with analyze --tables DIR)")
    con = duckdb.connect()
    for name in found:
        path = os.path.join(directory, f"{name}.parquet").replace("'", "''")
        con.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet('{path}')")
    return con


def run_query(directory: str, sql: str) -> tuple[list[str], list[tuple]]:
    """(column names, rows) of ``sql`` over the tables of ``directory``."""
    import duckdb

    con = connect(directory)
    try:
        cur = con.execute(sql)
        if cur.description is None:
            return [], []
        return [d[0] for d in cur.description], cur.fetchall()
    except duckdb.Error as e:
        raise QueryError(" ".join(str(e).split())) from None
    finally:
        con.close()


def answer(directory: str, question: str) -> tuple[list[str], list[tuple]]:
    return run_query(directory, QUESTIONS[question][1])
