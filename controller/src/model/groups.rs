//! Consumer groups: members, their server-side assignment, and committed
//! offsets, all in the replicated state (KIP-848's design: the controller
//! assigns, members only heartbeat).
//!
//! Only changes go through the log: a join (or a changed subscription), a
//! member acknowledging a revocation, a leave or an expiry, a commit. Plain
//! heartbeats are answered by the leader from its state and only refresh a
//! liveness clock it keeps in memory (`node.rs`).
//!
//! Rebalancing is incremental: after every change the target assignment is
//! recomputed (each topic's partitions spread evenly over the members
//! subscribed to it, owners keeping theirs up to their share); a partition a
//! member owns but should not is first moved to its `revoking` set, and is
//! given to its new owner only once no member owns or revokes it. A member's
//! epoch is the group's epoch at its last assignment change, so epochs are
//! unique in a group and a commit names exactly one assignment.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use shale_controller_client::group::{
    self, AssignedPartition, CommitOffsets, CommittedOffset, GroupInfo, MAX_COMMIT_OFFSETS, MAX_METADATA_LEN,
    MAX_SESSION_TIMEOUT_MS, MAX_SUBSCRIBED_TOPICS, MIN_SESSION_TIMEOUT_MS, MemberAssignment, MemberInfo,
    OffsetCommit, TopicPartition,
};
use shale_core::{Offset, TopicName};

use super::classic::ClassicGroup;
use super::{MetaError, Metadata, TopicState};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberState {
    pub topics: BTreeSet<TopicName>,
    pub session_timeout_ms: u64,
    pub instance_id: Option<String>,
    pub epoch: u64,
    pub owned: BTreeSet<TopicPartition>,
    pub revoking: BTreeSet<TopicPartition>,
    /// Partitions the target gives this member that another still holds.
    #[serde(default)]
    pub waiting: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Committed {
    pub offset: Offset,
    pub metadata: Option<String>,
    pub committed_ms: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupState {
    pub epoch: u64,
    pub members: BTreeMap<String, MemberState>,
    pub offsets: BTreeMap<TopicPartition, Committed>,
    /// Members of Kafka's classic protocol; a group has these or `members`,
    /// never both.
    #[serde(default)]
    pub classic: ClassicGroup,
}

impl GroupState {
    pub fn info(&self, name: &str) -> GroupInfo {
        GroupInfo {
            group: name.to_owned(),
            group_epoch: self.epoch,
            members: self
                .members
                .iter()
                .map(|(id, m)| MemberInfo {
                    member_id: id.clone(),
                    instance_id: m.instance_id.clone(),
                    member_epoch: m.epoch,
                    topics: m.topics.iter().cloned().collect(),
                    session_timeout_ms: m.session_timeout_ms,
                    assignment: m.owned.iter().cloned().collect(),
                    revoking: m.revoking.iter().cloned().collect(),
                })
                .collect(),
            offsets: self
                .offsets
                .iter()
                .map(|(tp, c)| CommittedOffset {
                    topic: tp.topic.clone(),
                    partition: tp.partition,
                    offset: c.offset,
                    metadata: c.metadata.clone(),
                    committed_ms: c.committed_ms,
                })
                .collect(),
            classic: (self.classic.generation > 0 || !self.classic.is_empty()).then(|| self.classic.info()),
        }
    }

    /// Whether any member, of either protocol, is in the group.
    pub fn has_members(&self) -> bool {
        !self.members.is_empty() || !self.classic.is_empty()
    }

    /// Whether nothing is left of the group worth keeping.
    pub(super) fn is_vacant(&self) -> bool {
        !self.has_members() && self.offsets.is_empty()
    }

    pub fn assignment(&self, group: &str, member_id: &str) -> Option<MemberAssignment> {
        let m = self.members.get(member_id)?;
        Some(MemberAssignment {
            group: group.to_owned(),
            member_id: member_id.to_owned(),
            member_epoch: m.epoch,
            assignment: m
                .owned
                .iter()
                .map(|tp| AssignedPartition {
                    topic: tp.topic.clone(),
                    partition: tp.partition,
                    committed_offset: self.offsets.get(tp).map(|c| c.offset),
                })
                .collect(),
            revoke: m.revoking.iter().cloned().collect(),
            heartbeat_interval_ms: group::heartbeat_interval_ms(
                m.session_timeout_ms,
                !m.revoking.is_empty() || m.waiting > 0,
            ),
            session_timeout_ms: m.session_timeout_ms,
        })
    }

    /// Recomputes the target assignment and moves toward it: revokes what a
    /// member should no longer own, gives out what nobody owns or revokes.
    fn reconcile(&mut self, topics: &BTreeMap<TopicName, TopicState>) {
        let exists = |tp: &TopicPartition| {
            topics.get(&tp.topic).is_some_and(|t| (tp.partition as usize) < t.partitions.len())
        };
        let target = self.target(topics);
        let mut changed: BTreeSet<String> = BTreeSet::new();
        for (id, m) in &mut self.members {
            let before = (m.owned.len(), m.revoking.len());
            m.revoking.retain(exists);
            let (keep, revoke): (BTreeSet<_>, BTreeSet<_>) =
                std::mem::take(&mut m.owned).into_iter().partition(|tp| target.get(tp) == Some(id));
            m.owned = keep;
            m.revoking.extend(revoke.into_iter().filter(exists));
            if before != (m.owned.len(), m.revoking.len()) {
                changed.insert(id.clone());
            }
        }
        let held: BTreeSet<TopicPartition> =
            self.members.values().flat_map(|m| m.owned.iter().chain(&m.revoking).cloned()).collect();
        for m in self.members.values_mut() {
            m.waiting = 0;
        }
        for (tp, id) in target {
            if held.contains(&tp) {
                if let Some(m) = self.members.get_mut(&id).filter(|m| !m.owned.contains(&tp)) {
                    m.waiting += 1;
                }
                continue;
            }
            if let Some(m) = self.members.get_mut(&id) {
                m.owned.insert(tp);
                changed.insert(id);
            }
        }
        for id in changed {
            if let Some(m) = self.members.get_mut(&id) {
                self.epoch += 1;
                m.epoch = self.epoch;
            }
        }
    }

    /// Per subscribed topic, its partitions spread evenly over the members
    /// subscribed to it: ⌊n/k⌋ or ⌈n/k⌉ each, the larger shares to those
    /// already owning most of it; owners keep theirs up to their share, the
    /// rest go to the members with the fewest partitions of the group.
    fn target(&self, topics: &BTreeMap<TopicName, TopicState>) -> BTreeMap<TopicPartition, String> {
        let subscribed: BTreeSet<&TopicName> = self.members.values().flat_map(|m| &m.topics).collect();
        let owner: BTreeMap<&TopicPartition, &str> =
            self.members.iter().flat_map(|(id, m)| m.owned.iter().map(move |tp| (tp, id.as_str()))).collect();
        let mut total: BTreeMap<&str, usize> = self.members.keys().map(|id| (id.as_str(), 0)).collect();
        let mut target = BTreeMap::new();
        for name in subscribed {
            let Some(topic) = topics.get(name) else { continue };
            let members: Vec<&str> = self
                .members
                .iter()
                .filter(|(_, m)| m.topics.contains(name))
                .map(|(id, _)| id.as_str())
                .collect();
            let n = topic.partitions.len();
            let tps: Vec<TopicPartition> =
                (0..n as u32).map(|partition| TopicPartition { topic: name.clone(), partition }).collect();
            let mut owning: BTreeMap<&str, usize> = members.iter().map(|m| (*m, 0)).collect();
            for tp in &tps {
                if let Some(n) = owner.get(tp).and_then(|o| owning.get_mut(o)) {
                    *n += 1;
                }
            }
            let mut ranked = members.clone();
            ranked.sort_by_key(|m| (Reverse(owning[m]), *m));
            let (base, extra) = (n / members.len(), n % members.len());
            let share: BTreeMap<&str, usize> =
                ranked.iter().enumerate().map(|(i, m)| (*m, base + usize::from(i < extra))).collect();
            let mut kept: BTreeMap<&str, usize> = members.iter().map(|m| (*m, 0)).collect();
            let mut orphans = Vec::new();
            for tp in tps {
                match owner.get(&tp).and_then(|o| kept.get_key_value(o)) {
                    Some((&m, &k)) if k < share[m] => {
                        *kept.entry(m).or_default() += 1;
                        target.insert(tp, m.to_owned());
                    }
                    _ => orphans.push(tp),
                }
            }
            for tp in orphans {
                let Some(m) = members
                    .iter()
                    .copied()
                    .filter(|m| kept[m] < share[m])
                    .min_by_key(|m| (kept[m] + total[m], *m))
                else {
                    break; // unreachable: the shares add up to the partition count
                };
                *kept.entry(m).or_default() += 1;
                target.insert(tp, m.to_owned());
            }
            for (m, k) in kept {
                *total.entry(m).or_default() += k;
            }
        }
        target
    }
}

impl Metadata {
    pub(super) fn join_group(
        &mut self,
        group: &str,
        member_id: &str,
        topics: &[TopicName],
        session_timeout_ms: u64,
        instance_id: Option<&str>,
    ) -> Result<MemberAssignment, MetaError> {
        group::validate_id("a group id", group).map_err(MetaError::Invalid)?;
        group::validate_id("a member id", member_id).map_err(MetaError::Invalid)?;
        if let Some(instance) = instance_id {
            group::validate_id("an instance id", instance).map_err(MetaError::Invalid)?;
        }
        if topics.is_empty() || topics.len() > MAX_SUBSCRIBED_TOPICS {
            return Err(MetaError::Invalid(format!(
                "a member subscribes to 1 to {MAX_SUBSCRIBED_TOPICS} topics, not {}",
                topics.len()
            )));
        }
        if !(MIN_SESSION_TIMEOUT_MS..=MAX_SESSION_TIMEOUT_MS).contains(&session_timeout_ms) {
            return Err(MetaError::Invalid(format!(
                "session_timeout_ms must be between {MIN_SESSION_TIMEOUT_MS} and {MAX_SESSION_TIMEOUT_MS}"
            )));
        }
        if let Some(missing) = topics.iter().find(|t| !self.topics.contains_key(*t)) {
            return Err(MetaError::TopicNotFound(missing.to_string()));
        }
        let g = self.groups.entry(group.to_owned()).or_default();
        if !g.classic.is_empty() {
            return Err(MetaError::GroupKindMismatch(format!(
                "group {group} has members of Kafka's classic protocol (client-side assignment); \
                 a group's kind is fixed by its first member: use another group"
            )));
        }
        // static membership: a new member id for a known instance takes over
        // the old member's assignment, with no rebalance
        let replaced = instance_id.and_then(|instance| {
            g.members
                .iter()
                .find(|(id, m)| m.instance_id.as_deref() == Some(instance) && id.as_str() != member_id)
                .map(|(id, _)| id.clone())
        });
        let inherited = replaced.and_then(|id| g.members.remove(&id));
        let member = g.members.entry(member_id.to_owned()).or_insert_with(|| MemberState {
            topics: BTreeSet::new(),
            session_timeout_ms,
            instance_id: None,
            epoch: 0,
            owned: BTreeSet::new(),
            revoking: BTreeSet::new(),
            waiting: 0,
        });
        if let Some(old) = inherited {
            member.owned = old.owned;
            member.revoking = old.revoking;
            g.epoch += 1;
            member.epoch = g.epoch;
        }
        member.topics = topics.iter().cloned().collect();
        member.session_timeout_ms = session_timeout_ms;
        member.instance_id = instance_id.map(str::to_owned);
        if member.epoch == 0 {
            g.epoch += 1;
            member.epoch = g.epoch;
        }
        g.reconcile(&self.topics);
        g.assignment(group, member_id).ok_or_else(|| MetaError::Invalid("the member vanished".into()))
    }

    pub(super) fn ack_revocation(
        &mut self,
        group: &str,
        member_id: &str,
        epoch: u64,
    ) -> Result<(), MetaError> {
        let g = self.groups.get_mut(group).ok_or_else(|| MetaError::GroupNotFound(group.to_owned()))?;
        let m = g.members.get_mut(member_id).ok_or_else(|| member_not_found(group, member_id))?;
        if epoch >= m.epoch && !m.revoking.is_empty() {
            m.revoking.clear();
            g.reconcile(&self.topics);
        }
        Ok(())
    }

    /// Removes the members named (each only at the epoch given, if one is),
    /// and the group if nothing is left of it.
    pub(super) fn leave_group(
        &mut self,
        group: &str,
        members: &[(String, Option<u64>)],
    ) -> Result<(), MetaError> {
        let g = self.groups.get_mut(group).ok_or_else(|| MetaError::GroupNotFound(group.to_owned()))?;
        let mut left = false;
        for (id, epoch) in members {
            if g.members.get(id).is_some_and(|m| epoch.is_none_or(|e| e == m.epoch)) {
                g.members.remove(id);
                left = true;
            }
        }
        if !left && members.len() == 1 {
            return Err(member_not_found(group, &members[0].0));
        }
        g.reconcile(&self.topics);
        if g.is_vacant() {
            self.groups.remove(group);
        }
        Ok(())
    }

    pub(super) fn commit_offsets(
        &mut self,
        group: &str,
        commit: &CommitOffsets,
        now_ms: i64,
    ) -> Result<(), MetaError> {
        group::validate_id("a group id", group).map_err(MetaError::Invalid)?;
        if commit.offsets.is_empty() || commit.offsets.len() > MAX_COMMIT_OFFSETS {
            return Err(MetaError::Invalid(format!("a commit holds 1 to {MAX_COMMIT_OFFSETS} offsets")));
        }
        for o in &commit.offsets {
            self.check_offset(o)?;
        }
        let g = self.groups.get(group);
        match &commit.member {
            Some((id, epoch)) => {
                let g = g.ok_or_else(|| MetaError::GroupNotFound(group.to_owned()))?;
                if g.classic.members.contains_key(id) {
                    // Kafka's rule: the member's generation, not while the
                    // leader's assignment is awaited
                    let generation = i32::try_from(*epoch).unwrap_or(i32::MAX);
                    g.classic.check_commit(id, generation).map_err(|e| {
                        MetaError::StaleMember(format!("member {id} of group {group}: {e:?}"))
                    })?;
                    self.set_offsets(group, &commit.offsets, now_ms);
                    return Ok(());
                }
                let m = g.members.get(id).ok_or_else(|| member_not_found(group, id))?;
                if *epoch != m.epoch {
                    return Err(MetaError::StaleMember(format!(
                        "member {id} of group {group} is at epoch {}, not {epoch}: heartbeat for the current assignment",
                        m.epoch
                    )));
                }
                if let Some(o) = commit.offsets.iter().find(|o| {
                    let tp = TopicPartition { topic: o.topic.clone(), partition: o.partition };
                    !m.owned.contains(&tp) && !m.revoking.contains(&tp)
                }) {
                    return Err(MetaError::StaleMember(format!(
                        "member {id} of group {group} does not own {}/{}",
                        o.topic, o.partition
                    )));
                }
            }
            None => {
                if g.is_some_and(GroupState::has_members) {
                    return Err(MetaError::GroupNotEmpty(group.to_owned()));
                }
            }
        }
        self.set_offsets(group, &commit.offsets, now_ms);
        Ok(())
    }

    pub(super) fn reset_offsets(
        &mut self,
        group: &str,
        offsets: &[OffsetCommit],
        now_ms: i64,
    ) -> Result<(), MetaError> {
        group::validate_id("a group id", group).map_err(MetaError::Invalid)?;
        if self.groups.get(group).is_some_and(GroupState::has_members) {
            return Err(MetaError::GroupNotEmpty(group.to_owned()));
        }
        if offsets.len() > MAX_COMMIT_OFFSETS {
            return Err(MetaError::Invalid(format!("a reset holds at most {MAX_COMMIT_OFFSETS} offsets")));
        }
        for o in offsets {
            self.check_offset(o)?;
        }
        self.set_offsets(group, offsets, now_ms);
        Ok(())
    }

    /// Forgets the group's offsets of these partitions; partitions without
    /// one are no error, as in Kafka.
    pub(super) fn delete_offsets(
        &mut self,
        group: &str,
        partitions: &[TopicPartition],
    ) -> Result<(), MetaError> {
        let g = self.groups.get_mut(group).ok_or_else(|| MetaError::GroupNotFound(group.to_owned()))?;
        for tp in partitions {
            g.offsets.remove(tp);
        }
        Ok(())
    }

    pub(super) fn delete_group(&mut self, group: &str) -> Result<(), MetaError> {
        match self.groups.get(group) {
            None => Err(MetaError::GroupNotFound(group.to_owned())),
            Some(g) if g.has_members() => Err(MetaError::GroupNotEmpty(group.to_owned())),
            Some(_) => {
                self.groups.remove(group);
                Ok(())
            }
        }
    }

    /// Rebalances every group (topics came, went or grew) and forgets the
    /// offsets of partitions that no longer exist.
    pub(super) fn reconcile_groups(&mut self) {
        let topics = &self.topics;
        for g in self.groups.values_mut() {
            g.offsets.retain(|tp, _| {
                topics.get(&tp.topic).is_some_and(|t| (tp.partition as usize) < t.partitions.len())
            });
            g.reconcile(topics);
        }
        self.groups.retain(|_, g| !g.is_vacant());
    }

    fn check_offset(&self, o: &OffsetCommit) -> Result<(), MetaError> {
        let p = self.partition(&o.topic, o.partition)?;
        if o.offset > p.high_watermark {
            return Err(MetaError::Invalid(format!(
                "offset {} of {}/{} is past its high watermark {}",
                o.offset, o.topic, o.partition, p.high_watermark
            )));
        }
        if o.metadata.as_ref().is_some_and(|m| m.len() > MAX_METADATA_LEN) {
            return Err(MetaError::Invalid(format!("commit metadata is at most {MAX_METADATA_LEN} bytes")));
        }
        Ok(())
    }

    fn set_offsets(&mut self, group: &str, offsets: &[OffsetCommit], now_ms: i64) {
        let g = self.groups.entry(group.to_owned()).or_default();
        for o in offsets {
            let tp = TopicPartition { topic: o.topic.clone(), partition: o.partition };
            g.offsets.insert(
                tp,
                Committed { offset: o.offset, metadata: o.metadata.clone(), committed_ms: now_ms },
            );
        }
    }
}

fn member_not_found(group: &str, member: &str) -> MetaError {
    MetaError::MemberNotFound { group: group.to_owned(), member: member.to_owned() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::TopicConfig;

    fn topic(name: &str) -> TopicName {
        TopicName::new(name.to_owned()).expect("valid name")
    }

    fn with_topic(partitions: u32) -> Metadata {
        let mut m = Metadata::default();
        m.create_topic(&topic("t"), partitions, &TopicConfig::default(), 0).expect("created");
        m
    }

    fn join(m: &mut Metadata, member: &str) -> MemberAssignment {
        m.join_group("g", member, &[topic("t")], 10_000, None).expect("joined")
    }

    fn owned(m: &Metadata, member: &str) -> usize {
        m.groups["g"].members[member].owned.len()
    }

    #[test]
    fn a_partition_is_revoked_before_it_moves() {
        let mut m = with_topic(6);
        let a = join(&mut m, "a");
        assert_eq!(a.assignment.len(), 6);
        let b = join(&mut m, "b");
        // b waits: a still owns what b should get, and must revoke it first;
        // both heartbeat fast until the hand-over is done
        assert!(b.assignment.is_empty(), "{b:?}");
        assert_eq!(b.heartbeat_interval_ms, group::RECONCILING_HEARTBEAT_MS);
        let a2 = m.groups["g"].assignment("g", "a").expect("member");
        assert_eq!((a2.assignment.len(), a2.revoke.len()), (3, 3));
        assert!(a2.member_epoch > a.member_epoch);
        // a's commit for a revoking partition at the new epoch is taken
        let revoked = &a2.revoke[0];
        let commit = CommitOffsets {
            member: Some(("a".into(), a2.member_epoch)),
            offsets: vec![OffsetCommit {
                topic: revoked.topic.clone(),
                partition: revoked.partition,
                offset: 0,
                metadata: None,
            }],
        };
        m.commit_offsets("g", &commit, 1).expect("revoking partitions may be committed");
        // at the old epoch, nothing changes
        let stale = CommitOffsets { member: Some(("a".into(), a.member_epoch)), ..commit.clone() };
        assert!(matches!(m.commit_offsets("g", &stale, 2), Err(MetaError::StaleMember(_))));
        assert_eq!(a2.heartbeat_interval_ms, group::RECONCILING_HEARTBEAT_MS);
        m.ack_revocation("g", "a", a2.member_epoch).expect("acked");
        assert_eq!((owned(&m, "a"), owned(&m, "b")), (3, 3));
        let settled = m.groups["g"].assignment("g", "b").expect("member");
        assert_eq!(
            settled.heartbeat_interval_ms,
            10_000 / 3,
            "a settled member heartbeats a third of its session"
        );
        let held: BTreeSet<_> = m.groups["g"].members.values().flat_map(|m| m.owned.iter()).collect();
        assert_eq!(held.len(), 6, "every partition has exactly one owner");
        // b does not own what a kept
        let b_commit =
            CommitOffsets { member: Some(("b".into(), m.groups["g"].members["b"].epoch)), ..commit };
        let a_kept = m.groups["g"].members["a"].owned.iter().next().cloned().expect("a partition");
        let mut b_commit = b_commit;
        b_commit.offsets[0].partition = a_kept.partition;
        assert!(matches!(m.commit_offsets("g", &b_commit, 3), Err(MetaError::StaleMember(_))));
    }

    #[test]
    fn leaving_hands_partitions_over_at_once() {
        let mut m = with_topic(4);
        join(&mut m, "a");
        join(&mut m, "b");
        let epoch = m.groups["g"].members["a"].epoch;
        m.ack_revocation("g", "a", epoch).expect("acked");
        m.leave_group("g", &[("a".into(), None)]).expect("left");
        assert_eq!(owned(&m, "b"), 4);
        // an expiry at a stale epoch does not remove a member that moved on
        let b_epoch = m.groups["g"].members["b"].epoch;
        m.leave_group("g", &[("b".into(), Some(b_epoch - 1))]).expect_err("b is at a newer epoch");
        assert!(m.groups["g"].members.contains_key("b"));
    }

    #[test]
    fn manual_commits_only_without_members() {
        let mut m = with_topic(2);
        let o = OffsetCommit { topic: topic("t"), partition: 1, offset: 0, metadata: Some("x".into()) };
        let manual = CommitOffsets { member: None, offsets: vec![o.clone()] };
        m.commit_offsets("g", &manual, 5).expect("an empty group takes manual commits");
        join(&mut m, "a");
        assert!(matches!(m.commit_offsets("g", &manual, 6), Err(MetaError::GroupNotEmpty(_))));
        assert!(matches!(
            m.reset_offsets("g", std::slice::from_ref(&o), 6),
            Err(MetaError::GroupNotEmpty(_))
        ));
        assert!(matches!(m.delete_group("g"), Err(MetaError::GroupNotEmpty(_))));
        let past = OffsetCommit { offset: 1, ..o };
        m.leave_group("g", &[("a".into(), None)]).expect("left");
        let too_far = CommitOffsets { member: None, offsets: vec![past] };
        assert!(matches!(m.commit_offsets("g", &too_far, 7), Err(MetaError::Invalid(_))));
        assert_eq!(m.groups["g"].offsets.len(), 1, "the group keeps its offsets");
        m.delete_group("g").expect("deleted");
        assert!(m.groups.is_empty());
    }

    #[test]
    fn a_static_member_takes_over_its_instance() {
        let mut m = with_topic(3);
        let first = m.join_group("g", "a1", &[topic("t")], 10_000, Some("host-1")).expect("joined");
        let again = m.join_group("g", "a2", &[topic("t")], 10_000, Some("host-1")).expect("joined");
        assert_eq!(again.assignment.len(), 3);
        assert!(again.member_epoch > first.member_epoch);
        assert!(!m.groups["g"].members.contains_key("a1"));
    }

    #[test]
    fn deleted_topics_leave_groups() {
        let mut m = with_topic(2);
        join(&mut m, "a");
        m.apply(&crate::types::Command::DeleteTopic { name: topic("t") });
        assert_eq!(owned(&m, "a"), 0);
        assert!(m.groups["g"].members["a"].revoking.is_empty());
    }
}
