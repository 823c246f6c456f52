"""Talks to Bulkhead's Arrow Flight SQL endpoint with the ADBC driver.

Usage: flight_sql_client.py URI KEY OTHER_TENANT_KEY INGEST_ONLY_KEY

Prints one JSON object with what it saw; the Rust test checks it. Every
step that should fail records the error message instead of stopping.
"""
import json
import sys

import adbc_driver_flightsql.dbapi as flight_sql
from adbc_driver_flightsql import DatabaseOptions

uri, key, other_key, ingest_key = sys.argv[1:5]
out = {}


def connect_bearer(k):
    return flight_sql.connect(uri, db_kwargs={DatabaseOptions.AUTHORIZATION_HEADER.value: f"Bearer {k}"})


def connect_basic(k):
    return flight_sql.connect(uri, db_kwargs={"username": "anyone", "password": k})


def rows(conn, sql):
    with conn.cursor() as cur:
        cur.execute(sql)
        return [list(r) for r in cur.fetchall()]


with connect_bearer(key) as conn:
    out["count"] = rows(conn, "SELECT count(*) FROM logs")[0][0]
    out["bodies"] = [r[0] for r in rows(conn, "SELECT body FROM logs ORDER BY body")]
    # a prepared statement, run twice
    with conn.cursor() as cur:
        cur.adbc_prepare("SELECT service_name, count(*) AS n FROM logs GROUP BY 1 ORDER BY 1")
        cur.execute("SELECT service_name, count(*) AS n FROM logs GROUP BY 1 ORDER BY 1")
        first = [list(r) for r in cur.fetchall()]
        cur.execute("SELECT service_name, count(*) AS n FROM logs GROUP BY 1 ORDER BY 1")
        out["prepared"] = [first, [list(r) for r in cur.fetchall()]]
    # metadata as clients list it
    objects = conn.adbc_get_objects(depth="columns").read_all().to_pylist()
    out["catalogs"] = [c["catalog_name"] for c in objects]
    out["tables"] = sorted(
        t["table_name"] for c in objects for s in c["catalog_db_schemas"] for t in s["db_schema_tables"]
    )
    logs = [
        t
        for c in objects
        for s in c["catalog_db_schemas"]
        for t in s["db_schema_tables"]
        if t["table_name"] == "logs"
    ][0]
    out["logs_columns"] = [col["column_name"] for col in logs["table_columns"]][:3]
    out["table_types"] = conn.adbc_get_table_types()
    info = conn.adbc_get_info()
    out["vendor"] = info.get("vendor_name")
    # the sandbox holds: no writes, no files
    for name, sql in [
        ("ddl", "CREATE TABLE t AS SELECT 1"),
        ("file", "SELECT * FROM 'file:///etc/passwd'"),
        ("other_tenant", "SELECT * FROM tenant_b.public.logs"),
    ]:
        try:
            rows(conn, sql)
            out[name] = "allowed"
        except Exception as e:  # noqa: BLE001 - the message is what is checked
            out[name] = str(e)

with connect_basic(key) as conn:
    out["basic_count"] = rows(conn, "SELECT count(*) FROM logs")[0][0]

with connect_bearer(other_key) as conn:
    out["other_count"] = rows(conn, "SELECT count(*) FROM logs")[0][0]

for name, k in [("ingest_only", ingest_key), ("bad_key", "bhk_0123456789abcdef_" + "0" * 64)]:
    try:
        with connect_bearer(k) as conn:
            rows(conn, "SELECT 1")
        out[name] = "allowed"
    except Exception as e:  # noqa: BLE001
        out[name] = str(e)

print(json.dumps(out))
