//! The fuzz target run bounded: real requests of the APIs clients send
//! most, mutated many times over by a seeded generator. A panic fails.

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, StrBytes};
use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};

use super::request;

/// Mutated requests tried per run.
const ROUNDS: usize = 200_000;

/// A request frame (without its length): header, then body, at `version`.
fn frame<T: Encodable>(key: ApiKey, version: i16, body: &T) -> Vec<u8> {
    let header = RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(7)
        .with_client_id(Some(StrBytes::from_static_str("fuzz")));
    let mut buf = BytesMut::new();
    header.encode(&mut buf, key.request_header_version(version)).expect("header");
    body.encode(&mut buf, version).expect("body");
    buf.to_vec()
}

fn batch(compression: Compression) -> Bytes {
    let records: Vec<Record> = (0..5)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: 3,
            producer_epoch: 0,
            timestamp_type: TimestampType::Creation,
            offset: i,
            sequence: i as i32,
            timestamp: 1_700_000_000_000,
            key: Some(Bytes::from(format!("k{i}"))),
            value: Some(Bytes::from(vec![b'v'; 40])),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions { version: 2, compression };
    RecordBatchEncoder::encode(&mut buf, records.iter(), &options).expect("batch");
    buf.freeze()
}

fn seeds() -> Vec<Vec<u8>> {
    let topic = TopicName(StrBytes::from_static_str("orders"));
    let group = GroupId(StrBytes::from_static_str("g"));
    let produce = |compression| {
        let partition = produce_request::PartitionProduceData::default()
            .with_index(0)
            .with_records(Some(batch(compression)));
        let data = produce_request::TopicProduceData::default()
            .with_name(topic.clone())
            .with_partition_data(vec![partition]);
        ProduceRequest::default().with_acks(-1).with_timeout_ms(1000).with_topic_data(vec![data])
    };
    let fetch_partition = fetch_request::FetchPartition::default().with_partition(0).with_fetch_offset(5);
    let fetch_topic =
        fetch_request::FetchTopic::default().with_topic(topic.clone()).with_partitions(vec![fetch_partition]);
    let subscription = Bytes::from_static(&[0, 1, 0, 0, 0, 1, 0, 6, b'o', b'r', b'd', b'e', b'r', b's']);
    let protocol = join_group_request::JoinGroupRequestProtocol::default()
        .with_name(StrBytes::from_static_str("range"))
        .with_metadata(subscription);
    let metadata_topic = metadata_request::MetadataRequestTopic::default().with_name(Some(topic.clone()));
    vec![
        frame(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default()),
        frame(ApiKey::Metadata, 12, &MetadataRequest::default().with_topics(Some(vec![metadata_topic]))),
        frame(ApiKey::Produce, 9, &produce(Compression::None)),
        frame(ApiKey::Produce, 7, &produce(Compression::Gzip)),
        frame(ApiKey::Produce, 9, &produce(Compression::Zstd)),
        frame(ApiKey::Produce, 8, &produce(Compression::Lz4)),
        frame(ApiKey::Produce, 9, &produce(Compression::Snappy)),
        frame(
            ApiKey::Fetch,
            12,
            &FetchRequest::default().with_max_wait_ms(500).with_topics(vec![fetch_topic]),
        ),
        frame(
            ApiKey::JoinGroup,
            7,
            &JoinGroupRequest::default()
                .with_group_id(group.clone())
                .with_protocol_type(StrBytes::from_static_str("consumer"))
                .with_protocols(vec![protocol]),
        ),
        frame(
            ApiKey::ConsumerGroupHeartbeat,
            1,
            &ConsumerGroupHeartbeatRequest::default()
                .with_group_id(group)
                .with_subscribed_topic_names(Some(vec![topic.clone()])),
        ),
        frame(
            ApiKey::SaslAuthenticate,
            2,
            &SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from_static(b"\0u\0p")),
        ),
    ]
}

/// xorshift64*: a seeded generator, so a failure repeats.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One to four edits: a byte set to an edge value or at random, a bit
/// flipped, a cut, a slice repeated.
fn mutate(rng: &mut Rng, data: &mut Vec<u8>) {
    for _ in 0..=rng.below(4) {
        let at = rng.below(data.len());
        match rng.below(5) {
            0 => data[at] = [0x00, 0x7f, 0x80, 0xff][rng.below(4)],
            1 => data[at] = rng.next() as u8,
            2 => data.truncate(at),
            3 => {
                let end = (at + 1 + rng.below(16)).min(data.len());
                let piece = data[at..end].to_vec();
                data.splice(at..at, piece);
            }
            _ => data[at] ^= 1 << rng.below(8),
        }
        if data.is_empty() {
            data.push(0);
        }
    }
}

#[test]
fn the_request_decoders_never_panic_on_mutated_requests() {
    let seeds = seeds();
    for seed in &seeds {
        request(seed);
    }
    let mut rng = Rng(0x5eed_5a1e_9e37_79b9);
    for _ in 0..ROUNDS {
        let mut data = seeds[rng.below(seeds.len())].clone();
        mutate(&mut rng, &mut data);
        request(&data);
    }
}
