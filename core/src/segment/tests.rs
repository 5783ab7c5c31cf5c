use bytes::Bytes;
use proptest::prelude::*;

use super::*;

fn arb_record() -> impl Strategy<Value = Record> {
    (
        any::<i64>(),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..32)),
        // tombstones (no value) and empty values both round-trip, distinctly
        proptest::option::weighted(0.9, proptest::collection::vec(any::<u8>(), 0..256)),
        proptest::collection::vec(("[a-z]{0,8}", proptest::collection::vec(any::<u8>(), 0..8)), 0..3),
    )
        .prop_map(|(ts, key, value, headers)| Record {
            timestamp_ms: ts,
            key: key.map(Bytes::from),
            value: value.map(Bytes::from),
            headers: headers
                .into_iter()
                .map(|(key, value)| Header { key, value: Bytes::from(value) })
                .collect(),
        })
}

fn arb_chunks() -> impl Strategy<Value = Vec<(String, u32, Vec<Record>)>> {
    proptest::collection::vec(("[a-z]{1,8}", 0u32..64, proptest::collection::vec(arb_record(), 1..20)), 1..6)
}

fn build(chunks: &[(String, u32, Vec<Record>)], compression: Compression) -> Segment {
    let mut w = SegmentWriter::new(compression);
    for (topic, partition, records) in chunks {
        w.add_chunk(topic, *partition, records).expect("chunk encodes");
    }
    w.finish()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn round_trip(chunks in arb_chunks(), zstd in any::<bool>()) {
        let compression = if zstd { Compression::Zstd } else { Compression::None };
        let segment = build(&chunks, compression);
        let decoded = decode_segment(&segment.bytes).expect("decodes");
        prop_assert_eq!(decoded.len(), chunks.len());
        for ((entry, records), (topic, partition, want)) in decoded.iter().zip(&chunks) {
            prop_assert_eq!(&entry.topic, topic);
            prop_assert_eq!(entry.partition, *partition);
            prop_assert_eq!(records, want);
        }
        prop_assert_eq!(read_directory(&segment.bytes).expect("dir"), segment.chunks);
    }

    #[test]
    fn varint_len_matches_the_encoding(v in any::<i64>()) {
        let mut buf = Vec::new();
        crate::varint::put_varint(&mut buf, v);
        prop_assert_eq!(varint_len(v), buf.len());
    }

    #[test]
    fn arbitrary_bytes_are_an_error_not_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let bytes = Bytes::from(bytes);
        prop_assert!(decode_segment(&bytes).is_err());
        prop_assert!(decode_chunk(bytes).is_err());
    }

    #[test]
    fn a_flipped_bit_is_detected(chunks in arb_chunks(), pick in any::<prop::sample::Index>(), bit in 0u8..8) {
        let segment = build(&chunks, Compression::Zstd);
        let mut bytes = segment.bytes.to_vec();
        let at = pick.index(bytes.len());
        bytes[at] ^= 1 << bit;
        prop_assert!(decode_segment(&Bytes::from(bytes)).is_err());
    }

    #[test]
    fn a_truncated_segment_is_detected(chunks in arb_chunks(), pick in any::<prop::sample::Index>()) {
        let segment = build(&chunks, Compression::None);
        let cut = pick.index(segment.bytes.len());
        prop_assert!(decode_segment(&segment.bytes.slice(..cut)).is_err());
    }

    #[test]
    fn a_chunk_flip_is_detected(chunks in arb_chunks(), pick in any::<prop::sample::Index>(), bit in 0u8..8) {
        let segment = build(&chunks, Compression::None);
        let entry = &segment.chunks[0];
        let start = entry.position as usize;
        let mut chunk = segment.bytes.slice(start..start + entry.len as usize).to_vec();
        let at = pick.index(chunk.len());
        chunk[at] ^= 1 << bit;
        prop_assert!(decode_chunk(Bytes::from(chunk)).is_err());
    }
}

#[test]
fn compressible_data_is_compressed() {
    let records: Vec<Record> = (0..100)
        .map(|i| Record { timestamp_ms: i, value: Some(Bytes::from(vec![b'a'; 1000])), ..Record::default() })
        .collect();
    let segment = build(&[("t".into(), 0, records.clone())], Compression::Zstd);
    assert!(segment.bytes.len() < 10_000, "zstd should shrink 100 KB of 'a': {}", segment.bytes.len());
    let decoded = decode_segment(&segment.bytes).expect("decodes");
    assert_eq!(decoded[0].1, records);
}

#[test]
fn empty_chunk_is_refused() {
    let mut w = SegmentWriter::new(Compression::None);
    assert!(w.add_chunk("t", 0, &[]).is_err());
}
