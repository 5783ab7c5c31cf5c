"""Shale's Kafka listener against kafka-python: a gzip round trip, a
consumer group that commits, and a restart that resumes from the commit.
Run by tests/tests/kafka.rs with KAFKA_BOOTSTRAP (and KAFKA_CONFIG as JSON)."""
import json
import os
import time

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

BOOTSTRAP = os.environ["KAFKA_BOOTSTRAP"]
EXTRA = json.loads(os.environ.get("KAFKA_CONFIG", "{}"))
RUN = str(time.time_ns())[-9:]
topic, group = "kp-" + RUN, "kp-group-" + RUN

admin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP, **EXTRA)
admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
assert topic in admin.list_topics(), admin.list_topics()

producer = KafkaProducer(bootstrap_servers=BOOTSTRAP, compression_type="gzip", acks="all", **EXTRA)
sent = {}
for i in range(50):
    md = producer.send(topic, key=f"k{i}".encode(), value=f"v{i}".encode(), headers=[("i", str(i).encode())]).get(timeout=30)
    sent[(md.partition, md.offset)] = (f"k{i}".encode(), f"v{i}".encode(), [("i", str(i).encode())])
producer.close()


def consume(expected):
    c = KafkaConsumer(topic, bootstrap_servers=BOOTSTRAP, group_id=group, auto_offset_reset="earliest",
                      enable_auto_commit=False, consumer_timeout_ms=20000, **EXTRA)
    got = []
    for m in c:
        got.append(m)
        if len(got) == expected:
            break
    c.commit()
    c.close()
    return got


got = consume(50)
assert len(got) == 50, len(got)
for m in got:
    assert sent[(m.partition, m.offset)] == (m.key, m.value, list(m.headers)), m
# the commit holds: a new consumer of the group sees only what came after
producer = KafkaProducer(bootstrap_servers=BOOTSTRAP, **EXTRA)
producer.send(topic, key=b"late", value=b"late", partition=1).get(timeout=30)
producer.close()
later = consume(1)
assert [m.value for m in later] == [b"late"], [m.value for m in later]
print("kafka-python: gzip round trip of 50 records, group commit and resume")
