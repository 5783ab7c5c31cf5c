use std::sync::Arc;

use bytes::Bytes;
use futures::future::try_join_all;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use shale_controller_client::{ChunkFormat, ChunkRef, ChunkSpan};
use shale_core::Record;
use shale_core::segment::{ChunkLocation, ChunkReadError, Compression, SegmentWriter, read_chunk};
use shale_core::store::{MeteredStore, Op, StoreMetrics};

use super::SharedReads;

const PARTITIONS: u32 = 4;

fn record(segment: usize, partition: u32, i: usize) -> Record {
    Record {
        timestamp_ms: 1_700_000_000_000 + i as i64,
        key: Some(Bytes::from(format!("k{partition}"))),
        value: Some(Bytes::from(format!("segment {segment} partition {partition} record {i}").repeat(40))),
        headers: Vec::new(),
    }
}

/// `segments` objects of one chunk per partition; the spans of each
/// partition, in commit order.
async fn segments(store: &dyn ObjectStore, segments: usize) -> Vec<Vec<ChunkSpan>> {
    let mut spans = vec![Vec::new(); PARTITIONS as usize];
    for s in 0..segments {
        let mut writer = SegmentWriter::new(Compression::Zstd);
        for p in 0..PARTITIONS {
            let records: Vec<Record> = (0..20).map(|i| record(s, p, i)).collect();
            writer.add_chunk("t", p, &records).expect("chunk");
        }
        let segment = writer.finish();
        let object = format!("segments/{s:04}.seg");
        store.put(&Path::from(object.as_str()), PutPayload::from(segment.bytes)).await.expect("put");
        for entry in &segment.chunks {
            spans[entry.partition as usize].push(ChunkSpan {
                base_offset: 20 * s as u64,
                chunk: ChunkRef {
                    object: object.clone(),
                    position: entry.position,
                    len: entry.len,
                    record_count: entry.record_count,
                    max_timestamp_ms: entry.max_timestamp_ms,
                    committed_ms: 0,
                    format: ChunkFormat::Segment,
                },
            });
        }
    }
    spans
}

fn at(span: &ChunkSpan) -> ChunkLocation<'_> {
    ChunkLocation {
        object: &span.chunk.object,
        position: span.chunk.position,
        len: span.chunk.len,
        record_count: span.chunk.record_count,
    }
}

fn metered() -> (Arc<dyn ObjectStore>, StoreMetrics) {
    let metrics = StoreMetrics::default();
    (Arc::new(MeteredStore::new(Arc::new(InMemory::new()), metrics.clone())), metrics)
}

fn is_idle(reads: &SharedReads) -> bool {
    let state = reads.state();
    state.objects.is_empty() && state.held == 0
}

#[tokio::test]
async fn partitions_read_together_share_one_get_per_segment_and_get_their_own_records() {
    let (store, metrics) = metered();
    let spans = segments(store.as_ref(), 6).await;
    let before = metrics.requests(Op::Get);
    let reads = SharedReads::new(store.clone());
    let registrations: Vec<_> = spans.iter().map(|s| reads.register(s)).collect();
    let per_partition = spans.iter().zip(&registrations).map(|(spans, registration)| async move {
        let mut records = Vec::new();
        for span in spans {
            records.push(registration.read(at(span)).await?);
        }
        Ok::<_, ChunkReadError>(records)
    });
    let shared = try_join_all(per_partition).await.expect("shared reads");
    assert_eq!(metrics.requests(Op::Get) - before, 6, "one GET per segment for all four partitions");
    for (partition, spans) in spans.iter().enumerate() {
        for (segment, span) in spans.iter().enumerate() {
            let alone = read_chunk(store.as_ref(), at(span)).await.expect("a read alone");
            assert_eq!(shared[partition][segment], alone, "partition {partition}, segment {segment}");
        }
    }
    drop(registrations);
    assert!(is_idle(&reads), "every fetch is let go once read");
}

#[tokio::test]
async fn a_registration_dropped_unread_lets_its_fetches_go() {
    let (store, metrics) = metered();
    let spans = segments(store.as_ref(), 3).await;
    let reads = SharedReads::new(store.clone());
    let first = reads.register(&spans[0]);
    let second = reads.register(&spans[1]);
    first.read(at(&spans[0][0])).await.expect("read");
    assert!(!is_idle(&reads), "the second partition's chunk is kept for it");
    drop(second);
    drop(first);
    assert!(is_idle(&reads));
    // nothing registered: each read is its own GET
    let before = metrics.requests(Op::Get);
    let lone = reads.register(&[]);
    lone.read(at(&spans[2][1])).await.expect("read");
    assert_eq!(metrics.requests(Op::Get) - before, 1);
    assert!(is_idle(&reads));
}

#[tokio::test]
async fn a_missing_segment_fails_every_reader_and_is_not_kept() {
    let (store, _) = metered();
    let spans = segments(store.as_ref(), 2).await;
    store.delete(&Path::from(spans[0][0].chunk.object.as_str())).await.expect("delete");
    let reads = SharedReads::new(store.clone());
    let (a, b) = (reads.register(&spans[0]), reads.register(&spans[1]));
    let (ra, rb) = tokio::join!(a.read(at(&spans[0][0])), b.read(at(&spans[1][0])));
    assert!(matches!(ra, Err(ChunkReadError::Gone(_))), "{ra:?}");
    assert!(matches!(rb, Err(ChunkReadError::Gone(_))), "{rb:?}");
    // the next segment still reads, and afterwards nothing is held
    assert_eq!(a.read(at(&spans[0][1])).await.expect("read").len(), 20);
    assert_eq!(b.read(at(&spans[1][1])).await.expect("read").len(), 20);
    drop((a, b));
    assert!(is_idle(&reads));
}

#[tokio::test]
async fn a_corrupt_chunk_in_a_shared_get_fails_only_its_reader() {
    let (store, _) = metered();
    let spans = segments(store.as_ref(), 1).await;
    let object = Path::from(spans[0][0].chunk.object.as_str());
    let mut bytes = store.get(&object).await.expect("get").bytes().await.expect("bytes").to_vec();
    let inside_second = spans[1][0].chunk.position as usize + 40;
    bytes[inside_second] ^= 0xff;
    store.put(&object, PutPayload::from(bytes)).await.expect("put");
    let reads = SharedReads::new(store.clone());
    let (a, b) = (reads.register(&spans[0]), reads.register(&spans[1]));
    assert_eq!(a.read(at(&spans[0][0])).await.expect("partition 0 is intact").len(), 20);
    let corrupt = b.read(at(&spans[1][0])).await;
    assert!(matches!(corrupt, Err(ChunkReadError::Corrupt { .. })), "{corrupt:?}");
}

#[tokio::test]
async fn a_partition_that_never_reads_holds_no_more_than_the_cap() {
    let (store, metrics) = metered();
    let spans = segments(store.as_ref(), 12).await;
    let segment_bytes = u64::from(spans.iter().map(|s| s[0].chunk.len).sum::<u32>());
    // room for about three segments' worth of shared fetches
    let reads = SharedReads::with_max_held(store.clone(), 3 * segment_bytes);
    let (reader, idle) = (reads.register(&spans[0]), reads.register(&spans[1]));
    let before = metrics.requests(Op::Get);
    for span in &spans[0] {
        assert_eq!(reader.read(at(span)).await.expect("read").len(), 20);
        let held = reads.state().held;
        assert!(held <= 3 * segment_bytes, "{held} bytes held, over the cap");
    }
    assert_eq!(metrics.requests(Op::Get) - before, 12, "past the cap each read still GETs once");
    drop(idle);
    drop(reader);
    assert!(is_idle(&reads));
}
