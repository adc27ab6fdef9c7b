"""Many captures and many machines: sensors of ring-buffer files analysed over a process
pool or a Dask cluster (run.py), Parquet tables of the results (tables.py) and questions
answered over them with DuckDB (query.py)."""
