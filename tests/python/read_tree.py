"""Reads one tenant's logs straight from Bulkhead's Parquet tree with DuckDB
and pyarrow, Hive partitioning on, and prints the answers as JSON.

usage: read_tree.py STORE_DIR TENANT TRACE_ID
"""
import glob
import json
import os
import sys

import duckdb
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

store, tenant, trace_id = sys.argv[1], sys.argv[2], sys.argv[3]
tree = os.path.join(store, f"tenant={tenant}", "signal=logs")
pattern = os.path.join(tree, "**", "*.parquet")
root_pattern = os.path.join(store, "*", "signal=logs", "**", "*.parquet")
out = {}


def by_service(rows):
    return sorted([[s if s is not None else "", int(n)] for s, n in rows])


# DuckDB: the tenant's tree, and the whole store filtered on the tenant key
con = duckdb.connect()
src = f"read_parquet('{pattern}', hive_partitioning = true)"
out["duckdb_count"] = con.sql(f"SELECT count(*) FROM {src}").fetchone()[0]
out["duckdb_by_service"] = by_service(
    con.sql(f"SELECT service_name, count(*) FROM {src} GROUP BY 1").fetchall()
)
out["duckdb_trace"] = con.sql(
    f"SELECT count(*) FROM {src} WHERE trace_id = '{trace_id}'"
).fetchone()[0]
root = f"read_parquet('{root_pattern}', hive_partitioning = true)"
out["duckdb_root_count"] = con.sql(
    f"SELECT count(*) FROM {root} WHERE tenant = '{tenant}'"
).fetchone()[0]

# pyarrow: the tenant's tree as a Hive dataset, the whole store, one file
table = ds.dataset(tree, format="parquet", partitioning="hive").to_table()
out["pyarrow_count"] = table.num_rows
counts = table.group_by("service_name").aggregate([([], "count_all")])
out["pyarrow_by_service"] = by_service(
    zip(counts["service_name"].to_pylist(), counts["count_all"].to_pylist())
)
out["pyarrow_trace"] = table.filter(pc.field("trace_id") == trace_id).num_rows
whole = pq.read_table(store, filters=[("tenant", "=", tenant), ("signal", "=", "logs")])
out["pyarrow_root_count"] = whole.num_rows
one = sorted(glob.glob(pattern, recursive=True))[0]
out["pyarrow_single_file_rows"] = pq.read_table(one).num_rows
out["files"] = len(glob.glob(pattern, recursive=True))
print(json.dumps(out))
