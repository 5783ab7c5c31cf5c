use bytes::Bytes;
use shale_core::{Header, Record};

use super::{decode_batches, encode_batch};

fn record(i: u8) -> Record {
    Record {
        timestamp_ms: 1_700_000_000_000 + i64::from(i),
        key: (!i.is_multiple_of(3)).then(|| Bytes::from(vec![i; 3])),
        value: (!i.is_multiple_of(5)).then(|| Bytes::from(vec![i; usize::from(i) * 7])),
        headers: vec![Header { key: format!("h{i}"), value: Bytes::from_static(b"v") }],
    }
}

#[test]
fn a_fetch_batch_decodes_as_a_produce_batch_with_the_same_records() {
    let records: Vec<(u64, Record)> = (0..20u8).map(|i| (100 + u64::from(i) * 2, record(i))).collect();
    let batch = encode_batch(&records).expect("encodes");
    let produced = decode_batches(batch).expect("decodes");
    assert_eq!(produced.producer, None);
    assert_eq!(produced.records.len(), records.len());
    for (p, (_, r)) in produced.records.iter().zip(&records) {
        assert_eq!(p.key, r.key);
        assert_eq!(p.value, r.value);
        assert_eq!(p.timestamp_ms, Some(r.timestamp_ms));
        assert_eq!(p.headers, r.headers);
    }
}

#[test]
fn bytes_that_are_no_record_batch_are_refused_not_panicked_on() {
    let good = encode_batch(&[(0, record(1))]).expect("encodes");
    for cut in [0, 1, 12, 20, 40, good.len() - 1] {
        let truncated = good.slice(..cut);
        if cut == 0 {
            // nothing at all decodes as no records
            assert!(decode_batches(truncated).is_ok_and(|p| p.records.is_empty()));
        } else {
            assert!(decode_batches(truncated).is_err(), "a batch cut at {cut} bytes was accepted");
        }
    }
    let mut flipped = good.to_vec();
    flipped[16] = 7; // an unknown magic byte
    assert!(decode_batches(Bytes::from(flipped)).is_err());
}

#[test]
fn kafka_topic_configs_map_onto_shales() {
    let configs = [
        ("retention.ms", Some("60000")),
        ("retention.bytes", Some("-1")),
        ("cleanup.policy", Some("compact")),
    ];
    let mapped = crate::configs::topic_config(configs.into_iter()).expect("maps");
    assert_eq!(mapped["retention_ms"], 60000);
    assert!(mapped["retention_bytes"].is_null());
    assert_eq!(mapped["cleanup_policy"], "compact");
    let unknown = [("remote.storage.enable", Some("true"))];
    assert!(crate::configs::topic_config(unknown.into_iter()).is_err());
    // what the store or Shale's segments take care of is accepted and ignored
    let ignored = [("segment.bytes", Some("1")), ("message.timestamp.type", Some("CreateTime"))];
    assert!(crate::configs::topic_config(ignored.into_iter()).is_ok_and(|m| m.is_empty()));
    let log_time = [("message.timestamp.type", Some("LogAppendTime"))];
    assert!(crate::configs::topic_config(log_time.into_iter()).is_err());
    let bad = [("retention.ms", Some("soon"))];
    assert!(crate::configs::topic_config(bad.into_iter()).is_err());
}
