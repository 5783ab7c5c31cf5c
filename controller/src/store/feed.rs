//! The metadata feed (`shale_controller_client::watch`): the changes each
//! applied entry made to topics and partition indexes, kept in a bounded
//! buffer by log index so gateways can long-poll for what is new. Derived
//! on every node from the entries it applies, never replicated.

use std::collections::VecDeque;

use shale_controller_client::SegmentOutcomes;
use shale_controller_client::watch::{Change, PartitionMirror, TopicMirror};

use crate::model::{Metadata, PartitionState};
use crate::types::{Command, CommandReply, CommitSegment};

/// Changes kept; a gateway further behind gets the whole state again.
const KEPT_CHANGES: usize = 50_000;

#[derive(Debug, Default)]
pub struct Feed {
    /// Changes at or below this index may be gone from the buffer.
    floor: u64,
    changes: VecDeque<(u64, Change)>,
}

impl Feed {
    pub fn push(&mut self, index: u64, change: Change) {
        if self.changes.len() >= KEPT_CHANGES
            && let Some((gone, _)) = self.changes.pop_front()
        {
            self.floor = gone;
        }
        self.changes.push_back((index, change));
    }

    /// Forgets every change: the state was replaced (a snapshot installed).
    pub fn reset(&mut self, index: u64) {
        self.changes.clear();
        self.floor = index;
    }

    /// The changes after `version`, or `None` if some may be gone.
    pub fn since(&self, version: u64) -> Option<Vec<Change>> {
        if version < self.floor {
            return None;
        }
        let first = self.changes.partition_point(|(i, _)| *i <= version);
        Some(self.changes.range(first..).map(|(_, c)| c.clone()).collect())
    }
}

pub fn partition_mirror(p: &PartitionState) -> PartitionMirror {
    PartitionMirror {
        log_start_offset: p.log_start_offset,
        high_watermark: p.high_watermark,
        leader: p.leader.clone(),
        leader_epoch: p.leader_epoch,
        index: p.index.iter().map(|(b, c)| (*b, c.clone())).collect(),
    }
}

/// Every topic with its partitions' whole state.
pub fn mirror(m: &Metadata) -> Vec<TopicMirror> {
    m.topics
        .iter()
        .map(|(name, t)| TopicMirror {
            name: name.clone(),
            id: t.id,
            config: t.config.clone(),
            created_ms: t.created_ms,
            partitions: t.partitions.iter().map(partition_mirror).collect(),
        })
        .collect()
}

/// Whether a command may move partition leaders (every rebalance does).
fn moves_leaders(command: &Command) -> bool {
    matches!(
        command,
        Command::CreateTopic { .. }
            | Command::DeleteTopic { .. }
            | Command::UpdateTopic { .. }
            | Command::GatewayHeartbeat { .. }
            | Command::ExpireGateways { .. }
            | Command::GatewayLeave { .. }
    )
}

/// Leader epochs only grow and every leader change bumps one, so their sum
/// changes exactly when some leader did.
fn leader_fingerprint(m: &Metadata) -> u64 {
    m.topics.values().flat_map(|t| &t.partitions).fold(0u64, |sum, p| sum.wrapping_add(p.leader_epoch))
}

/// Each partition's (log start, index length): what retention changes.
fn starts(m: &Metadata) -> Vec<(u64, usize)> {
    m.topics.values().flat_map(|t| &t.partitions).map(|p| (p.log_start_offset, p.index.len())).collect()
}

/// The chunks of `commit` that were given offsets, as feed changes.
fn appended(m: &Metadata, commit: &CommitSegment, outcomes: &SegmentOutcomes, changes: &mut Vec<Change>) {
    for (chunk, outcome) in commit.chunks.iter().zip(outcomes) {
        let Ok(base) = outcome else { continue };
        let Ok(p) = m.partition(&chunk.topic, chunk.partition) else { continue };
        if let Some(c) = p.index.get(base) {
            changes.push(Change::Appended {
                topic: chunk.topic.clone(),
                partition: chunk.partition,
                base_offset: *base,
                chunk: c.clone(),
            });
        }
    }
}

/// Applies `command` and says what it changed for the feed.
pub fn apply(m: &mut Metadata, command: &Command) -> (CommandReply, Vec<Change>) {
    let leaders_before = moves_leaders(command).then(|| leader_fingerprint(m));
    let starts_before = matches!(command, Command::ApplyRetention { .. }).then(|| starts(m));
    let reply = m.apply(command);
    let mut changes = Vec::new();
    match (command, &reply) {
        (Command::CommitSegment(commit), CommandReply::Committed(outcomes)) => {
            appended(m, commit, outcomes, &mut changes);
        }
        (Command::CommitSegments(commits), CommandReply::CommittedSegments(outcomes)) => {
            for (commit, outcomes) in commits.iter().zip(outcomes) {
                appended(m, commit, outcomes, &mut changes);
            }
        }
        (Command::ReplaceRange(r), CommandReply::Replaced) => {
            if let Ok(p) = m.partition(&r.topic, r.partition) {
                let state = partition_mirror(p);
                changes.push(Change::Partition { topic: r.topic.clone(), partition: r.partition, state });
            }
        }
        (Command::ApplyRetention { .. }, CommandReply::RetentionApplied(n)) if *n > 0 => {
            let before = starts_before.unwrap_or_default();
            let mut i = 0;
            for (name, t) in &m.topics {
                for (partition, p) in t.partitions.iter().enumerate() {
                    if before.get(i) != Some(&(p.log_start_offset, p.index.len())) {
                        let state = partition_mirror(p);
                        changes.push(Change::Partition {
                            topic: name.clone(),
                            partition: partition as u32,
                            state,
                        });
                    }
                    i += 1;
                }
            }
        }
        (Command::CreateTopic { name, .. }, CommandReply::TopicCreated(_))
        | (Command::UpdateTopic { name, .. }, CommandReply::TopicUpdated(_)) => {
            if let Some(t) = m.topics.get(name) {
                changes.push(Change::Topic(TopicMirror {
                    name: name.clone(),
                    id: t.id,
                    config: t.config.clone(),
                    created_ms: t.created_ms,
                    partitions: t.partitions.iter().map(partition_mirror).collect(),
                }));
            }
        }
        (Command::DeleteTopic { name }, CommandReply::TopicDeleted) => {
            changes.push(Change::TopicDeleted { topic: name.clone() })
        }
        _ => {}
    }
    if leaders_before.is_some_and(|before| before != leader_fingerprint(m)) {
        let leaders = m
            .topics
            .iter()
            .map(|(name, t)| {
                (name.clone(), t.partitions.iter().map(|p| (p.leader.clone(), p.leader_epoch)).collect())
            })
            .collect();
        changes.push(Change::Leaders { leaders });
    }
    (reply, changes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shale_controller_client::watch::Change;

    #[test]
    fn a_version_behind_the_floor_gets_nothing() {
        let mut feed = Feed::default();
        let deleted =
            |n: &str| Change::TopicDeleted { topic: shale_core::TopicName::new(n.to_owned()).expect("name") };
        for i in 1..=3 {
            feed.push(i, deleted("a"));
        }
        assert_eq!(feed.since(1).map(|c| c.len()), Some(2));
        assert_eq!(feed.since(3).map(|c| c.len()), Some(0));
        feed.reset(10);
        assert_eq!(feed.since(3), None);
        assert_eq!(feed.since(10).map(|c| c.len()), Some(0));
    }
}
