//! The metadata model: topics, partitions and their index. Pure and
//! deterministic: [`Metadata::apply`] takes a command and returns a reply,
//! with no I/O and no clock.

use std::collections::BTreeMap;
use std::ops::Bound;

use serde::{Deserialize, Serialize};
use shale_core::{Offset, PartitionId, TopicName};

use crate::types::{ChunkCommit, Command, CommandReply, CommitSegment, RequestCommit};
use shale_controller_client::auth::{TokenRecord, validate_token_name};
pub use shale_controller_client::meta::{
    ChunkFormat, ChunkRef, CleanupPolicy, CompactionTask, CompactorLease, GatewayLease, MAX_PARTITIONS,
    MetaError, OffsetRun, PartitionInfo, TopicConfig, TopicInfo,
};

mod classic;
mod compaction;
mod groups;
mod idempotency;
mod leadership;
mod producers;
mod retention;
pub use classic::{ClassicGroup, Step as ClassicStep};
pub use groups::{Committed, GroupState, MemberState};
pub use idempotency::{IDEMPOTENCY_MAX_ENTRIES, IDEMPOTENCY_WINDOW_MS, IdempotencyWindow};
pub use leadership::{Gateways, MAX_LEASE_MS, MIN_LEASE_MS, Role};

pub use shale_controller_client::command::MAX_COMMIT_DELAY_MS;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PartitionState {
    pub log_start_offset: Offset,
    /// The next offset to assign; every offset below it is committed.
    pub high_watermark: Offset,
    pub index: BTreeMap<Offset, ChunkRef>,
    /// The URL of the gateway leading this partition, if any gateway is live.
    #[serde(default)]
    pub leader: Option<String>,
    /// Bumped whenever the leader changes.
    #[serde(default)]
    pub leader_epoch: u64,
    /// The compactor holding this partition's compaction lease, if any.
    #[serde(default)]
    pub compactor: Option<String>,
    /// Bumped whenever the compactor changes; a swap must name it.
    #[serde(default)]
    pub compactor_epoch: u64,
    /// Idempotent Kafka producers' last sequence numbers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub producers: producers::Producers,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopicState {
    pub id: u64,
    pub config: TopicConfig,
    pub created_ms: i64,
    pub partitions: Vec<PartitionState>,
}

/// All metadata the controller replicates.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    pub topics: BTreeMap<TopicName, TopicState>,
    pub next_topic_id: u64,
    #[serde(default)]
    pub idempotency: IdempotencyWindow,
    #[serde(default)]
    pub gateways: Gateways,
    /// Public API tokens by name (hashes only).
    #[serde(default)]
    pub tokens: BTreeMap<String, TokenRecord>,
    /// The live compactors, by id.
    #[serde(default)]
    pub compactors: Gateways,
    /// Consumer groups by id.
    #[serde(default)]
    pub groups: BTreeMap<String, GroupState>,
}

impl Metadata {
    pub fn apply(&mut self, command: &Command) -> CommandReply {
        match command {
            Command::CreateTopic { name, partitions, config, created_ms } => {
                match self.create_topic(name, *partitions, config, *created_ms) {
                    Ok(info) => CommandReply::TopicCreated(info),
                    Err(e) => CommandReply::Failed(e),
                }
            }
            Command::DeleteTopic { name } => match self.topics.remove(name) {
                Some(_) => {
                    self.rebalance_all();
                    CommandReply::TopicDeleted
                }
                None => CommandReply::Failed(MetaError::TopicNotFound(name.to_string())),
            },
            Command::UpdateTopic { name, config, partitions } => {
                match self.update_topic(name, config.as_ref(), *partitions) {
                    Ok(info) => CommandReply::TopicUpdated(info),
                    Err(e) => CommandReply::Failed(e),
                }
            }
            Command::CommitSegment(commit) => CommandReply::Committed(self.commit(commit)),
            Command::CommitSegments(commits) => {
                CommandReply::CommittedSegments(commits.iter().map(|c| self.commit(c)).collect())
            }
            Command::ApplyRetention { now_ms } => {
                CommandReply::RetentionApplied(self.apply_retention(*now_ms))
            }
            Command::GatewayHeartbeat { url, now_ms, lease_ms } => {
                let (lease, joined) = self.gateways.heartbeat(url, *now_ms, *lease_ms);
                if joined {
                    leadership::rebalance(&mut self.topics, &self.gateways, Role::Leader);
                }
                CommandReply::Lease(lease)
            }
            Command::ExpireGateways { now_ms } => {
                let mut expired = self.gateways.expire(*now_ms);
                if !expired.is_empty() {
                    leadership::rebalance(&mut self.topics, &self.gateways, Role::Leader);
                }
                let compactors = self.compactors.expire(*now_ms);
                if !compactors.is_empty() {
                    leadership::rebalance(&mut self.topics, &self.compactors, Role::Compactor);
                }
                expired.extend(compactors);
                CommandReply::GatewaysGone(expired)
            }
            Command::GatewayLeave { url } => {
                let left = self.gateways.leave(url);
                if left {
                    leadership::rebalance(&mut self.topics, &self.gateways, Role::Leader);
                }
                CommandReply::GatewaysGone(if left { vec![url.clone()] } else { Vec::new() })
            }
            Command::CompactorHeartbeat { id, now_ms, lease_ms } => {
                CommandReply::Compactor(self.compactor_heartbeat(id, *now_ms, *lease_ms))
            }
            Command::CompactorLeave { id } => {
                let left = self.compactors.leave(id);
                if left {
                    leadership::rebalance(&mut self.topics, &self.compactors, Role::Compactor);
                }
                CommandReply::GatewaysGone(if left { vec![id.clone()] } else { Vec::new() })
            }
            Command::ReplaceRange(replace) => match self.replace_range(replace) {
                Ok(()) => CommandReply::Replaced,
                Err(e) => CommandReply::Failed(e),
            },
            Command::CreateToken(token) => match self.create_token(token) {
                Ok(()) => CommandReply::TokenCreated(token.info()),
                Err(e) => CommandReply::Failed(e),
            },
            Command::RevokeToken { name } => match self.tokens.remove(name) {
                Some(_) => CommandReply::TokenRevoked,
                None => CommandReply::Failed(MetaError::TokenNotFound(name.clone())),
            },
            Command::JoinGroup { group, member_id, topics, session_timeout_ms, instance_id, .. } => {
                match self.join_group(group, member_id, topics, *session_timeout_ms, instance_id.as_deref()) {
                    Ok(assignment) => CommandReply::Member(assignment),
                    Err(e) => CommandReply::Failed(e),
                }
            }
            Command::AckRevocation { group, member_id, epoch } => {
                match self.ack_revocation(group, member_id, *epoch) {
                    Ok(()) => match self.groups.get(group).and_then(|g| g.assignment(group, member_id)) {
                        Some(assignment) => CommandReply::Member(assignment),
                        None => CommandReply::GroupChanged,
                    },
                    Err(e) => CommandReply::Failed(e),
                }
            }
            Command::LeaveGroup { group, members } => group_reply(self.leave_group(group, members)),
            Command::CommitOffsets { group, commit, now_ms } => {
                group_reply(self.commit_offsets(group, commit, *now_ms))
            }
            Command::ResetOffsets { group, offsets, now_ms } => {
                group_reply(self.reset_offsets(group, offsets, *now_ms))
            }
            Command::DeleteGroup { group } => group_reply(self.delete_group(group)),
            Command::DeleteOffsets { group, partitions } => {
                group_reply(self.delete_offsets(group, partitions))
            }
            Command::DeleteRecords { topic, partition, before } => {
                match self.delete_records(topic, *partition, *before) {
                    Ok(info) => CommandReply::TopicUpdated(info),
                    Err(e) => CommandReply::Failed(e),
                }
            }
            Command::Classic { group, request, now_ms } => {
                CommandReply::Classic(self.classic(group, request, *now_ms))
            }
            Command::ClassicExpire { group, members, now_ms } => {
                self.classic_expire(group, members, *now_ms);
                CommandReply::GroupChanged
            }
        }
    }

    fn update_topic(
        &mut self,
        name: &TopicName,
        patch: Option<&serde_json::Value>,
        partitions: Option<u32>,
    ) -> Result<TopicInfo, MetaError> {
        let topic = self.topics.get(name).ok_or_else(|| MetaError::TopicNotFound(name.to_string()))?;
        let config = match patch {
            Some(patch) => merge_config(&topic.config, patch)?,
            None => topic.config.clone(),
        };
        let now = topic.partitions.len() as u32;
        let grow_to = partitions.unwrap_or(now);
        if grow_to < now || grow_to > MAX_PARTITIONS {
            return Err(MetaError::Invalid(format!(
                "partitions can only grow, up to {MAX_PARTITIONS}: the topic has {now}, asked for {grow_to}"
            )));
        }
        if let Some(topic) = self.topics.get_mut(name) {
            topic.config = config;
            topic.partitions.resize(grow_to as usize, PartitionState::default());
        }
        if grow_to > now {
            self.rebalance_all();
        }
        self.topic_info(name)
    }

    /// Spreads partitions over gateways and compactors again (topics came,
    /// went or grew).
    fn rebalance_all(&mut self) {
        leadership::rebalance(&mut self.topics, &self.gateways, Role::Leader);
        leadership::rebalance(&mut self.topics, &self.compactors, Role::Compactor);
        self.reconcile_groups();
    }

    fn create_token(&mut self, token: &TokenRecord) -> Result<(), MetaError> {
        validate_token_name(&token.name).map_err(MetaError::Invalid)?;
        let hex = token.hash.len() == 64 && token.hash.bytes().all(|b| b.is_ascii_hexdigit());
        if !hex || token.grants.is_empty() {
            return Err(MetaError::Invalid("a token needs a SHA-256 hash and at least one grant".into()));
        }
        for grant in &token.grants {
            grant.validate().map_err(MetaError::Invalid)?;
        }
        if self.tokens.contains_key(&token.name) {
            return Err(MetaError::TokenExists(token.name.clone()));
        }
        self.tokens.insert(token.name.clone(), token.clone());
        Ok(())
    }

    fn create_topic(
        &mut self,
        name: &TopicName,
        partitions: u32,
        config: &TopicConfig,
        created_ms: i64,
    ) -> Result<TopicInfo, MetaError> {
        if self.topics.contains_key(name) {
            return Err(MetaError::TopicExists(name.to_string()));
        }
        if partitions == 0 || partitions > MAX_PARTITIONS {
            return Err(MetaError::Invalid(format!(
                "partitions must be between 1 and {MAX_PARTITIONS}, got {partitions}"
            )));
        }
        self.next_topic_id += 1;
        let topic = TopicState {
            id: self.next_topic_id,
            config: config.clone(),
            created_ms,
            partitions: vec![PartitionState::default(); partitions as usize],
        };
        self.topics.insert(name.clone(), topic);
        self.rebalance_all();
        self.topic_info(name)
    }

    fn commit(&mut self, commit: &CommitSegment) -> Vec<Result<Offset, MetaError>> {
        self.idempotency.advance(commit.committed_ms);
        // garbage collection may delete an unreferenced segment once it is
        // older than its grace: one written too long ago is refused, so a
        // commit never references an object that may be gone
        let written = shale_core::keys::segment_written_ms(&commit.object);
        if let Some(age) = written.map(|w| commit.committed_ms.saturating_sub(w))
            && age > MAX_COMMIT_DELAY_MS
        {
            let refused = MetaError::SegmentExpired(format!(
                "segment {} was written {age} ms ago, over the {MAX_COMMIT_DELAY_MS} ms a commit may take",
                commit.object
            ));
            return commit.chunks.iter().map(|_| Err(refused.clone())).collect();
        }
        // the topic incarnation a request is for: its first chunk's
        let topic_of = |r: &RequestCommit| {
            r.runs.first().and_then(|(c, _)| commit.chunks.get(*c as usize)).map(|c| c.topic_id)
        };
        // a guarded request is taken or refused whole: any chunk of it that
        // cannot be appended refuses all of it, before anything is appended
        let mut refused: Vec<Option<MetaError>> = commit
            .requests
            .iter()
            .enumerate()
            .map(|(i, _)| {
                let mut own = commit.chunks.iter().filter(|c| c.request == Some(i as u32));
                own.find_map(|c| self.check_chunk(c).err())
            })
            .collect();
        // a request whose key was committed before is refused whole
        for (i, r) in commit.requests.iter().enumerate() {
            if refused[i].is_some() {
                continue;
            }
            let (Some(topic), Some(key)) = (topic_of(r), r.idempotency_key.as_ref()) else { continue };
            if let Some(offsets) = self.idempotency.get(topic, key) {
                refused[i] = Some(MetaError::Duplicate { offsets: offsets.to_vec() });
            }
        }
        // a retry in the same commit as its original: a twin of the first
        let mut first_with_key: BTreeMap<(u64, &str), usize> = BTreeMap::new();
        let mut twin_of: Vec<Option<usize>> = vec![None; commit.requests.len()];
        for (i, r) in commit.requests.iter().enumerate() {
            let (Some(topic), Some(key)) = (topic_of(r), r.idempotency_key.as_deref()) else { continue };
            if refused[i].is_none() {
                match first_with_key.get(&(topic, key)) {
                    Some(first) => twin_of[i] = Some(*first),
                    None => {
                        first_with_key.insert((topic, key), i);
                    }
                }
            }
        }
        self.check_sequences(commit, &mut refused, &twin_of);
        let mut results = Vec::with_capacity(commit.chunks.len());
        for chunk in &commit.chunks {
            let request = chunk.request.map(|r| r as usize).filter(|r| *r < refused.len());
            if let Some(err) = request.and_then(|r| refused[r].clone()) {
                results.push(Err(err));
                continue;
            }
            if request.is_some_and(|r| twin_of[r].is_some()) {
                results.push(Err(MetaError::Invalid("settled with its twin below".into())));
                continue;
            }
            let expected = request.and_then(|r| commit.requests[r].expected_offset);
            let result = self.append_chunk(commit, chunk, expected);
            if let (Some(r), Err(e)) = (request, &result) {
                refused[r] = Some(e.clone());
            }
            results.push(result);
        }
        self.remember_keys(commit, &refused, &twin_of, &results);
        self.remember_sequences(commit, &refused, &twin_of);
        // twins get what their first got: its offsets, or its refusal
        for (i, first) in twin_of.iter().enumerate() {
            let Some(first) = *first else { continue };
            let outcome = match &refused[first] {
                Some(e) => e.clone(),
                None => {
                    let r = &commit.requests[i];
                    let offsets = topic_of(r)
                        .zip(r.idempotency_key.as_deref())
                        .and_then(|(t, k)| self.idempotency.get(t, k))
                        .map(<[OffsetRun]>::to_vec)
                        .unwrap_or_default();
                    MetaError::Duplicate { offsets }
                }
            };
            for (c, chunk) in commit.chunks.iter().enumerate() {
                if chunk.request == Some(i as u32) {
                    results[c] = Err(outcome.clone());
                }
            }
        }
        results
    }

    /// Assigns a chunk the next offsets of its partition.
    /// Why `chunk` could not be appended (its topic incarnation, partition
    /// or size), without changing anything.
    fn check_chunk(&self, chunk: &ChunkCommit) -> Result<(), MetaError> {
        let topic = self.topics.get(&chunk.topic).filter(|t| t.id == chunk.topic_id);
        let Some(topic) = topic else { return Err(MetaError::TopicNotFound(chunk.topic.to_string())) };
        if chunk.partition as usize >= topic.partitions.len() {
            return Err(MetaError::PartitionNotFound {
                topic: chunk.topic.to_string(),
                partition: chunk.partition,
                partitions: topic.partitions.len() as u32,
            });
        }
        if chunk.record_count == 0 {
            return Err(MetaError::Invalid("empty chunk".into()));
        }
        Ok(())
    }

    fn append_chunk(
        &mut self,
        commit: &CommitSegment,
        chunk: &ChunkCommit,
        expected: Option<Offset>,
    ) -> Result<Offset, MetaError> {
        self.check_chunk(chunk)?;
        let (_, p) = self.partition_mut(&chunk.topic, chunk.partition)?;
        if let Some(expected) = expected.filter(|e| *e != p.high_watermark) {
            return Err(MetaError::OffsetMismatch { expected, actual: p.high_watermark });
        }
        let base = p.high_watermark;
        p.index.insert(
            base,
            ChunkRef {
                object: commit.object.clone(),
                position: chunk.position,
                len: chunk.len,
                record_count: chunk.record_count,
                max_timestamp_ms: chunk.max_timestamp_ms,
                committed_ms: commit.committed_ms,
                format: ChunkFormat::Segment,
            },
        );
        p.high_watermark += u64::from(chunk.record_count);
        Ok(base)
    }

    /// Refuses idempotent producers' batches that do not follow their last
    /// one on the partition, in request order: a batch follows one earlier
    /// in the same commit as it follows one already appended.
    fn check_sequences(
        &self,
        commit: &CommitSegment,
        refused: &mut [Option<MetaError>],
        twin_of: &[Option<usize>],
    ) {
        let mut pending: BTreeMap<(TopicName, PartitionId, i64), producers::ProducerEntry> = BTreeMap::new();
        for (i, r) in commit.requests.iter().enumerate() {
            let Some(batch) = r.producer.as_ref().filter(|_| refused[i].is_none() && twin_of[i].is_none())
            else {
                continue;
            };
            let Some(chunk) = r.runs.first().and_then(|(c, _)| commit.chunks.get(*c as usize)) else {
                continue;
            };
            let slot = (chunk.topic.clone(), chunk.partition, batch.id);
            let known = || {
                let topic = self.topics.get(&chunk.topic)?;
                topic.partitions.get(chunk.partition as usize)?.producers.get(&batch.id).copied()
            };
            let last = pending.get(&slot).copied().or_else(known);
            match producers::follows(last.as_ref(), batch, commit.committed_ms) {
                Ok(()) => {
                    pending.insert(slot, producers::entry(batch, commit.committed_ms));
                }
                Err(e) => refused[i] = Some(e),
            }
        }
    }

    /// Remembers the last sequence of every producer batch committed whole.
    fn remember_sequences(
        &mut self,
        commit: &CommitSegment,
        refused: &[Option<MetaError>],
        twin_of: &[Option<usize>],
    ) {
        for ((r, verdict), twin) in commit.requests.iter().zip(refused).zip(twin_of) {
            let Some(batch) = r.producer.as_ref().filter(|_| verdict.is_none() && twin.is_none()) else {
                continue;
            };
            let Some(chunk) = r.runs.first().and_then(|(c, _)| commit.chunks.get(*c as usize)) else {
                continue;
            };
            if let Ok((_, p)) = self.partition_mut(&chunk.topic, chunk.partition) {
                producers::record(&mut p.producers, batch, commit.committed_ms);
            }
        }
    }

    /// Remembers the offsets of every keyed request committed whole.
    fn remember_keys(
        &mut self,
        commit: &CommitSegment,
        refused: &[Option<MetaError>],
        twin_of: &[Option<usize>],
        results: &[Result<Offset, MetaError>],
    ) {
        for ((request, verdict), twin) in commit.requests.iter().zip(refused).zip(twin_of) {
            let committed = verdict.is_none() && twin.is_none();
            let Some(key) = request.idempotency_key.as_ref().filter(|_| committed) else { continue };
            let mut next_in_chunk: BTreeMap<u32, u64> = BTreeMap::new();
            let mut offsets = Vec::with_capacity(request.runs.len());
            for &(chunk, count) in &request.runs {
                let (Some(Ok(base)), Some(c)) =
                    (results.get(chunk as usize), commit.chunks.get(chunk as usize))
                else {
                    continue;
                };
                let skip = next_in_chunk.entry(chunk).or_insert(0);
                offsets.push(OffsetRun { partition: c.partition, base_offset: base + *skip, count });
                *skip += u64::from(count);
            }
            if let Some(chunk) = request.runs.first().and_then(|(c, _)| commit.chunks.get(*c as usize)) {
                self.idempotency.remember(chunk.topic_id, key, offsets);
            }
        }
    }

    fn partition_mut(
        &mut self,
        topic: &TopicName,
        partition: PartitionId,
    ) -> Result<(u64, &mut PartitionState), MetaError> {
        let t = self.topics.get_mut(topic).ok_or_else(|| MetaError::TopicNotFound(topic.to_string()))?;
        let partitions = t.partitions.len() as u32;
        let id = t.id;
        let p = t.partitions.get_mut(partition as usize).ok_or_else(|| MetaError::PartitionNotFound {
            topic: topic.to_string(),
            partition,
            partitions,
        })?;
        Ok((id, p))
    }

    pub fn partition(&self, topic: &TopicName, partition: PartitionId) -> Result<&PartitionState, MetaError> {
        let t = self.topics.get(topic).ok_or_else(|| MetaError::TopicNotFound(topic.to_string()))?;
        t.partitions.get(partition as usize).ok_or_else(|| MetaError::PartitionNotFound {
            topic: topic.to_string(),
            partition,
            partitions: t.partitions.len() as u32,
        })
    }

    pub fn topic_info(&self, name: &TopicName) -> Result<TopicInfo, MetaError> {
        let t = self.topics.get(name).ok_or_else(|| MetaError::TopicNotFound(name.to_string()))?;
        Ok(TopicInfo {
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

fn group_reply(result: Result<(), MetaError>) -> CommandReply {
    match result {
        Ok(()) => CommandReply::GroupChanged,
        Err(e) => CommandReply::Failed(e),
    }
}

/// Applies a JSON merge patch (RFC 7386) to a topic config: fields given
/// replace, `null` clears; unknown fields are refused.
fn merge_config(config: &TopicConfig, patch: &serde_json::Value) -> Result<TopicConfig, MetaError> {
    let invalid = |e: serde_json::Error| MetaError::Invalid(format!("config: {e}"));
    let serde_json::Value::Object(fields) = patch else {
        return Err(MetaError::Invalid("config must be an object".into()));
    };
    let mut merged = match serde_json::to_value(config).map_err(invalid)? {
        serde_json::Value::Object(map) => map,
        _ => serde_json::Map::new(),
    };
    for (key, value) in fields {
        if value.is_null() {
            merged.remove(key);
        } else {
            merged.insert(key.clone(), value.clone());
        }
    }
    serde_json::from_value(serde_json::Value::Object(merged)).map_err(invalid)
}

impl PartitionState {
    /// The chunks holding `offset` and after, at most `max` of them.
    pub fn chunks_from(&self, offset: Offset, max: usize) -> Vec<(Offset, ChunkRef)> {
        let first =
            self.index.range(..=offset).next_back().map(|(base, _)| *base).filter(|base| {
                self.index.get(base).is_some_and(|c| offset < base + u64::from(c.record_count))
            });
        let start = match first {
            Some(base) => Bound::Included(base),
            None => Bound::Excluded(offset),
        };
        self.index.range((start, Bound::Unbounded)).take(max).map(|(b, c)| (*b, c.clone())).collect()
    }
}

#[cfg(test)]
mod tests;
