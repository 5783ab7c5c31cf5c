"""Reads a Shale topic's Parquet archive the way docs/ARCHIVE.md shows, with
DuckDB (and its httpfs extension loaded from the installed PyPI package, never
downloaded) or with pyarrow, and prints one JSON object per record:
{"topic_id", "partition", "offset", "timestamp_us", "key", "value", "headers"},
bytes as base64, ordered by partition and offset."""

import argparse
import base64
import json
import os
import sys


def b64(b):
    return None if b is None else base64.b64encode(bytes(b)).decode()


def row(topic_id, partition, offset, timestamp_us, key, value, headers):
    return {
        "topic_id": topic_id,
        "partition": int(partition),
        "offset": int(offset),
        "timestamp_us": int(timestamp_us),
        "key": b64(key),
        "value": b64(value),
        "headers": [[h["key"], b64(h["value"])] for h in headers],
    }


def with_duckdb(a):
    import duckdb

    con = duckdb.connect()
    if a.root.startswith("s3://"):
        import duckdb_extension_httpfs

        ext = os.path.join(
            os.path.dirname(duckdb_extension_httpfs.__file__),
            "extensions",
            "v" + duckdb.__version__,
            "httpfs.duckdb_extension",
        )
        con.execute(f"LOAD '{ext}'")
        # the documented secret for a path-style endpoint (Garage, MinIO)
        con.execute(
            f"""CREATE SECRET shale (
                TYPE s3, KEY_ID '{a.key_id}', SECRET '{a.secret}', REGION '{a.region}',
                ENDPOINT '{a.endpoint}', URL_STYLE 'path', USE_SSL false)"""
        )
    # the documented query
    query = f"""SELECT * FROM read_parquet('{a.root}/archive/topic={a.topic}/*/*.parquet', hive_partitioning = true)"""
    # the incarnation, from each file's footer
    ids = dict(
        con.execute(
            f"""SELECT file_name, decode(value) FROM parquet_kv_metadata('{a.root}/archive/topic={a.topic}/*/*.parquet')
                WHERE decode(key) = 'shale.topic_id'"""
        ).fetchall()
    )
    rel = con.sql(
        f"""SELECT filename, partition, "offset", epoch_us("timestamp"), "key", "value", headers
            FROM read_parquet('{a.root}/archive/topic={a.topic}/*/*.parquet', hive_partitioning = true, filename = true)"""
    )
    assert con.sql(query).columns[:5] == ["offset", "timestamp", "key", "value", "headers"]
    out = []
    for filename, partition, offset, ts, key, value, headers in rel.fetchall():
        out.append(row(int(ids[filename]), partition, offset, ts, key, value, headers))
    return out


def with_pyarrow(a):
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq
    from pyarrow import fs

    path = a.root
    filesystem = None
    if a.root.startswith("s3://"):
        filesystem = fs.S3FileSystem(
            access_key=a.key_id,
            secret_key=a.secret,
            region=a.region,
            endpoint_override=a.endpoint,
            scheme="http",
        )
        path = a.root[len("s3://"):]
    base = f"{path}/archive/topic={a.topic}"
    dataset = ds.dataset(base, format="parquet", partitioning="hive", filesystem=filesystem)
    out = []
    for fragment in dataset.get_fragments():
        meta = pq.ParquetFile(fragment.path, filesystem=filesystem).metadata.metadata
        topic_id = int(meta[b"shale.topic_id"])
        partition = int(fragment.path.split("/partition=")[1].split("/")[0])
        table = fragment.to_table()
        ts = table.column("timestamp").cast("int64").to_pylist()
        for i, r in enumerate(table.to_pylist()):
            out.append(row(topic_id, partition, r["offset"], ts[i], r["key"], r["value"], r["headers"]))
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--engine", choices=["duckdb", "pyarrow"], required=True)
    p.add_argument("--root", required=True, help="a local folder or s3://bucket/prefix")
    p.add_argument("--topic", required=True)
    p.add_argument("--endpoint", default="")
    p.add_argument("--region", default="")
    p.add_argument("--key-id", default="")
    p.add_argument("--secret", default="")
    a = p.parse_args()
    rows = with_duckdb(a) if a.engine == "duckdb" else with_pyarrow(a)
    rows.sort(key=lambda r: (r["partition"], r["offset"]))
    json.dump(rows, sys.stdout)


if __name__ == "__main__":
    main()
