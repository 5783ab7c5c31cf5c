//! Kafka's classic group protocol, as Kafka's own coordinator runs it:
//!
//! - A join moves the group to `Joining` (Kafka's PreparingRebalance) when
//!   it brings a new member, changed metadata, or the leader's rejoin;
//!   every other member must join again within the rebalance timeout.
//! - When all have joined (or the deadline passes, dropping the rest), the
//!   generation is bumped, a protocol every member offers is chosen by
//!   vote, the leader is kept or elected, and the group waits in `Syncing`
//!   (CompletingRebalance) for the leader's assignment.
//! - The leader's SyncGroup stores each member's assignment as opaque
//!   bytes and the group is `Stable`.
//!
//! An empty group's first rebalance waits [`INITIAL_REBALANCE_DELAY_MS`]
//! for more members, as Kafka's `group.initial.rebalance.delay.ms` does.
//! Static members (`group.instance.id`) that come back under a new member
//! id take over their old id's place without a rebalance. Pure: every
//! time comes in the command.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use shale_controller_client::classic::{
    ClassicAnswer, ClassicError, ClassicInfo, ClassicJoin, ClassicMemberInfo, ClassicMemberMeta,
    ClassicProtocol, ClassicRequest, ClassicSync, INITIAL_REBALANCE_DELAY_MS, MAX_MEMBER_BYTES, MAX_MEMBERS,
    MAX_PROTOCOLS, MAX_REBALANCE_TIMEOUT_MS, MIN_REBALANCE_TIMEOUT_MS,
};
use shale_controller_client::group::{self, MAX_SESSION_TIMEOUT_MS, MIN_SESSION_TIMEOUT_MS};

use super::Metadata;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    #[default]
    Empty,
    /// Members are joining; the round ends by `deadline_ms` at the latest.
    Joining {
        deadline_ms: i64,
        initial: bool,
    },
    /// Waiting for the leader's assignment until `deadline_ms`.
    Syncing {
        deadline_ms: i64,
    },
    Stable,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassicMember {
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: u64,
    pub rebalance_timeout_ms: u64,
    pub protocols: Vec<ClassicProtocol>,
    /// Joined in the current round (or is in the current generation).
    pub joined: bool,
    pub assignment: Vec<u8>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassicGroup {
    pub protocol_type: String,
    pub protocol: Option<String>,
    pub generation: i32,
    pub leader: Option<String>,
    pub phase: Phase,
    pub members: BTreeMap<String, ClassicMember>,
}

/// What the controller must do for a request: answer from its state, or
/// propose the request through the log (whose reply is the answer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Answer(ClassicAnswer),
    Write,
}

impl ClassicGroup {
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn info(&self) -> ClassicInfo {
        let protocol = self.protocol.clone().unwrap_or_default();
        ClassicInfo {
            protocol_type: self.protocol_type.clone(),
            state: match self.phase {
                Phase::Empty => "Empty",
                Phase::Joining { .. } => "PreparingRebalance",
                Phase::Syncing { .. } => "CompletingRebalance",
                Phase::Stable => "Stable",
            }
            .to_owned(),
            generation: self.generation,
            leader: self.leader.clone(),
            members: self
                .members
                .iter()
                .map(|(id, m)| ClassicMemberInfo {
                    member_id: id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: metadata_for(m, &protocol),
                    assignment: m.assignment.clone(),
                })
                .collect(),
            protocol,
        }
    }

    /// The member id holding `instance`, if a static member does.
    fn holder(&self, instance: &str) -> Option<&String> {
        self.members.iter().find(|(_, m)| m.instance_id.as_deref() == Some(instance)).map(|(id, _)| id)
    }

    /// Refuses a member id that is not (or no longer) the holder of its
    /// instance id.
    fn check_member(&self, member_id: &str, instance_id: Option<&str>) -> Result<(), ClassicError> {
        if let Some(instance) = instance_id
            && let Some(holder) = self.holder(instance)
            && holder != member_id
        {
            return Err(ClassicError::FencedInstanceId);
        }
        if self.members.contains_key(member_id) { Ok(()) } else { Err(ClassicError::UnknownMemberId) }
    }

    /// Whether a join needs the log, or what to answer from the state.
    pub fn join_step(&self, join: &ClassicJoin) -> Step {
        if let Some(e) = self.join_refusal(join) {
            return Step::Answer(ClassicAnswer::Refused(e));
        }
        let Some(m) = self.members.get(&join.member_id) else { return Step::Write };
        let unchanged = m.protocols == join.protocols
            && m.instance_id == join.instance_id
            && m.session_timeout_ms == join.session_timeout_ms
            && m.rebalance_timeout_ms == join.rebalance_timeout_ms;
        if !unchanged || !m.joined {
            return Step::Write;
        }
        match self.phase {
            Phase::Joining { .. } => Step::Answer(ClassicAnswer::Pending),
            Phase::Syncing { .. } => Step::Answer(self.joined_answer(&join.member_id)),
            Phase::Stable if self.leader.as_deref() != Some(join.member_id.as_str()) => {
                Step::Answer(self.joined_answer(&join.member_id))
            }
            // the leader joining again asks for a new assignment
            Phase::Stable | Phase::Empty => Step::Write,
        }
    }

    /// Why a join is refused, if it is: checked on the state alone, so a
    /// refusal costs no log entry. A member id the group does not know
    /// joins as a new member: it is the one the gateway handed out with
    /// MEMBER_ID_REQUIRED (Kafka's pending member).
    fn join_refusal(&self, join: &ClassicJoin) -> Option<ClassicError> {
        if let Err(e) = validate_join(join) {
            return Some(e);
        }
        if !self.members.is_empty()
            && (join.protocol_type != self.protocol_type
                || !join.protocols.iter().any(|p| self.all_offer(&p.name, Some(&join.member_id))))
        {
            return Some(ClassicError::InconsistentGroupProtocol);
        }
        let holder = join.instance_id.as_deref().and_then(|i| self.holder(i));
        if holder.is_some_and(|old| *old != join.member_id) && !join.fresh {
            return Some(ClassicError::FencedInstanceId);
        }
        let new = !self.members.contains_key(&join.member_id) && holder.is_none();
        if new && self.members.len() >= MAX_MEMBERS {
            return Some(ClassicError::GroupMaxSizeReached);
        }
        None
    }

    pub fn join(&mut self, join: &ClassicJoin, now_ms: i64) -> ClassicAnswer {
        if let Some(e) = self.join_refusal(join) {
            return ClassicAnswer::Refused(e);
        }
        let member_id = join.member_id.clone();
        let holder = join.instance_id.as_deref().and_then(|i| self.holder(i)).cloned();
        // a static member back under a new id takes its old id's place
        if let Some(old) = holder.as_ref().filter(|old| **old != member_id) {
            if let Some(previous) = self.members.remove(old) {
                self.members.insert(member_id.clone(), previous);
            }
            if self.leader.as_ref() == Some(old) {
                self.leader = Some(member_id.clone());
            }
        }
        self.protocol_type = join.protocol_type.clone();
        let existing = self.members.get(&member_id).cloned();
        let changed = existing.as_ref().is_none_or(|m| m.protocols != join.protocols);
        let member = ClassicMember {
            instance_id: join.instance_id.clone(),
            client_id: join.client_id.clone(),
            client_host: join.client_host.clone(),
            session_timeout_ms: join.session_timeout_ms,
            rebalance_timeout_ms: join.rebalance_timeout_ms,
            protocols: join.protocols.clone(),
            joined: true,
            assignment: existing.map(|m| m.assignment).unwrap_or_default(),
        };
        self.members.insert(member_id.clone(), member);
        let is_leader = self.leader.as_deref() == Some(member_id.as_str());
        match self.phase {
            Phase::Empty => {
                let delay = INITIAL_REBALANCE_DELAY_MS.min(join.rebalance_timeout_ms);
                self.phase = Phase::Joining { deadline_ms: now_ms + delay as i64, initial: true };
            }
            // a static member's return with the same metadata: no rebalance
            Phase::Stable | Phase::Syncing { .. } if !changed && holder.is_some() && !is_leader => {}
            Phase::Stable if !changed && !is_leader => {}
            Phase::Syncing { .. } if !changed => {}
            Phase::Stable | Phase::Syncing { .. } => self.start_round(&member_id, now_ms),
            Phase::Joining { .. } => {}
        }
        self.try_complete(now_ms);
        match self.phase {
            Phase::Joining { .. } => ClassicAnswer::Pending,
            _ => self.joined_answer(&member_id),
        }
    }

    /// Starts a rebalance: everyone but `by` must join again.
    fn start_round(&mut self, by: &str, now_ms: i64) {
        for (id, m) in &mut self.members {
            m.joined = id == by;
        }
        let timeout = self.members.values().map(|m| m.rebalance_timeout_ms).max().unwrap_or(0);
        self.phase = Phase::Joining { deadline_ms: now_ms + timeout as i64, initial: false };
    }

    /// Ends the round once everyone has joined (and an initial round's
    /// delay is over), or its deadline passed: members that did not join are
    /// dropped, the generation moves on.
    fn try_complete(&mut self, now_ms: i64) {
        let Phase::Joining { deadline_ms, initial } = self.phase else { return };
        let all = self.members.values().all(|m| m.joined);
        if !(now_ms >= deadline_ms || (all && !initial)) {
            return;
        }
        self.members.retain(|_, m| m.joined);
        self.generation = self.generation.wrapping_add(1).max(1);
        if self.members.is_empty() {
            self.phase = Phase::Empty;
            self.leader = None;
            self.protocol = None;
            return;
        }
        self.protocol = self.vote();
        if self.leader.as_ref().is_none_or(|l| !self.members.contains_key(l)) {
            self.leader = self.members.keys().next().cloned();
        }
        for m in self.members.values_mut() {
            m.assignment.clear();
        }
        let timeout = self.members.values().map(|m| m.rebalance_timeout_ms).max().unwrap_or(0);
        self.phase = Phase::Syncing { deadline_ms: now_ms + timeout as i64 };
    }

    /// Whether every member (but `except`) offers `protocol`.
    fn all_offer(&self, protocol: &str, except: Option<&str>) -> bool {
        self.members
            .iter()
            .filter(|(id, _)| Some(id.as_str()) != except)
            .all(|(_, m)| m.protocols.iter().any(|p| p.name == protocol))
    }

    /// Kafka's choice: among the protocols every member offers, the one
    /// most members list first of those (ties: the first member's order).
    fn vote(&self) -> Option<String> {
        let first = self.members.values().next()?;
        let candidates: Vec<&str> =
            first.protocols.iter().map(|p| p.name.as_str()).filter(|p| self.all_offer(p, None)).collect();
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for m in self.members.values() {
            if let Some(p) = m.protocols.iter().find(|p| candidates.contains(&p.name.as_str())) {
                *votes.entry(p.name.as_str()).or_default() += 1;
            }
        }
        let best = candidates.iter().map(|c| votes.get(c).copied().unwrap_or(0)).max()?;
        candidates.into_iter().find(|c| votes.get(c).copied().unwrap_or(0) == best).map(str::to_owned)
    }

    fn joined_answer(&self, member_id: &str) -> ClassicAnswer {
        let protocol = self.protocol.clone().unwrap_or_default();
        let leader = self.leader.clone().unwrap_or_default();
        let members = if leader == member_id {
            self.members
                .iter()
                .map(|(id, m)| ClassicMemberMeta {
                    member_id: id.clone(),
                    instance_id: m.instance_id.clone(),
                    metadata: metadata_for(m, &protocol),
                })
                .collect()
        } else {
            Vec::new()
        };
        ClassicAnswer::Joined {
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol,
            leader,
            member_id: member_id.to_owned(),
            members,
        }
    }

    /// Whether a sync needs the log (only the leader's, while syncing).
    pub fn sync_step(&self, sync: &ClassicSync) -> Step {
        if let Err(e) = self.check_generation(&sync.member_id, sync.instance_id.as_deref(), sync.generation) {
            return Step::Answer(ClassicAnswer::Refused(e));
        }
        match self.phase {
            Phase::Joining { .. } | Phase::Empty => {
                Step::Answer(ClassicAnswer::Refused(ClassicError::RebalanceInProgress))
            }
            Phase::Syncing { .. } if self.leader.as_deref() == Some(sync.member_id.as_str()) => Step::Write,
            Phase::Syncing { .. } => Step::Answer(ClassicAnswer::Pending),
            Phase::Stable => Step::Answer(self.synced(&sync.member_id)),
        }
    }

    pub fn sync(&mut self, sync: &ClassicSync) -> ClassicAnswer {
        if let Step::Answer(answer) = self.sync_step(sync) {
            return answer;
        }
        if sync.assignments.iter().any(|(_, a)| a.len() > MAX_MEMBER_BYTES) {
            return ClassicAnswer::Refused(ClassicError::InvalidRequest);
        }
        for (id, m) in &mut self.members {
            m.assignment =
                sync.assignments.iter().find(|(to, _)| to == id).map(|(_, a)| a.clone()).unwrap_or_default();
        }
        self.phase = Phase::Stable;
        self.synced(&sync.member_id)
    }

    fn synced(&self, member_id: &str) -> ClassicAnswer {
        ClassicAnswer::Synced {
            protocol_type: self.protocol_type.clone(),
            protocol: self.protocol.clone().unwrap_or_default(),
            assignment: self.members.get(member_id).map(|m| m.assignment.clone()).unwrap_or_default(),
        }
    }

    fn check_generation(
        &self,
        member_id: &str,
        instance: Option<&str>,
        generation: i32,
    ) -> Result<(), ClassicError> {
        self.check_member(member_id, instance)?;
        if generation != self.generation { Err(ClassicError::IllegalGeneration) } else { Ok(()) }
    }

    /// A heartbeat, answered from the state.
    pub fn heartbeat(&self, member_id: &str, instance: Option<&str>, generation: i32) -> ClassicAnswer {
        if let Err(e) = self.check_member(member_id, instance) {
            return ClassicAnswer::Refused(e);
        }
        if matches!(self.phase, Phase::Joining { .. }) {
            return ClassicAnswer::Refused(ClassicError::RebalanceInProgress);
        }
        match self.check_generation(member_id, instance, generation) {
            Ok(()) => ClassicAnswer::Done,
            Err(e) => ClassicAnswer::Refused(e),
        }
    }

    /// Whether a member may commit at `generation`: Kafka takes commits of
    /// the current generation except while the leader's assignment is awaited.
    pub fn check_commit(&self, member_id: &str, generation: i32) -> Result<(), ClassicError> {
        self.check_generation(member_id, None, generation)?;
        if matches!(self.phase, Phase::Syncing { .. }) {
            return Err(ClassicError::RebalanceInProgress);
        }
        Ok(())
    }

    /// Members leave (by member id, or by instance id when the id is empty).
    pub fn leave(&mut self, members: &[(String, Option<String>)], now_ms: i64) -> ClassicAnswer {
        let mut outcomes = Vec::with_capacity(members.len());
        let mut removed = Vec::new();
        for (id, instance) in members {
            let id = match (id.is_empty(), instance) {
                (true, Some(i)) => self.holder(i).cloned().unwrap_or_default(),
                _ => id.clone(),
            };
            match self.check_member(&id, instance.as_deref()) {
                Ok(()) => {
                    self.members.remove(&id);
                    removed.push(id);
                    outcomes.push(None);
                }
                Err(e) => outcomes.push(Some(e)),
            }
        }
        if !removed.is_empty() {
            self.after_removal(now_ms);
        }
        ClassicAnswer::Left(outcomes)
    }

    /// Drops members whose session ended, and ends rounds whose deadline passed.
    pub fn expire(&mut self, members: &[String], now_ms: i64) {
        let before = self.members.len();
        self.members.retain(|id, _| !members.contains(id));
        if self.members.len() != before {
            self.after_removal(now_ms);
        }
        match self.phase {
            Phase::Joining { .. } => self.try_complete(now_ms),
            // the leader never sent its assignment: everyone joins again
            Phase::Syncing { deadline_ms } if now_ms >= deadline_ms => {
                let leader = self.leader.clone().unwrap_or_default();
                self.start_round(&leader, now_ms);
                if let Some(m) = self.members.get_mut(&leader) {
                    m.joined = false;
                }
            }
            _ => {}
        }
    }

    fn after_removal(&mut self, now_ms: i64) {
        if self.members.is_empty() {
            self.generation = self.generation.wrapping_add(1).max(1);
            self.phase = Phase::Empty;
            self.leader = None;
            self.protocol = None;
            return;
        }
        match self.phase {
            Phase::Joining { .. } => self.try_complete(now_ms),
            Phase::Syncing { .. } | Phase::Stable => {
                let leader = self.leader.clone().filter(|l| self.members.contains_key(l));
                let by = leader.or_else(|| self.members.keys().next().cloned()).unwrap_or_default();
                self.start_round(&by, now_ms);
                if let Some(m) = self.members.get_mut(&by) {
                    m.joined = false;
                }
            }
            Phase::Empty => {}
        }
    }

    /// The earliest time something is due (a round's or a sync's deadline).
    pub fn deadline(&self) -> Option<i64> {
        match self.phase {
            Phase::Joining { deadline_ms, .. } | Phase::Syncing { deadline_ms } => Some(deadline_ms),
            _ => None,
        }
    }
}

impl Metadata {
    /// What a classic request needs: an answer from the state, or the log.
    pub fn classic_step(&self, group: &str, request: &ClassicRequest) -> Step {
        let g = self.groups.get(group);
        if g.is_some_and(|g| !g.members.is_empty()) {
            return Step::Answer(ClassicAnswer::Refused(ClassicError::InconsistentGroupProtocol));
        }
        let classic = g.map(|g| &g.classic);
        let unknown = ClassicAnswer::Refused(ClassicError::UnknownMemberId);
        match (request, classic) {
            (ClassicRequest::Join(join), Some(c)) => c.join_step(join),
            (ClassicRequest::Sync(sync), Some(c)) => c.sync_step(sync),
            (ClassicRequest::Heartbeat { member_id, instance_id, generation }, Some(c)) => {
                Step::Answer(c.heartbeat(member_id, instance_id.as_deref(), *generation))
            }
            (ClassicRequest::Sync(_) | ClassicRequest::Heartbeat { .. }, None) => Step::Answer(unknown),
            (ClassicRequest::Join(_) | ClassicRequest::Leave { .. }, _) => Step::Write,
        }
    }

    pub(super) fn classic(&mut self, group: &str, request: &ClassicRequest, now_ms: i64) -> ClassicAnswer {
        if group::validate_id("a group id", group).is_err() {
            return ClassicAnswer::Refused(ClassicError::InvalidRequest);
        }
        if let Step::Answer(answer) = self.classic_step(group, request) {
            return answer;
        }
        let g = self.groups.entry(group.to_owned()).or_default();
        let answer = match request {
            ClassicRequest::Join(join) => g.classic.join(join, now_ms),
            ClassicRequest::Sync(sync) => g.classic.sync(sync),
            ClassicRequest::Heartbeat { member_id, instance_id, generation } => {
                g.classic.heartbeat(member_id, instance_id.as_deref(), *generation)
            }
            ClassicRequest::Leave { members } => g.classic.leave(members, now_ms),
        };
        if g.is_vacant() {
            self.groups.remove(group);
        }
        answer
    }

    pub(super) fn classic_expire(&mut self, group: &str, members: &[String], now_ms: i64) {
        let Some(g) = self.groups.get_mut(group) else { return };
        g.classic.expire(members, now_ms);
        if g.is_vacant() {
            self.groups.remove(group);
        }
    }
}

fn metadata_for(m: &ClassicMember, protocol: &str) -> Vec<u8> {
    m.protocols.iter().find(|p| p.name == protocol).map(|p| p.metadata.clone()).unwrap_or_default()
}

fn validate_join(join: &ClassicJoin) -> Result<(), ClassicError> {
    let ids = group::validate_id("a member id", &join.member_id).is_ok()
        && join.instance_id.as_ref().is_none_or(|i| group::validate_id("an instance id", i).is_ok());
    if !ids || join.protocol_type.is_empty() || join.protocol_type.len() > group::MAX_ID_LEN {
        return Err(ClassicError::InvalidRequest);
    }
    if join.protocols.is_empty()
        || join.protocols.len() > MAX_PROTOCOLS
        || join.protocols.iter().map(|p| p.metadata.len()).sum::<usize>() > MAX_MEMBER_BYTES
        || join.protocols.iter().any(|p| p.name.is_empty() || p.name.len() > group::MAX_ID_LEN)
    {
        return Err(ClassicError::InconsistentGroupProtocol);
    }
    if !(MIN_SESSION_TIMEOUT_MS..=MAX_SESSION_TIMEOUT_MS).contains(&join.session_timeout_ms) {
        return Err(ClassicError::InvalidSessionTimeout);
    }
    if !(MIN_REBALANCE_TIMEOUT_MS..=MAX_REBALANCE_TIMEOUT_MS).contains(&join.rebalance_timeout_ms) {
        return Err(ClassicError::InvalidRequest);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
