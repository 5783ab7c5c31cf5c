"""Time from produce to visible in DuckDB: produces one record a second to a
running Shale (`--url`), polls the topic's archive with DuckDB every 250 ms,
and reports when each record's offset first shows up, as p50/p99/max.

    python scripts/archive-freshness.py --url http://127.0.0.1:7070 \
        --archive shale-data/objects/archive --seconds 120 --archive-after-ms 10000

Needs duckdb (scripts/test.sh installs it into ~/.cache/shale-ci/venv)."""

import argparse
import json
import threading
import time
import urllib.request

import duckdb


def post(url, body, method="POST"):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method=method,
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req) as r:
        return json.loads(r.read() or b"null")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--archive", required=True, help="the archive folder (DATA_DIR/objects/archive)")
    p.add_argument("--seconds", type=int, default=120)
    p.add_argument("--archive-after-ms", type=int, default=10000)
    a = p.parse_args()
    topic = f"fresh{int(time.time())}"
    post(f"{a.url}/v1/topics", {"name": topic, "partitions": 1, "config": {"archive_after_ms": a.archive_after_ms}})
    produced = {}  # offset -> time acknowledged
    done = threading.Event()

    def produce():
        for i in range(a.seconds):
            ack = post(f"{a.url}/v1/topics/{topic}/records", {"records": [{"value": f"r{i}"}]})
            produced[ack["offsets"][0]["offset"]] = time.time()
            time.sleep(1)
        done.set()

    threading.Thread(target=produce, daemon=True).start()
    seen = {}
    glob = f"{a.archive}/topic={topic}/*/*.parquet"
    deadline = time.time() + a.seconds + 3 * a.archive_after_ms / 1000 + 30
    while time.time() < deadline:
        try:
            rows = duckdb.sql(f"SELECT \"offset\" FROM read_parquet('{glob}', hive_partitioning = true)").fetchall()
        except duckdb.Error:
            rows = []
        now = time.time()
        for (o,) in rows:
            seen.setdefault(o, now)
        if done.is_set() and all(o in seen for o in produced):
            break
        time.sleep(0.25)
    lags = sorted(seen[o] - t for o, t in produced.items() if o in seen)
    missing = [o for o in produced if o not in seen]
    pick = lambda q: lags[min(len(lags) - 1, int(q * len(lags)))]
    print(json.dumps({"records": len(produced), "visible": len(lags), "missing": len(missing),
                      "archive_after_ms": a.archive_after_ms,
                      "p50_s": round(pick(0.5), 2), "p99_s": round(pick(0.99), 2), "max_s": round(lags[-1], 2)}))


if __name__ == "__main__":
    main()
