//! Group commit through a real single-node controller: segments written
//! while an earlier segment's PUT is still out are committed with it, in
//! flush order, and a failed PUT among them refuses only its own producer.

use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use futures::stream::BoxStream;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, PutMultipartOptions,
    PutOptions, PutPayload, PutResult, Result,
};
use shale_controller::{ControllerNode, NodeConfig};
use shale_controller_client::TopicConfig;
use shale_core::SystemClock;

use super::*;
use crate::reader::new_cache;

/// An in-memory store whose first PUT waits for the test to release it, and
/// whose PUT number `fail` (counting from 0) fails.
#[derive(Debug)]
struct GatedStore {
    inner: InMemory,
    gate: Mutex<Option<oneshot::Receiver<()>>>,
    fail: Option<usize>,
    /// PUTs begun, and PUTs answered.
    started: AtomicUsize,
    answered: AtomicUsize,
}

impl fmt::Display for GatedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Gated({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for GatedStore {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        let n = self.started.fetch_add(1, Ordering::SeqCst);
        let gate = self.gate.lock().expect("gate").take();
        if let Some(gate) = gate {
            let _ = gate.await;
        }
        let result = if self.fail == Some(n) {
            Err(object_store::Error::Generic { store: "gated", source: "injected".into() })
        } else {
            self.inner.put_opts(location, payload, opts).await
        };
        self.answered.fetch_add(1, Ordering::SeqCst);
        result
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

async fn until(what: &str, check: impl Fn() -> bool) {
    for _ in 0..500 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting until {what}");
}

/// Four produces, each flushed alone while the first PUT is held: the first
/// is the head of the commit queue, the rest are written by the time it is
/// released. Answers the producers' results and the gateway's metrics.
async fn four_produces_behind_a_held_put(
    fail: Option<usize>,
) -> (Vec<Result<Acked, ProduceError>>, Arc<GatewayMetrics>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let node =
        ControllerNode::start_single(NodeConfig::new(1, dir.path().to_owned())).await.expect("controller");
    let topic = TopicName::new("orders").expect("name");
    let info = node.create_topic(topic.clone(), 1, TopicConfig::default(), 1).await.expect("topic");
    let (release, gate) = oneshot::channel();
    let store = Arc::new(GatedStore {
        inner: InMemory::new(),
        gate: Mutex::new(Some(gate)),
        fail,
        started: AtomicUsize::new(0),
        answered: AtomicUsize::new(0),
    });
    let config =
        GatewayConfig { flush_interval: Duration::ZERO, hedge_percentile: 0.0, ..GatewayConfig::default() };
    let metrics = Arc::new(GatewayMetrics::new());
    let parts = BatcherParts {
        store: store.clone(),
        controller: Arc::new(node.clone()),
        cache: new_cache(1 << 20),
        metrics: metrics.clone(),
        clock: Arc::new(SystemClock),
    };
    let batcher = Arc::new(Batcher::start(&config, parts));
    let mut produces = Vec::new();
    for i in 0..4 {
        let (batcher, topic) = (batcher.clone(), topic.clone());
        let record =
            Record { timestamp_ms: 1, key: None, value: Some(vec![i as u8].into()), headers: vec![] };
        produces.push(tokio::spawn(async move {
            let permit = batcher.reserve(64)?;
            batcher
                .append(topic, info.id, vec![PartitionedRecord { partition: 0, record }], None, permit)
                .await
        }));
        // the next produce is flushed only once this one's PUT is out
        // (the first, held) or answered (the others)
        until("the PUT is out", || store.started.load(Ordering::SeqCst) == i + 1).await;
        if i > 0 {
            until("the PUT is answered", || store.answered.load(Ordering::SeqCst) == i).await;
        }
    }
    release.send(()).expect("the first PUT waits");
    let mut results = Vec::new();
    for produce in produces {
        results.push(produce.await.expect("task"));
    }
    node.shutdown().await;
    (results, metrics)
}

#[tokio::test]
async fn segments_written_behind_a_slow_put_commit_together_in_flush_order() {
    let (results, metrics) = four_produces_behind_a_held_put(None).await;
    let offsets: Vec<Acked> = results.into_iter().map(|r| r.expect("acked")).collect();
    assert_eq!(offsets, vec![vec![(0, 0)], vec![(0, 1)], vec![(0, 2)], vec![(0, 3)]]);
    assert_eq!(metrics.segments_flushed.get(), 4);
    assert_eq!(metrics.segment_commits.get(), 1, "one controller call for the four segments");
}

#[tokio::test]
async fn a_failed_put_in_a_group_refuses_only_its_producer() {
    let (results, metrics) = four_produces_behind_a_held_put(Some(2)).await;
    assert!(matches!(results[2], Err(ProduceError::Storage(_))), "{:?}", results[2]);
    let acked: Vec<Acked> = [0, 1, 3].iter().map(|&i| results[i].clone().expect("acked")).collect();
    assert_eq!(acked, vec![vec![(0, 0)], vec![(0, 1)], vec![(0, 2)]], "offsets stay dense and in order");
    assert_eq!(metrics.segments_flushed.get(), 3);
    assert_eq!(metrics.segment_commits.get(), 1);
}

#[tokio::test]
async fn a_segment_lays_chunks_out_by_partition_whatever_order_records_came_in() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node =
        ControllerNode::start_single(NodeConfig::new(1, dir.path().to_owned())).await.expect("controller");
    let topic = TopicName::new("orders").expect("name");
    let info = node.create_topic(topic.clone(), 4, TopicConfig::default(), 1).await.expect("topic");
    let store = Arc::new(InMemory::new());
    let config = GatewayConfig { flush_interval: Duration::ZERO, ..GatewayConfig::default() };
    let parts = BatcherParts {
        store: store.clone(),
        controller: Arc::new(node.clone()),
        cache: new_cache(1 << 20),
        metrics: Arc::new(GatewayMetrics::new()),
        clock: Arc::new(SystemClock),
    };
    let batcher = Batcher::start(&config, parts);
    let arrival = [3u32, 1, 3, 0, 2, 1];
    let records: Vec<PartitionedRecord> = arrival
        .iter()
        .enumerate()
        .map(|(i, &partition)| PartitionedRecord {
            partition,
            record: Record { timestamp_ms: 1, key: None, value: Some(vec![i as u8].into()), headers: vec![] },
        })
        .collect();
    let permit = batcher.reserve(1024).expect("room");
    let acked = batcher.append(topic.clone(), info.id, records, None, permit).await.expect("acked");
    assert_eq!(acked, vec![(3, 0), (1, 0), (3, 1), (0, 0), (2, 0), (1, 1)], "offsets as the records came");
    let mut positions = Vec::new();
    for partition in 0..4 {
        let read = node.read_partition(&topic, partition, 0, 10, Duration::ZERO).await.expect("read");
        let [span] = read.chunks.as_slice() else { panic!("one chunk per partition: {read:?}") };
        let at = shale_core::segment::ChunkLocation {
            object: &span.chunk.object,
            position: span.chunk.position,
            len: span.chunk.len,
            record_count: span.chunk.record_count,
        };
        let values: Vec<u8> = shale_core::segment::read_chunk(store.as_ref(), at)
            .await
            .expect("chunk")
            .iter()
            .filter_map(|r| r.value.as_ref().map(|v| v[0]))
            .collect();
        let sent: Vec<u8> = (0..arrival.len() as u8).filter(|&i| arrival[i as usize] == partition).collect();
        assert_eq!(values, sent, "partition {partition} reads back its own records");
        positions.push(span.chunk.position);
    }
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "chunks in partition order: {positions:?}");
    node.shutdown().await;
}

/// A single-node controller with topic "orders" (one partition) and a
/// batcher over an in-memory store, for the flush-interval tests.
struct Pacing {
    _dir: tempfile::TempDir,
    node: ControllerNode,
    topic: TopicName,
    topic_id: u64,
    batcher: Batcher,
    metrics: Arc<GatewayMetrics>,
}

impl Pacing {
    async fn start(config: GatewayConfig) -> Pacing {
        let dir = tempfile::tempdir().expect("tempdir");
        let node = ControllerNode::start_single(NodeConfig::new(1, dir.path().to_owned()))
            .await
            .expect("controller");
        let topic = TopicName::new("orders").expect("name");
        let info = node.create_topic(topic.clone(), 1, TopicConfig::default(), 1).await.expect("topic");
        let metrics = Arc::new(GatewayMetrics::new());
        let parts = BatcherParts {
            store: Arc::new(InMemory::new()),
            controller: Arc::new(node.clone()),
            cache: new_cache(1 << 20),
            metrics: metrics.clone(),
            clock: Arc::new(SystemClock),
        };
        let batcher = Batcher::start(&GatewayConfig { hedge_percentile: 0.0, ..config }, parts);
        Pacing { _dir: dir, node, topic, topic_id: info.id, batcher, metrics }
    }

    /// Produces one record of `bytes` bytes; answers how long its ack took.
    async fn produce(&self, bytes: usize) -> Duration {
        let record =
            Record { timestamp_ms: 1, key: None, value: Some(vec![7; bytes].into()), headers: vec![] };
        let permit = self.batcher.reserve(bytes).expect("room");
        let started = Instant::now();
        let records = vec![PartitionedRecord { partition: 0, record }];
        self.batcher.append(self.topic.clone(), self.topic_id, records, None, permit).await.expect("acked");
        started.elapsed()
    }
}

/// The flush interval amortises PUTs over requests that come close together;
/// it is not a wait added to every request. A request that finds the last
/// flush at least an interval old leaves at once; requests that come sooner
/// gather into one segment that leaves an interval after the previous flush.
#[tokio::test]
async fn a_request_leaves_at_once_when_the_last_flush_is_an_interval_old() {
    const INTERVAL: Duration = Duration::from_secs(2);
    let pacing = Pacing::start(GatewayConfig { flush_interval: INTERVAL, ..GatewayConfig::default() }).await;

    let first = pacing.produce(1).await;
    assert!(first < INTERVAL / 2, "nothing was flushed before: it leaves at once ({first:?})");
    assert_eq!(pacing.metrics.segments_flushed.get(), 1);

    let gathered = futures::future::join_all((0..5).map(|_| pacing.produce(1))).await;
    for took in &gathered {
        assert!(*took >= INTERVAL / 2, "sent right after a flush: it waits for the interval ({took:?})");
    }
    assert_eq!(pacing.metrics.segments_flushed.get(), 2, "the five went in one segment");

    tokio::time::sleep(INTERVAL + INTERVAL / 4).await;
    let late = pacing.produce(1).await;
    assert!(late < INTERVAL / 2, "the last flush is older than the interval: it leaves at once ({late:?})");
    assert_eq!(pacing.metrics.segments_flushed.get(), 3);
    let read = pacing.node.read_partition(&pacing.topic, 0, 0, 10, Duration::ZERO).await.expect("read");
    assert_eq!(read.high_watermark, 7, "every record committed once");
    pacing.node.shutdown().await;
}

/// A full segment marks a loaded gateway: the next batch lingers for the
/// interval from its first request even when the last flush is older, since
/// the producers a group commit answered together are about to send again.
#[tokio::test]
async fn after_a_full_segment_the_next_batch_lingers() {
    const INTERVAL: Duration = Duration::from_secs(1);
    let config = GatewayConfig { flush_interval: INTERVAL, flush_bytes: 1000, ..GatewayConfig::default() };
    let pacing = Pacing::start(config).await;
    pacing.produce(2000).await;
    assert_eq!(pacing.metrics.segments_flushed.get(), 1, "a full segment leaves at once");
    tokio::time::sleep(INTERVAL + INTERVAL / 4).await;
    let after_full = pacing.produce(10).await;
    assert!(after_full >= INTERVAL / 2, "after a full segment it lingers ({after_full:?})");
    tokio::time::sleep(INTERVAL + INTERVAL / 4).await;
    let after_partial = pacing.produce(10).await;
    assert!(after_partial < INTERVAL / 2, "after a partial one it leaves at once ({after_partial:?})");
    assert_eq!(pacing.metrics.segments_flushed.get(), 3);
    pacing.node.shutdown().await;
}
