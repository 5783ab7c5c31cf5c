"""Shale's Kafka listener against librdkafka (confluent-kafka).

Run by tests/tests/kafka.rs with KAFKA_BOOTSTRAP and SHALE_URL set; every
check raises AssertionError with what differed. Extra settings for every
client (SASL, TLS) come as JSON in KAFKA_CONFIG; SHALE_TOKEN and SHALE_CA
are for the HTTP calls.
"""
import json
import os
import ssl
import sys
import time
import urllib.request

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

BOOTSTRAP = os.environ["KAFKA_BOOTSTRAP"]
SHALE = os.environ["SHALE_URL"]
EXTRA = json.loads(os.environ.get("KAFKA_CONFIG", "{}"))
HTTP_TOKEN = os.environ.get("SHALE_TOKEN")
# topics and groups of one run are new: a rerun against the same server starts afresh
RUN = str(time.time_ns())[-9:]


def conf(**kw):
    c = {"bootstrap.servers": BOOTSTRAP, **EXTRA}
    c.update(kw)
    return c


def http(method, path, body=None):
    req = urllib.request.Request(SHALE + path, method=method)
    if body is not None:
        req.data = json.dumps(body).encode()
        req.add_header("content-type", "application/json")
    if HTTP_TOKEN:
        req.add_header("authorization", "Bearer " + HTTP_TOKEN)
    context = ssl.create_default_context(cafile=os.environ["SHALE_CA"]) if os.environ.get("SHALE_CA") else None
    with urllib.request.urlopen(req, timeout=30, context=context) as r:
        data = r.read()
        return json.loads(data) if data else None


def create_topic(name, partitions):
    admin = AdminClient(conf())
    futures = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
    futures[name].result(timeout=30)


def produce(topic, records, **settings):
    """records: (key, value, headers, partition); answers (partition, offset, key) as delivered."""
    delivered = []
    errors = []

    def report(err, msg):
        if err is not None:
            errors.append(err)
        else:
            delivered.append((msg.partition(), msg.offset(), msg.key()))

    p = Producer(conf(**settings))
    for key, value, headers, partition in records:
        kw = {"key": key, "value": value, "headers": headers, "on_delivery": report}
        if partition is not None:
            kw["partition"] = partition
        p.produce(topic, **kw)
    left = p.flush(30)
    assert left == 0 and not errors, f"undelivered {left}, errors {errors}"
    return delivered


def consume_all(topic, expected, group=None, **settings):
    c = Consumer(conf(**{"group.id": group or f"reader-{time.time_ns()}", "auto.offset.reset": "earliest",
                         "enable.auto.commit": False, **settings}))
    c.subscribe([topic])
    got = []
    deadline = time.time() + 60
    while len(got) < expected and time.time() < deadline:
        m = c.poll(0.5)
        if m is None:
            continue
        assert m.error() is None or m.error().code() == KafkaError._PARTITION_EOF, m.error()
        if m.error() is None:
            got.append(m)
    c.close()
    assert len(got) == expected, f"read {len(got)} of {expected}"
    return got


def round_trips():
    """Every compression codec, keys, null values, headers, binary bytes."""
    topic = "rt-confluent-" + RUN
    create_topic(topic, 3)
    sent = {}
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"]:
        records = [
            (f"{codec}-{i}".encode(), bytes([i % 256]) * (i * 37 % 3000) + codec.encode(), [("h", b"v"), ("n", str(i).encode())], None)
            for i in range(40)
        ]
        records.append((f"{codec}-tomb".encode(), None, [], None))
        by_key = {r[0]: r for r in records}
        for p, o, key in produce(topic, records, **{"compression.type": codec, "linger.ms": 20}):
            sent[(p, o)] = by_key[key]
    got = consume_all(topic, len(sent))
    for m in got:
        key, value, headers, _ = sent[(m.partition(), m.offset())]
        assert m.key() == key and m.value() == value, (m.key(), key)
        assert [(k, v) for k, v in (m.headers() or [])] == headers, (m.headers(), headers)
    # the same records over HTTP: same offsets, keys, values, headers, timestamps
    for m in got[:20]:
        r = http("GET", f"/v1/topics/{topic}/partitions/{m.partition()}/records?offset={m.offset()}&max_records=1&encoding=base64")
        rec = r["records"][0]
        import base64
        assert rec["offset"] == m.offset()
        assert base64.b64decode(rec["key"]) == m.key()
        assert (rec["value"] is None and m.value() is None) or base64.b64decode(rec["value"]) == m.value()
        assert rec["timestamp_ms"] == m.timestamp()[1], (rec["timestamp_ms"], m.timestamp())
        assert [(h["key"], base64.b64decode(h["value"])) for h in rec["headers"]] == list(m.headers() or [])
    print(f"round trips: {len(sent)} records over 5 codecs agree over Kafka and HTTP")


def http_to_kafka():
    """Records produced over HTTP read back identically over Kafka."""
    topic = "from-http-" + RUN
    http("POST", "/v1/topics", {"name": topic, "partitions": 1})
    body = {"records": [{"key": "k1", "value": "v1", "headers": [{"key": "a", "value": "b"}], "timestamp_ms": 1700000000123},
                        {"key": "k2", "value": None}]}
    acks = http("POST", f"/v1/topics/{topic}/records", body)["offsets"]
    got = consume_all(topic, 2)
    assert [m.offset() for m in got] == [a["offset"] for a in acks]
    assert got[0].key() == b"k1" and got[0].value() == b"v1" and got[0].headers() == [("a", b"b")]
    assert got[0].timestamp()[1] == 1700000000123
    assert got[1].value() is None
    print("http to kafka: offsets, keys, values, headers, timestamps and tombstones agree")


def idempotent():
    topic = "idempotent-" + RUN
    create_topic(topic, 2)
    delivered = produce(topic, [(f"k{i}".encode(), f"v{i}".encode(), [], i % 2) for i in range(200)],
                        **{"enable.idempotence": True, "acks": "all", "linger.ms": 5})
    assert len({(p, o) for p, o, _ in delivered}) == 200
    got = consume_all(topic, 200)
    assert sorted(m.value() for m in got) == sorted(f"v{i}".encode() for i in range(200))
    print("idempotent producer: 200 records, each once")


def group_rebalance(kip848=False):
    """Three members share the partitions; one leaves, one joins; commits resume.

    Under Kafka's classic protocol (the range assignor, run by the leader)
    or KIP-848's (group.protocol=consumer: Shale's controller assigns)."""
    kind = "848-" if kip848 else ""
    topic, group = f"grouped-{kind}{RUN}", f"g-confluent-{kind}{RUN}"
    create_topic(topic, 6)
    produce(topic, [(None, f"r{i}".encode(), [], i % 6) for i in range(60)])
    settings = {"group.id": group, "auto.offset.reset": "earliest", "enable.auto.commit": False}
    if kip848:
        # the broker sets sessions and assigns; librdkafka refuses those settings here
        settings["group.protocol"] = "consumer"
    else:
        settings.update({"session.timeout.ms": 6000, "heartbeat.interval.ms": 300,
                         "partition.assignment.strategy": "range"})
    members = [Consumer(conf(**settings)) for _ in range(3)]
    for m in members:
        m.subscribe([topic])

    read = set()

    def settle(ms, want, rounds=400):
        """Polls (reading and committing) until the members own `want` partitions each."""
        for _ in range(rounds):
            for m in ms:
                msg = m.poll(0.05)
                if msg is not None and msg.error() is None:
                    read.add(msg.value())
                    m.commit(msg, asynchronous=False)
            sizes = [len(m.assignment()) for m in ms]
            owned = [tp.partition for m in ms for tp in m.assignment()]
            if sorted(sizes) == want and len(set(owned)) == sum(want):
                return sizes
        raise AssertionError(f"no settled assignment: {[len(m.assignment()) for m in ms]}")

    settle(members, [2, 2, 2])
    members[2].close()
    settle(members[:2], [3, 3])
    joined = Consumer(conf(**settings))
    joined.subscribe([topic])
    members = members[:2] + [joined]
    settle(members, [2, 2, 2])
    # read everything, committing, then stop every member
    deadline = time.time() + 60
    while len(read) < 60 and time.time() < deadline:
        for m in members:
            msg = m.poll(0.05)
            if msg is not None and msg.error() is None:
                read.add(msg.value())
                m.commit(msg, asynchronous=False)
    for m in members:
        m.close()
    assert len(read) == 60, f"the group read {len(read)} of 60"
    # the group's offsets, as HTTP shows them, are the ends of the partitions
    offsets = {o["partition"]: o["offset"] for o in http("GET", f"/v1/groups/{group}/offsets")["offsets"]}
    assert offsets == {p: 10 for p in range(6)}, offsets
    # a restart resumes from the committed offsets: only new records arrive
    produce(topic, [(None, b"after-restart", [], 0)])
    c = Consumer(conf(**settings))
    c.subscribe([topic])
    got = []
    deadline = time.time() + 30
    while not got and time.time() < deadline:
        msg = c.poll(0.2)
        if msg is not None and msg.error() is None:
            got.append(msg)
    c.close()
    assert [m.value() for m in got] == [b"after-restart"], [m.value() for m in got]
    protocol = "KIP-848" if kip848 else "classic"
    print(f"group ({protocol}): 3 members share 6 partitions, rebalance on leave and on join, resume from commits")


def errors():
    """A topic that does not exist answers an error, not a dropped connection."""
    p = Producer(conf(**{"message.timeout.ms": 3000}))
    failures = []
    p.produce("no-such-topic", b"x", on_delivery=lambda err, msg: failures.append(err))
    p.flush(10)
    assert failures and failures[0] is not None, failures
    md = AdminClient(conf()).list_topics(topic="no-such-topic", timeout=10)
    assert md.topics["no-such-topic"].error is not None
    print(f"unknown topic: {failures[0].name()}")


def refused():
    """With bad credentials nothing is listed: the call fails within its timeout."""
    try:
        AdminClient(conf()).list_topics(timeout=5)
    except Exception as e:  # librdkafka's KafkaException for a failed broker
        print(f"refused: {e}")
        return
    raise AssertionError("topics were listed")


def revoked():
    """A token revoked over HTTP stops working on a Kafka connection already open."""
    topic, name = "revoked-" + RUN, "kafka-app-" + RUN
    create_topic(topic, 1)
    token = http("POST", "/v1/tokens", {"name": name, "grants": [{"operation": "produce", "topic": topic}]})["token"]
    p = Producer(conf(**{"sasl.password": token, "message.timeout.ms": 5000, "retries": 0}))
    outcomes = []
    p.produce(topic, b"before", on_delivery=lambda err, msg: outcomes.append(err))
    p.flush(15)
    assert outcomes == [None], outcomes
    http("DELETE", f"/v1/tokens/{name}")
    time.sleep(1.5)  # gateways refresh their token cache every second
    p.produce(topic, b"after", on_delivery=lambda err, msg: outcomes.append(err))
    p.flush(15)
    assert len(outcomes) == 2 and outcomes[1] is not None, outcomes
    assert outcomes[1].name() == "SASL_AUTHENTICATION_FAILED", outcomes[1]
    print(f"revoked token: {outcomes[1].name()}")


CHECKS = {"refused": refused, "revoked": revoked, "round_trips": round_trips, "http_to_kafka": http_to_kafka, "idempotent": idempotent,
          "group_rebalance": group_rebalance, "group_rebalance_848": lambda: group_rebalance(kip848=True),
          "errors": errors}

if __name__ == "__main__":
    for name in sys.argv[1:] or CHECKS:
        CHECKS[name]()
