"""Tries to read each Parquet file given with pyarrow and with DuckDB, with
no key, and prints as JSON how many files each engine read and the first
error of each.

usage: read_without_key.py FILE...
"""
import json
import sys

import duckdb
import pyarrow.parquet as pq

out = {"files": 0, "pyarrow_read": 0, "duckdb_read": 0, "pyarrow_error": "", "duckdb_error": ""}
con = duckdb.connect()
for path in sys.argv[1:]:
    out["files"] += 1
    try:
        pq.read_table(path)
        out["pyarrow_read"] += 1
    except Exception as e:  # any failure to read counts
        out["pyarrow_error"] = out["pyarrow_error"] or str(e)
    try:
        con.sql(f"SELECT count(*) FROM read_parquet('{path}')").fetchone()
        out["duckdb_read"] += 1
    except Exception as e:
        out["duckdb_error"] = out["duckdb_error"] or str(e)
print(json.dumps(out))
