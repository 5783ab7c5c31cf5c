use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{LogicalType, TimeUnit as ParquetTimeUnit, TimestampType};
use proptest::prelude::*;

use super::*;

fn arb_record() -> impl Strategy<Value = Record> {
    (
        MIN_TS..=MAX_TS,
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..32)),
        proptest::option::weighted(0.8, proptest::collection::vec(any::<u8>(), 0..256)),
        // duplicate header keys and unicode keys both kept, in order
        proptest::collection::vec(("[a-zé😀]{0,4}", proptest::collection::vec(any::<u8>(), 0..8)), 0..4),
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

const MIN_TS: i64 = crate::record::MIN_TIMESTAMP_MS;
const MAX_TS: i64 = crate::record::MAX_TIMESTAMP_MS;

fn topic() -> TopicName {
    TopicName::new("orders".to_owned()).expect("valid name")
}

/// Writes `records` from `base` as one archive file, in memory.
fn write_file(base: Offset, records: &[Record]) -> Bytes {
    let mut out = Vec::new();
    let props = writer_properties(&topic(), 7, 3);
    let mut writer = ArrowWriter::try_new(&mut out, schema(), Some(props)).expect("writer");
    let mut batch = BatchBuilder::default();
    for (i, r) in records.iter().enumerate() {
        batch.push(base + i as u64, r);
        if batch.rows() == 5 {
            writer.write(&batch.finish().expect("batch")).expect("write");
        }
    }
    writer.write(&batch.finish().expect("batch")).expect("write");
    writer.close().expect("close");
    Bytes::from(out)
}

fn read_file(file: Bytes) -> Vec<(Offset, Record)> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(file).expect("footer").build().expect("reader");
    reader.flat_map(|b| decode_batch(&b.expect("batch")).expect("decodes")).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn records_round_trip(base in 0u64..1 << 40, records in proptest::collection::vec(arb_record(), 0..40)) {
        let back = read_file(write_file(base, &records));
        prop_assert_eq!(back.len(), records.len());
        for (i, ((offset, got), want)) in back.iter().zip(&records).enumerate() {
            prop_assert_eq!(*offset, base + i as u64);
            prop_assert_eq!(got, want);
        }
    }
}

#[test]
fn the_file_is_the_documented_contract() {
    let records = vec![
        Record { timestamp_ms: 1_700_000_000_123, key: None, value: None, headers: vec![] },
        Record {
            timestamp_ms: 1,
            key: Some(Bytes::from_static(b"k")),
            value: Some(Bytes::new()),
            headers: vec![
                Header { key: "h".into(), value: Bytes::from_static(b"1") },
                Header { key: "h".into(), value: Bytes::from_static(b"2") },
            ],
        },
    ];
    let file = write_file(10, &records);
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).expect("footer");
    let meta = builder.metadata().clone();
    let descr = meta.file_metadata().schema_descr();
    let names: Vec<&str> = descr.root_schema().get_fields().iter().map(|f| f.name()).collect();
    assert_eq!(names, ["offset", "timestamp", "key", "value", "headers"]);
    assert_eq!(
        descr.column(1).logical_type_ref(),
        Some(&LogicalType::Timestamp(TimestampType {
            is_adjusted_to_u_t_c: true,
            unit: ParquetTimeUnit::MICROS
        }))
    );
    let kv = meta.file_metadata().key_value_metadata().expect("footer metadata");
    let get = |k: &str| kv.iter().find(|e| e.key == k).and_then(|e| e.value.clone());
    assert_eq!(get(META_TOPIC).as_deref(), Some("orders"));
    assert_eq!(get(META_TOPIC_ID).as_deref(), Some("7"));
    assert_eq!(get(META_PARTITION).as_deref(), Some("3"));
    let group = meta.row_group(0);
    let sorting = group.sorting_columns().expect("sorting columns");
    assert_eq!(sorting[0].column_idx, 0);
    assert!(group.column(0).statistics().is_some(), "statistics on offset");
    assert!(group.column(2).bloom_filter_offset().is_some(), "a bloom filter on key");
    assert!(group.column(0).offset_index_offset().is_some(), "the page index");
    assert!(matches!(group.column(3).compression(), parquet::basic::Compression::ZSTD(_)));
    let back = read_file(write_file(10, &records));
    assert_eq!(back.iter().map(|(o, _)| *o).collect::<Vec<_>>(), [10, 11]);
    assert_eq!(back[0].1.value, None, "a tombstone stays null");
    assert_eq!(back[1].1.value, Some(Bytes::new()), "an empty value stays empty");
}

#[test]
fn keys_sort_by_offset() {
    let a = archive_key(&topic(), 2, 9, 99);
    let b = archive_key(&topic(), 2, 100, 100);
    assert_eq!(
        a.as_ref(),
        "archive/topic=orders/partition=2/00000000000000000009-00000000000000000099.parquet"
    );
    assert!(a.as_ref() < b.as_ref());
}

#[test]
fn cleaned_files_get_new_names_with_their_generation() {
    let plain = archive_key(&topic(), 2, 9, 99);
    let cleaned = cleaned_key(&topic(), 2, 9, 99, 3);
    assert_eq!(
        cleaned.as_ref(),
        "archive/topic=orders/partition=2/00000000000000000009-00000000000000000099.c3.parquet"
    );
    assert_eq!((generation(plain.as_ref()), generation(cleaned.as_ref())), (0, 3));
    assert_eq!(generation("archive/topic=a.c9/partition=0/x.parquet"), 0, "only the file name counts");
}

#[test]
fn foreign_files_are_refused_not_panicked_on() {
    let schema = Arc::new(Schema::new(vec![Field::new("offset", DataType::Utf8, false)]));
    let batch = RecordBatch::try_new(schema, vec![Arc::new(StringArray::from(vec!["x"]))]).expect("batch");
    assert!(matches!(decode_batch(&batch), Err(ArchiveError::Schema(_))));
    assert!(ParquetRecordBatchReaderBuilder::try_new(Bytes::from_static(b"PAR1garbagePAR1")).is_err());
}
