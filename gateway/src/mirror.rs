//! A gateway's mirror of the controller's topics and partition indexes,
//! fed by the controller's versioned feed (`GET /api/watch`, a long-poll),
//! so that a produce costs no controller call beyond its commit and a fetch
//! of committed data costs none.
//!
//! [`Mirror`] is a [`Controller`]: topic lookups, partition reads and
//! lookups by time are answered from the mirror; everything else goes to
//! the controller. Read-your-writes holds because the mirror answers only
//! what it holds: a read at or past its high watermark waits for the feed
//! (up to the read's wait) and then asks the controller once, so a record
//! acknowledged through any gateway is always found.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Bound;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use shale_controller_client::auth::{TokenInfo, TokenRecord};
use shale_controller_client::classic::{ClassicAnswer, ClassicRequest};
use shale_controller_client::group::{
    CommitOffsets, GroupInfo, MemberAssignment, MemberHeartbeat, OffsetCommit, TopicPartition,
};
use shale_controller_client::watch::{Change, PartitionMirror, TopicMirror, WatchAnswer};
use shale_controller_client::{
    ChunkRef, ChunkSpan, CommitSegment, CompactorLease, Controller, ControllerError, GatewayLease,
    PartitionInfo, PartitionRead, ReplaceRange, SegmentOutcomes, TopicConfig, TopicInfo,
};
use shale_core::{Offset, PartitionId, TopicName};
use tokio::sync::watch;
use tokio::time::Instant;

/// How long one feed long-poll waits for a change.
const FEED_WAIT: Duration = Duration::from_secs(10);
/// Pause after a failed feed request.
const FEED_RETRY: Duration = Duration::from_millis(500);

struct Partition {
    log_start_offset: Offset,
    high_watermark: Offset,
    leader: Option<String>,
    leader_epoch: u64,
    index: BTreeMap<Offset, ChunkRef>,
}

impl From<PartitionMirror> for Partition {
    fn from(p: PartitionMirror) -> Self {
        Self {
            log_start_offset: p.log_start_offset,
            high_watermark: p.high_watermark,
            leader: p.leader,
            leader_epoch: p.leader_epoch,
            index: p.index.into_iter().collect(),
        }
    }
}

impl Partition {
    /// The chunks holding `offset` and after, at most `max` (as the
    /// controller answers them).
    fn read(&self, offset: Offset, max: usize) -> PartitionRead {
        let holding = self
            .index
            .range(..=offset)
            .next_back()
            .filter(|(base, c)| offset < **base + u64::from(c.record_count))
            .map(|(base, _)| *base);
        let start = holding.map_or(Bound::Excluded(offset), Bound::Included);
        PartitionRead {
            log_start_offset: self.log_start_offset,
            high_watermark: self.high_watermark,
            chunks: self
                .index
                .range((start, Bound::Unbounded))
                .take(max)
                .map(|(b, c)| ChunkSpan { base_offset: *b, chunk: c.clone() })
                .collect(),
        }
    }
}

struct Topic {
    id: u64,
    config: TopicConfig,
    created_ms: i64,
    partitions: Vec<Partition>,
}

impl From<TopicMirror> for Topic {
    fn from(t: TopicMirror) -> Self {
        Self {
            id: t.id,
            config: t.config,
            created_ms: t.created_ms,
            partitions: t.partitions.into_iter().map(Partition::from).collect(),
        }
    }
}

#[derive(Default)]
struct State {
    /// `None` until the first answer of the feed.
    version: Option<u64>,
    topics: HashMap<TopicName, Topic>,
    /// Topics created, changed or deleted through this gateway whose change
    /// the feed has not brought yet: asked of the controller meanwhile, so
    /// this gateway's clients read their own writes.
    pending: HashSet<TopicName>,
}

impl State {
    fn apply(&mut self, answer: WatchAnswer) {
        if let Some(topics) = answer.reset {
            self.topics = topics.into_iter().map(|t| (t.name.clone(), Topic::from(t))).collect();
            self.pending.clear();
        }
        for change in answer.changes {
            match change {
                Change::Appended { topic, partition, base_offset, chunk } => {
                    if let Some(p) = self.partition_mut(&topic, partition) {
                        p.high_watermark = p.high_watermark.max(base_offset + u64::from(chunk.record_count));
                        p.index.insert(base_offset, chunk);
                    }
                }
                Change::Partition { topic, partition, state } => {
                    if let Some(p) = self.partition_mut(&topic, partition) {
                        *p = Partition::from(state);
                    }
                }
                Change::Topic(t) => {
                    self.pending.remove(&t.name);
                    self.topics.insert(t.name.clone(), Topic::from(t));
                }
                Change::TopicDeleted { topic } => {
                    self.pending.remove(&topic);
                    self.topics.remove(&topic);
                }
                Change::Leaders { leaders } => {
                    for (topic, partitions) in leaders {
                        let Some(t) = self.topics.get_mut(&topic) else { continue };
                        for (p, (leader, epoch)) in t.partitions.iter_mut().zip(partitions) {
                            p.leader = leader;
                            p.leader_epoch = epoch;
                        }
                    }
                }
            }
        }
        self.version = Some(answer.version);
    }

    fn partition_mut(&mut self, topic: &TopicName, partition: PartitionId) -> Option<&mut Partition> {
        self.topics.get_mut(topic)?.partitions.get_mut(partition as usize)
    }

    fn partition(&self, topic: &TopicName, partition: PartitionId) -> Option<&Partition> {
        self.topics.get(topic)?.partitions.get(partition as usize)
    }

    fn info(&self, name: &TopicName) -> Option<TopicInfo> {
        let t = self.topics.get(name)?;
        Some(TopicInfo {
            name: name.clone(),
            id: t.id,
            config: t.config.clone(),
            created_ms: t.created_ms,
            partitions: t
                .partitions
                .iter()
                .enumerate()
                .map(|(i, p)| PartitionInfo {
                    partition: i as PartitionId,
                    log_start_offset: p.log_start_offset,
                    high_watermark: p.high_watermark,
                    leader: p.leader.clone(),
                    leader_epoch: p.leader_epoch,
                })
                .collect(),
        })
    }
}

/// The mirror, and the controller it mirrors.
pub struct Mirror {
    inner: Arc<dyn Controller>,
    state: RwLock<State>,
    /// The mirror's version, bumped as the feed brings changes.
    changed: watch::Sender<u64>,
}

impl Mirror {
    /// Starts mirroring `inner`'s feed. Call inside a Tokio runtime; the
    /// feed stops when the mirror is dropped.
    pub fn start(inner: Arc<dyn Controller>) -> Arc<Self> {
        let (changed, _) = watch::channel(0);
        let mirror = Arc::new(Self { inner, state: RwLock::new(State::default()), changed });
        tokio::spawn(feed(Arc::downgrade(&mirror)));
        mirror
    }

    fn read_state(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether the first answer of the feed has come.
    pub fn ready(&self) -> bool {
        self.read_state().version.is_some()
    }

    /// `f` of the mirror, unless the feed has not answered yet or `topic`
    /// (when one is named) has a change of this gateway's in flight.
    fn local<T>(&self, topic: Option<&TopicName>, f: impl FnOnce(&State) -> Option<T>) -> Option<T> {
        let state = self.read_state();
        state.version?;
        let pending = match topic {
            Some(t) => state.pending.contains(t),
            None => !state.pending.is_empty(),
        };
        if pending {
            return None;
        }
        f(&state)
    }

    /// Runs a topic write, the topic asked of the controller until the feed
    /// brings the change.
    async fn topic_write<T>(
        &self,
        name: &TopicName,
        write: impl std::future::Future<Output = Result<T, ControllerError>>,
    ) -> Result<T, ControllerError> {
        self.state.write().unwrap_or_else(std::sync::PoisonError::into_inner).pending.insert(name.clone());
        let result = write.await;
        if result.is_err() {
            // nothing changed, or, if it did after all, the feed brings it
            self.state.write().unwrap_or_else(std::sync::PoisonError::into_inner).pending.remove(name);
        }
        result
    }
}

/// Long-polls the feed and applies its answers until the mirror is gone.
async fn feed(mirror: std::sync::Weak<Mirror>) {
    let mut failing = false;
    loop {
        let Some(m) = mirror.upgrade() else { return };
        let since = m.read_state().version;
        let inner = m.inner.clone();
        drop(m);
        let answer = inner.watch(since, FEED_WAIT).await;
        let Some(m) = mirror.upgrade() else { return };
        match answer {
            Ok(answer) => {
                if failing {
                    tracing::info!("the controller's metadata feed answers again");
                    failing = false;
                }
                let version = answer.version;
                m.state.write().unwrap_or_else(std::sync::PoisonError::into_inner).apply(answer);
                m.changed.send_replace(version);
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "the controller's metadata feed failed; reads fall back to the controller");
                    failing = true;
                }
                drop(m);
                tokio::time::sleep(FEED_RETRY).await;
            }
        }
    }
}

#[async_trait]
impl Controller for Mirror {
    async fn list_topics(&self) -> Result<Vec<TopicInfo>, ControllerError> {
        let listed = self.local(None, |s| {
            let mut names: Vec<&TopicName> = s.topics.keys().collect();
            names.sort();
            Some(names.into_iter().filter_map(|n| s.info(n)).collect())
        });
        match listed {
            Some(topics) => Ok(topics),
            None => self.inner.list_topics().await,
        }
    }

    /// A topic the mirror lacks may be new: the controller is asked.
    async fn describe_topic(&self, name: &TopicName) -> Result<TopicInfo, ControllerError> {
        match self.local(Some(name), |s| s.info(name)) {
            Some(info) => Ok(info),
            None => self.inner.describe_topic(name).await,
        }
    }

    async fn read_partition(
        &self,
        topic: &TopicName,
        partition: PartitionId,
        from: Offset,
        max_chunks: usize,
        wait: Duration,
    ) -> Result<PartitionRead, ControllerError> {
        let deadline = Instant::now() + wait;
        let mut changed = self.changed.subscribe();
        loop {
            let known = self.local(Some(topic), |s| {
                s.partition(topic, partition)
                    .map(|p| (from < p.high_watermark).then(|| p.read(from, max_chunks)))
            });
            match known {
                Some(Some(read)) => return Ok(read),
                // unknown here (new, or no feed yet): the controller knows
                None => return self.inner.read_partition(topic, partition, from, max_chunks, wait).await,
                Some(None) => {}
            }
            if tokio::time::timeout_at(deadline, changed.changed()).await.is_err() {
                break;
            }
        }
        // at the mirror's end after the wait: the controller has the last word
        self.inner.read_partition(topic, partition, from, max_chunks, Duration::ZERO).await
    }

    async fn find_time(
        &self,
        topic: &TopicName,
        partition: PartitionId,
        timestamp_ms: i64,
    ) -> Result<PartitionRead, ControllerError> {
        let found = self.local(Some(topic), |s| {
            let p = s.partition(topic, partition)?;
            let (base, chunk) = p.index.iter().find(|(_, c)| c.max_timestamp_ms >= timestamp_ms)?;
            Some(PartitionRead {
                log_start_offset: p.log_start_offset,
                high_watermark: p.high_watermark,
                chunks: vec![ChunkSpan { base_offset: *base, chunk: chunk.clone() }],
            })
        });
        match found {
            Some(read) => Ok(read),
            None => self.inner.find_time(topic, partition, timestamp_ms).await,
        }
    }

    async fn is_ready(&self) -> bool {
        self.inner.is_ready().await
    }

    async fn create_topic(
        &self,
        name: TopicName,
        partitions: u32,
        config: TopicConfig,
        created_ms: i64,
    ) -> Result<TopicInfo, ControllerError> {
        self.topic_write(&name.clone(), self.inner.create_topic(name, partitions, config, created_ms)).await
    }

    async fn delete_topic(&self, name: TopicName) -> Result<(), ControllerError> {
        self.topic_write(&name.clone(), self.inner.delete_topic(name)).await
    }

    async fn update_topic(
        &self,
        name: TopicName,
        config: Option<serde_json::Value>,
        partitions: Option<u32>,
    ) -> Result<TopicInfo, ControllerError> {
        self.topic_write(&name.clone(), self.inner.update_topic(name, config, partitions)).await
    }

    async fn commit_segments(
        &self,
        commits: Vec<CommitSegment>,
    ) -> Result<Vec<SegmentOutcomes>, ControllerError> {
        self.inner.commit_segments(commits).await
    }

    async fn heartbeat(&self, url: &str, lease_ms: u64) -> Result<GatewayLease, ControllerError> {
        self.inner.heartbeat(url, lease_ms).await
    }

    async fn leave(&self, url: &str) -> Result<(), ControllerError> {
        self.inner.leave(url).await
    }

    async fn list_tokens(&self) -> Result<Vec<TokenRecord>, ControllerError> {
        self.inner.list_tokens().await
    }

    async fn create_token(&self, token: TokenRecord) -> Result<TokenInfo, ControllerError> {
        self.inner.create_token(token).await
    }

    async fn revoke_token(&self, name: &str) -> Result<(), ControllerError> {
        self.inner.revoke_token(name).await
    }

    async fn compactor_heartbeat(&self, id: &str, lease_ms: u64) -> Result<CompactorLease, ControllerError> {
        self.inner.compactor_heartbeat(id, lease_ms).await
    }

    async fn compactor_leave(&self, id: &str) -> Result<(), ControllerError> {
        self.inner.compactor_leave(id).await
    }

    async fn replace_range(&self, replace: ReplaceRange) -> Result<(), ControllerError> {
        self.inner.replace_range(replace).await
    }

    async fn referenced_objects(&self) -> Result<Vec<String>, ControllerError> {
        self.inner.referenced_objects().await
    }

    async fn group_heartbeat(
        &self,
        group: &str,
        member_id: &str,
        heartbeat: MemberHeartbeat,
    ) -> Result<MemberAssignment, ControllerError> {
        self.inner.group_heartbeat(group, member_id, heartbeat).await
    }

    async fn leave_group(&self, group: &str, member_id: &str) -> Result<(), ControllerError> {
        self.inner.leave_group(group, member_id).await
    }

    async fn classic_group(
        &self,
        group: &str,
        request: ClassicRequest,
    ) -> Result<ClassicAnswer, ControllerError> {
        self.inner.classic_group(group, request).await
    }

    async fn commit_offsets(&self, group: &str, commit: CommitOffsets) -> Result<(), ControllerError> {
        self.inner.commit_offsets(group, commit).await
    }

    async fn reset_offsets(&self, group: &str, offsets: Vec<OffsetCommit>) -> Result<(), ControllerError> {
        self.inner.reset_offsets(group, offsets).await
    }

    async fn delete_group(&self, group: &str) -> Result<(), ControllerError> {
        self.inner.delete_group(group).await
    }

    async fn delete_offsets(
        &self,
        group: &str,
        partitions: Vec<TopicPartition>,
    ) -> Result<(), ControllerError> {
        self.inner.delete_offsets(group, partitions).await
    }

    async fn delete_records(
        &self,
        topic: &TopicName,
        partition: PartitionId,
        before: Offset,
    ) -> Result<TopicInfo, ControllerError> {
        self.topic_write(topic, self.inner.delete_records(topic, partition, before)).await
    }

    async fn list_groups(&self) -> Result<Vec<GroupInfo>, ControllerError> {
        self.inner.list_groups().await
    }

    async fn describe_group(&self, group: &str) -> Result<GroupInfo, ControllerError> {
        self.inner.describe_group(group).await
    }

    async fn watch(&self, since: Option<u64>, wait: Duration) -> Result<WatchAnswer, ControllerError> {
        self.inner.watch(since, wait).await
    }
}
