//! A running controller node: openraft with our stores, and the
//! [`Controller`] API served from it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use object_store::ObjectStore;
use openraft::error::{ClientWriteError, RaftError};
use openraft::network::RaftNetworkFactory;
use openraft::{BasicNode, SnapshotPolicy};
use shale_core::{Clock, Offset, PartitionId, SystemClock, TopicName};
use tokio::time::Instant;

use shale_controller_client::auth::{TokenInfo, TokenRecord};
use shale_controller_client::classic::{ClassicAnswer, ClassicRequest};
use shale_controller_client::client::replies;
use shale_controller_client::group::{
    CommitOffsets, GroupInfo, MAX_SESSION_TIMEOUT_MS, MemberAssignment, MemberHeartbeat, OffsetCommit,
    TopicPartition,
};
use shale_controller_client::watch::WatchAnswer;
use shale_controller_client::{
    ChunkSpan, CommitSegment, Controller, ControllerError, PartitionRead, SegmentOutcomes,
};

use crate::metrics::RaftTimings;
use crate::model::{CompactorLease, GatewayLease, MetaError, TopicConfig, TopicInfo};
use crate::network::codec::SNAPSHOT_CHUNK_BYTES;
use crate::network::{HttpNetwork, PeerAccess, SingleNodeNetwork};
use crate::recovery::Recovery;
use crate::status::{FollowerEvent, FollowerWatch, MemberStatus, Status};
use crate::store::{LogStore, SNAPSHOT_FILE, SharedState, StateMachineStore, bucket};
use crate::types::{Command, CommandReply, LogId, NodeId, Raft, ReplaceRange, TypeConfig};

mod classic;

/// Largest command proposed (encoded); the log's files hold 16 MiB each.
const MAX_COMMAND_BYTES: usize = 8 << 20;
/// How long a write may wait for its entry to be applied before its outcome
/// is reported as unknown.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the leader looks for expired gateway leases and new snapshots.
const KEEPER_TICK: Duration = Duration::from_millis(100);
/// How long sending one snapshot chunk may take; the last one includes
/// installing the whole snapshot on the receiver.
const INSTALL_SNAPSHOT_TIMEOUT_MS: u64 = 30_000;
/// How often the leader checks whether retention has something to drop.
const RETENTION_EVERY: Duration = Duration::from_secs(1);
/// In the data directory while a node restored from the bucket catches up.
const RESTORING_MARKER: &str = "restoring";
/// A new leader ends no lease this soon after taking over: gateways whose
/// heartbeats failed during the election get to heartbeat again first.
const NEW_LEADER_GRACE: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub id: NodeId,
    /// Where the Raft log and the state machine's snapshot live.
    pub data_dir: PathBuf,
    /// Build a snapshot after this many applied entries.
    pub snapshot_every: u64,
    /// Log entries kept behind a snapshot (for slow followers).
    pub keep_behind_snapshot: u64,
    /// The bucket: the leader copies snapshots there, and a node started with
    /// an empty data directory starts from the newest one.
    pub store: Option<Arc<dyn ObjectStore>>,
    /// How this node reaches its peers (cluster credential, TLS).
    pub peers: PeerAccess,
}

impl NodeConfig {
    pub fn new(id: NodeId, data_dir: PathBuf) -> Self {
        Self {
            id,
            data_dir,
            snapshot_every: 1000,
            keep_behind_snapshot: 100,
            store: None,
            peers: PeerAccess::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("storage: {0}")]
    Storage(#[from] crate::types::StorageError),
    #[error("raft: {0}")]
    Raft(String),
    #[error("restoring the snapshot from the bucket: {0}")]
    Restore(#[from] bucket::BucketError),
}

/// One controller node.
#[derive(Clone)]
pub struct ControllerNode {
    id: NodeId,
    raft: Raft,
    shared: Arc<SharedState>,
    recovery: Arc<Recovery>,
    /// On the leader: when each group member (group, member id) was last
    /// heard from, by this node's clock. Heartbeats only touch this; it is
    /// never replicated, and a new leader starts it empty.
    sessions: Arc<Sessions>,
    /// Log append and apply times, for `/metrics`.
    timings: RaftTimings,
}

type Sessions = std::sync::Mutex<HashMap<(String, String), i64>>;
/// A member id, and the epoch it must still be at to be removed.
type MemberAtEpoch = (String, Option<u64>);

impl ControllerNode {
    /// Starts a single-node controller, initializing the cluster on first run,
    /// and waits until it leads.
    pub async fn start_single(config: NodeConfig) -> Result<Self, StartError> {
        let members = BTreeMap::from([(config.id, BasicNode::default())]);
        let node = Self::start(&config, SingleNodeNetwork, members).await?;
        node.raft
            .wait(Some(Duration::from_secs(30)))
            .current_leader(config.id, "single node elects itself")
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;
        Ok(node)
    }

    /// Starts one node of a cluster whose members are `peers` (id → `host:port`
    /// of its Raft RPC server, see [`crate::network::raft_router`]). The node
    /// with the lowest id initializes the cluster on its first start, so no
    /// manual step is needed; the others wait to be contacted. Returns at once:
    /// a leader is elected as soon as a majority is up.
    pub async fn start_cluster(
        config: NodeConfig,
        peers: BTreeMap<NodeId, String>,
    ) -> Result<Self, StartError> {
        if !peers.contains_key(&config.id) {
            return Err(StartError::Raft(format!("node {} is not among the peers", config.id)));
        }
        let members = peers.into_iter().map(|(id, addr)| (id, BasicNode::new(addr))).collect();
        let network = HttpNetwork::new(config.id, &config.peers)
            .map_err(|e| StartError::Raft(format!("the peer HTTP client: {e}")))?;
        Self::start(&config, network, members).await
    }

    async fn start<N: RaftNetworkFactory<TypeConfig>>(
        config: &NodeConfig,
        network: N,
        members: BTreeMap<NodeId, BasicNode>,
    ) -> Result<Self, StartError> {
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| StartError::Raft(format!("cannot create {}: {e}", config.data_dir.display())))?;
        let (log_dir, state_dir) = (config.data_dir.join("raft-log"), config.data_dir.join("state"));
        // an earlier release kept the log in one redb file; it is imported once
        let legacy_log = config.data_dir.join("raft-log.redb");
        // present from a restore until caught up, so a crash in between still abstains
        let restoring = config.data_dir.join(RESTORING_MARKER);
        let empty = !log_dir.exists() && !legacy_log.exists() && !state_dir.join(SNAPSHOT_FILE).exists();
        if let Some(store) = config.store.as_ref().filter(|_| empty) {
            // start from the bucket's newest snapshot (openraft then purges
            // the empty log up to it), then catch up from the leader
            std::fs::write(&restoring, b"")
                .map_err(|e| StartError::Raft(format!("cannot write {}: {e}", restoring.display())))?;
            match bucket::restore(store, &state_dir).await? {
                Some(key) => {
                    tracing::info!(%key, "empty data directory: restored the snapshot from the bucket")
                }
                None => {
                    tracing::info!("empty data directory and no snapshot in the bucket: a new node");
                    let _ = std::fs::remove_file(&restoring);
                }
            }
        }
        let log = LogStore::open(&log_dir)?;
        log.import_redb(&legacy_log)?;
        let sm = StateMachineStore::open(&state_dir)?;
        let shared = sm.shared();
        let timings = RaftTimings { append: log.append_seconds(), apply: shared.apply_seconds.clone() };
        // the sole voter of its cluster has no one to wait for
        let sole_voter = shared.read().membership.membership().voter_ids().eq([config.id]);
        if sole_voter {
            let _ = std::fs::remove_file(&restoring);
        }
        let recovery = if restoring.exists() { Recovery::abstaining() } else { Recovery::voting() };
        let raft_config = openraft::Config {
            cluster_name: "shale".into(),
            heartbeat_interval: 100,
            election_timeout_min: 300,
            election_timeout_max: 600,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_every),
            max_in_snapshot_log_to_keep: config.keep_behind_snapshot,
            purge_batch_size: 16,
            // snapshots travel in chunks that fit the receiver's body limit;
            // each chunk (the last one is installed too) gets this long
            snapshot_max_chunk_size: SNAPSHOT_CHUNK_BYTES as u64,
            install_snapshot_timeout: INSTALL_SNAPSHOT_TIMEOUT_MS,
            enable_elect: recovery.may_vote(),
            ..Default::default()
        }
        .validate()
        .map_err(|e| StartError::Raft(e.to_string()))?;
        let raft = Raft::new(config.id, Arc::new(raft_config), network, log, sm)
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;
        let initialized = raft.is_initialized().await.map_err(|e| StartError::Raft(e.to_string()))?;
        let bootstrapper = members.keys().next() == Some(&config.id);
        if !initialized && bootstrapper {
            raft.initialize(members).await.map_err(|e| StartError::Raft(e.to_string()))?;
        }
        let node = Self {
            id: config.id,
            raft,
            shared,
            recovery: Arc::new(recovery),
            sessions: Arc::default(),
            timings,
        };
        tokio::spawn(keep(node.clone(), config.store.clone(), config.data_dir.clone()));
        Ok(node)
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// The live gateways, as this node has applied them.
    pub fn gateways(&self) -> Vec<GatewayLease> {
        self.shared.read().metadata.gateways.live().cloned().collect()
    }

    /// Index entries across every partition, as this node has applied them:
    /// what the state machine and its snapshots grow with.
    pub fn index_entries(&self) -> usize {
        self.shared.read().metadata.index_entries()
    }

    /// This node's Raft append and apply histograms.
    pub fn timings(&self) -> &RaftTimings {
        &self.timings
    }

    /// Whether this node, restored from the bucket, may vote yet.
    pub fn recovery(&self) -> &Recovery {
        &self.recovery
    }

    /// Stops Raft; state on disk stays.
    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
    }

    /// Proposes a command and waits until it is applied. Gateway heartbeats
    /// and segment commits are stamped here with this node's clock: only the
    /// leader proposes, so leases and the idempotency window are measured on
    /// one clock, never a gateway's.
    pub async fn write(&self, mut command: Command) -> Result<CommandReply, ControllerError> {
        match &mut command {
            Command::GatewayHeartbeat { now_ms, .. }
            | Command::CompactorHeartbeat { now_ms, .. }
            | Command::ApplyRetention { now_ms }
            | Command::ReplaceRange(ReplaceRange { now_ms, .. })
            | Command::JoinGroup { now_ms, .. }
            | Command::CommitOffsets { now_ms, .. }
            | Command::ResetOffsets { now_ms, .. }
            | Command::Classic { now_ms, .. }
            | Command::ClassicExpire { now_ms, .. } => *now_ms = SystemClock.now_ms(),
            // the idempotency window runs on the leader's clock, not on
            // whatever a gateway's clock says
            Command::CommitSegment(commit) => commit.committed_ms = SystemClock.now_ms(),
            Command::CommitSegments(commits) => {
                let now_ms = SystemClock.now_ms();
                commits.iter_mut().for_each(|commit| commit.committed_ms = now_ms);
            }
            _ => {}
        }
        // the log refuses (as a storage failure, which stops the node) a
        // record it cannot hold, so an oversized command is refused here
        let size = serde_json::to_vec(&command).map_or(usize::MAX, |bytes| bytes.len());
        if size > MAX_COMMAND_BYTES {
            let limit = MAX_COMMAND_BYTES;
            return Err(MetaError::Invalid(format!("a command of {size} bytes exceeds {limit}")).into());
        }
        match tokio::time::timeout(WRITE_TIMEOUT, self.raft.client_write(command)).await {
            Err(_) => Err(ControllerError::OutcomeUnknown("timed out waiting for the commit".into())),
            Ok(Ok(response)) => Ok(response.data),
            Ok(Err(e)) => Err(write_error(e)),
        }
    }

    /// Returns once this node has confirmed it leads and has applied every
    /// entry committed before the call (openraft's read index), so a read
    /// after it sees every acknowledged write.
    pub async fn read_barrier(&self) -> Result<(), ControllerError> {
        use openraft::error::CheckIsLeaderError;
        match tokio::time::timeout(WRITE_TIMEOUT, self.raft.ensure_linearizable()).await {
            Err(_) => Err(ControllerError::Unavailable("timed out confirming leadership".into())),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)))) => {
                Err(ControllerError::NotLeader { leader: f.leader_node.map(|n| n.addr) })
            }
            Ok(Err(e)) => Err(ControllerError::Unavailable(e.to_string())),
        }
    }

    /// What this node knows of the cluster; on the leader, how far each
    /// member's log matches.
    pub fn status(&self) -> Status {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let members = membership
            .nodes()
            .map(|(id, node)| {
                let matched =
                    m.replication.as_ref().and_then(|r| r.get(id).copied().flatten()).map(|l| l.index);
                let lag = matched.map(|i| m.last_log_index.unwrap_or(0).saturating_sub(i));
                MemberStatus { id: *id, addr: node.addr.clone(), voter: voters.contains(id), matched, lag }
            })
            .collect();
        Status {
            id: self.id,
            leader: m.current_leader,
            term: m.current_term,
            last_applied: m.last_applied.map(|l| l.index),
            last_log_index: m.last_log_index,
            members,
        }
    }

    /// The current voters.
    pub fn voters(&self) -> BTreeSet<NodeId> {
        self.raft.metrics().borrow().membership_config.membership().voter_ids().collect()
    }

    /// Adds a node: first as a learner that catches up, then as a voter.
    /// Call on the leader.
    pub async fn add_node(&self, id: NodeId, addr: String) -> Result<(), ControllerError> {
        let taken = self
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .get_node(&id)
            .is_some_and(|node| node.addr != addr);
        if taken {
            return Err(
                MetaError::Invalid(format!("node {id} is already a member at another address")).into()
            );
        }
        self.raft.add_learner(id, BasicNode::new(addr), true).await.map_err(write_error)?;
        let mut voters = self.voters();
        voters.insert(id);
        self.raft.change_membership(voters, false).await.map_err(write_error)?;
        Ok(())
    }

    /// Removes a voter. Call on the leader.
    pub async fn remove_node(&self, id: NodeId) -> Result<(), ControllerError> {
        let mut voters = self.voters();
        if !voters.remove(&id) {
            return Err(MetaError::Invalid(format!("node {id} is not a voter")).into());
        }
        self.raft.change_membership(voters, false).await.map_err(write_error)?;
        Ok(())
    }
}

/// The leader's duties besides Raft: ending expired gateway leases on time,
/// and copying each new snapshot to the bucket (taking a first one at once,
/// so the bucket never lacks one). Ends when Raft stops.
async fn keep(node: ControllerNode, store: Option<Arc<dyn ObjectStore>>, data_dir: PathBuf) {
    let state_dir = data_dir.join("state");
    let mut shipped: Option<LogId> = None;
    let mut first_requested = false;
    let mut leading_since: Option<Instant> = None;
    let mut followers = FollowerWatch::default();
    let mut known_leader = None;
    let mut last_retention = Instant::now();
    loop {
        tokio::time::sleep(KEEPER_TICK).await;
        let (running, leader, term, snapshot, applied) = {
            let m = node.raft.metrics();
            let m = m.borrow();
            (m.running_state.is_ok(), m.current_leader, m.current_term, m.snapshot, m.last_applied)
        };
        if !running {
            return;
        }
        if leader != known_leader {
            match leader {
                Some(id) if id == node.id => tracing::info!(term, "this node leads the controller cluster"),
                Some(id) => tracing::info!(leader = id, term, "controller leader changed"),
                None => tracing::warn!(term, "no controller leader"),
            }
            known_leader = leader;
        }
        if node.recovery.check(applied.map(|a| a.index)) {
            tracing::info!("caught up after the restore: voting and standing for election again");
            node.raft.runtime_config().elect(true);
            if let Err(e) = std::fs::remove_file(data_dir.join(RESTORING_MARKER)) {
                tracing::warn!(error = %e, "cannot remove the restore marker");
            }
        }
        if leader != Some(node.id) {
            leading_since = None;
            followers = FollowerWatch::default();
            lock(&node.sessions).clear();
            continue;
        }
        for event in followers.observe(&node.status(), std::time::Instant::now()) {
            match event {
                FollowerEvent::Stuck { id, matched, lag } => {
                    tracing::warn!(node = id, ?matched, lag, "follower is not catching up")
                }
                FollowerEvent::CaughtUp { id } => tracing::info!(node = id, "follower caught up"),
            }
        }
        let settled = leading_since.get_or_insert_with(Instant::now).elapsed() >= NEW_LEADER_GRACE;
        let now_ms = SystemClock.now_ms();
        let next_expiry = {
            let state = node.shared.read();
            let m = &state.metadata;
            m.gateways.next_expiry().into_iter().chain(m.compactors.next_expiry()).min()
        };
        if settled
            && next_expiry.is_some_and(|t| t <= now_ms)
            && let Err(e) = node.write(Command::ExpireGateways { now_ms }).await
        {
            tracing::warn!(error = %e, "cannot end expired gateway leases");
        }
        let leading_since_ms = now_ms - leading_since.map_or(0, |t| t.elapsed().as_millis() as i64);
        node.expire_classic(now_ms, leading_since_ms).await;
        for (group, members) in node.expired_members(now_ms, leading_since_ms) {
            if let Err(e) = node.write(Command::LeaveGroup { group: group.clone(), members }).await {
                tracing::warn!(%group, error = %e, "cannot end expired group sessions");
            }
        }
        if last_retention.elapsed() >= RETENTION_EVERY {
            last_retention = Instant::now();
            if node.shared.read().metadata.retention_due(now_ms) {
                match node.write(Command::ApplyRetention { now_ms }).await {
                    Ok(CommandReply::RetentionApplied(chunks)) => {
                        tracing::info!(chunks, "retention dropped chunks")
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "cannot apply retention"),
                }
            }
        }
        let Some(store) = &store else { continue };
        match snapshot {
            None if !first_requested => {
                first_requested = true;
                if let Err(e) = node.raft.trigger().snapshot().await {
                    tracing::warn!(error = %e, "cannot request the first snapshot");
                }
            }
            Some(id) if shipped != Some(id) => match bucket::upload(store.as_ref(), &state_dir).await {
                Ok(key) => {
                    tracing::info!(key = key.as_deref().unwrap_or("none"), "snapshot copied to the bucket");
                    shipped = Some(id);
                }
                Err(e) => tracing::warn!(error = %e, "cannot copy the snapshot to the bucket"),
            },
            _ => {}
        }
    }
}

fn lock(sessions: &Sessions) -> std::sync::MutexGuard<'_, HashMap<(String, String), i64>> {
    sessions.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What a group heartbeat needs: a Raft entry, or only an answer.
enum HeartbeatStep {
    Join(Vec<TopicName>),
    Ack(u64),
    Answer(MemberAssignment),
}

impl ControllerNode {
    /// `NotLeader` (with the leader's address) unless this node leads.
    fn require_leader(&self) -> Result<(), ControllerError> {
        let m = self.raft.metrics().borrow().clone();
        match m.current_leader {
            Some(id) if id == self.id => Ok(()),
            other => Err(ControllerError::NotLeader {
                leader: other
                    .and_then(|id| m.membership_config.membership().get_node(&id).map(|n| n.addr.clone())),
            }),
        }
    }

    fn touch(&self, group: &str, member: &str) {
        lock(&self.sessions).insert((group.to_owned(), member.to_owned()), SystemClock.now_ms());
    }

    /// Per group, the members (at their epochs) whose session ended: last
    /// heard from (or, if never since this node leads, `leading_since_ms`)
    /// more than their session timeout before `now_ms`.
    fn expired_members(&self, now_ms: i64, leading_since_ms: i64) -> Vec<(String, Vec<MemberAtEpoch>)> {
        let state = self.shared.read();
        let mut sessions = lock(&self.sessions);
        // a member heard from recently may be joining (its entry not applied yet)
        sessions.retain(|(g, m), seen| {
            let member = state
                .metadata
                .groups
                .get(g)
                .is_some_and(|g| g.members.contains_key(m) || g.classic.members.contains_key(m));
            member || now_ms.saturating_sub(*seen) < MAX_SESSION_TIMEOUT_MS as i64
        });
        let mut expired = Vec::new();
        for (group, g) in &state.metadata.groups {
            let gone: Vec<MemberAtEpoch> = g
                .members
                .iter()
                .filter(|(id, m)| {
                    silent(&sessions, group, id, m.session_timeout_ms, now_ms, leading_since_ms)
                })
                .map(|(id, m)| (id.clone(), Some(m.epoch)))
                .collect();
            if !gone.is_empty() {
                expired.push((group.clone(), gone));
            }
        }
        expired
    }
}

/// Whether a member was last heard from (or, if never since this node
/// leads, `leading_since_ms`) more than `session_timeout_ms` before `now_ms`.
fn silent(
    sessions: &HashMap<(String, String), i64>,
    group: &str,
    member: &str,
    session_timeout_ms: u64,
    now_ms: i64,
    leading_since_ms: i64,
) -> bool {
    let seen = sessions.get(&(group.to_owned(), member.to_owned())).copied().unwrap_or(leading_since_ms);
    now_ms.saturating_sub(seen) > session_timeout_ms as i64
}

fn write_error(e: RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>) -> ControllerError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
            ControllerError::NotLeader { leader: f.leader_node.map(|n| n.addr) }
        }
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
            ControllerError::Unavailable(e.to_string())
        }
        RaftError::Fatal(e) => ControllerError::OutcomeUnknown(e.to_string()),
    }
}

#[async_trait]
impl Controller for ControllerNode {
    async fn create_topic(
        &self,
        name: TopicName,
        partitions: u32,
        config: TopicConfig,
        created_ms: i64,
    ) -> Result<TopicInfo, ControllerError> {
        replies::topic_created(
            self.write(Command::CreateTopic { name, partitions, config, created_ms }).await?,
        )
    }

    async fn delete_topic(&self, name: TopicName) -> Result<(), ControllerError> {
        replies::topic_deleted(self.write(Command::DeleteTopic { name }).await?)
    }

    async fn update_topic(
        &self,
        name: TopicName,
        config: Option<serde_json::Value>,
        partitions: Option<u32>,
    ) -> Result<TopicInfo, ControllerError> {
        replies::topic_updated(self.write(Command::UpdateTopic { name, config, partitions }).await?)
    }

    async fn commit_segments(
        &self,
        commits: Vec<CommitSegment>,
    ) -> Result<Vec<SegmentOutcomes>, ControllerError> {
        replies::committed(self.write(Command::CommitSegments(commits)).await?)
    }

    async fn heartbeat(&self, url: &str, lease_ms: u64) -> Result<GatewayLease, ControllerError> {
        // stamped with this node's clock in `write`
        let command = Command::GatewayHeartbeat { url: url.to_owned(), now_ms: 0, lease_ms };
        replies::lease(self.write(command).await?)
    }

    async fn leave(&self, url: &str) -> Result<(), ControllerError> {
        replies::gone(self.write(Command::GatewayLeave { url: url.to_owned() }).await?)
    }

    async fn list_tokens(&self) -> Result<Vec<TokenRecord>, ControllerError> {
        Ok(self.shared.read().metadata.tokens.values().cloned().collect())
    }

    async fn create_token(&self, token: TokenRecord) -> Result<TokenInfo, ControllerError> {
        replies::token_created(self.write(Command::CreateToken(token)).await?)
    }

    async fn revoke_token(&self, name: &str) -> Result<(), ControllerError> {
        replies::token_revoked(self.write(Command::RevokeToken { name: name.to_owned() }).await?)
    }

    async fn compactor_heartbeat(&self, id: &str, lease_ms: u64) -> Result<CompactorLease, ControllerError> {
        // stamped with this node's clock in `write`
        let command = Command::CompactorHeartbeat { id: id.to_owned(), now_ms: 0, lease_ms };
        replies::compactor(self.write(command).await?)
    }

    async fn compactor_leave(&self, id: &str) -> Result<(), ControllerError> {
        replies::gone(self.write(Command::CompactorLeave { id: id.to_owned() }).await?)
    }

    async fn replace_range(&self, replace: ReplaceRange) -> Result<(), ControllerError> {
        replies::replaced(self.write(Command::ReplaceRange(replace)).await?)
    }

    async fn referenced_objects(&self) -> Result<Vec<String>, ControllerError> {
        self.read_barrier().await?;
        let state = self.shared.read();
        Ok(state.metadata.referenced_objects().into_iter().map(str::to_owned).collect())
    }

    async fn find_time(
        &self,
        topic: &TopicName,
        partition: PartitionId,
        timestamp_ms: i64,
    ) -> Result<PartitionRead, ControllerError> {
        let state = self.shared.read();
        let p = state.metadata.partition(topic, partition)?;
        let first = p.index.iter().find(|(_, c)| c.max_timestamp_ms >= timestamp_ms);
        Ok(PartitionRead {
            log_start_offset: p.log_start_offset,
            high_watermark: p.high_watermark,
            chunks: first.map(|(b, c)| ChunkSpan { base_offset: *b, chunk: c.clone() }).into_iter().collect(),
        })
    }

    async fn group_heartbeat(
        &self,
        group: &str,
        member_id: &str,
        heartbeat: MemberHeartbeat,
    ) -> Result<MemberAssignment, ControllerError> {
        self.require_leader()?;
        let step = {
            let state = self.shared.read();
            let member =
                state.metadata.groups.get(group).and_then(|g| g.members.get(member_id).map(|m| (g, m)));
            match (member, heartbeat.topics) {
                (None, None) => {
                    return Err(
                        MetaError::MemberNotFound { group: group.into(), member: member_id.into() }.into()
                    );
                }
                (None, Some(topics)) => HeartbeatStep::Join(topics),
                (Some((_, m)), Some(topics))
                    if topics.iter().collect::<BTreeSet<_>>() != m.topics.iter().collect()
                        || heartbeat.session_timeout_ms != m.session_timeout_ms
                        || heartbeat.instance_id != m.instance_id =>
                {
                    HeartbeatStep::Join(topics)
                }
                (Some((_, m)), _)
                    if !m.revoking.is_empty() && heartbeat.member_epoch.is_none_or(|e| e >= m.epoch) =>
                {
                    HeartbeatStep::Ack(m.epoch)
                }
                (Some((g, _)), _) => match g.assignment(group, member_id) {
                    Some(assignment) => HeartbeatStep::Answer(assignment),
                    None => return Err(ControllerError::Unavailable("the member vanished".into())),
                },
            }
        };
        self.touch(group, member_id);
        let command = match step {
            HeartbeatStep::Answer(assignment) => return Ok(assignment),
            HeartbeatStep::Ack(epoch) => {
                Command::AckRevocation { group: group.to_owned(), member_id: member_id.to_owned(), epoch }
            }
            HeartbeatStep::Join(topics) => Command::JoinGroup {
                group: group.to_owned(),
                member_id: member_id.to_owned(),
                topics,
                session_timeout_ms: heartbeat.session_timeout_ms,
                instance_id: heartbeat.instance_id,
                now_ms: 0,
            },
        };
        let answer = replies::member(self.write(command).await?);
        // heard from again now that the join is applied
        self.touch(group, member_id);
        answer
    }

    async fn leave_group(&self, group: &str, member_id: &str) -> Result<(), ControllerError> {
        self.require_leader()?;
        let is_static = self
            .shared
            .read()
            .metadata
            .groups
            .get(group)
            .and_then(|g| g.members.get(member_id))
            .map(|m| m.instance_id.is_some());
        match is_static {
            None => Err(MetaError::MemberNotFound { group: group.into(), member: member_id.into() }.into()),
            // a static member keeps its partitions for its session timeout,
            // so its instance can come back without a rebalance
            Some(true) => {
                self.touch(group, member_id);
                Ok(())
            }
            Some(false) => {
                let command = Command::LeaveGroup {
                    group: group.to_owned(),
                    members: vec![(member_id.to_owned(), None)],
                };
                replies::group_changed(self.write(command).await?)
            }
        }
    }

    async fn classic_group(
        &self,
        group: &str,
        request: ClassicRequest,
    ) -> Result<ClassicAnswer, ControllerError> {
        self.classic(group, request).await
    }

    async fn commit_offsets(&self, group: &str, commit: CommitOffsets) -> Result<(), ControllerError> {
        if let Some((member, _)) = &commit.member {
            self.touch(group, member);
        }
        let command = Command::CommitOffsets { group: group.to_owned(), commit, now_ms: 0 };
        replies::group_changed(self.write(command).await?)
    }

    async fn reset_offsets(&self, group: &str, offsets: Vec<OffsetCommit>) -> Result<(), ControllerError> {
        let command = Command::ResetOffsets { group: group.to_owned(), offsets, now_ms: 0 };
        replies::group_changed(self.write(command).await?)
    }

    async fn delete_group(&self, group: &str) -> Result<(), ControllerError> {
        replies::group_changed(self.write(Command::DeleteGroup { group: group.to_owned() }).await?)
    }

    async fn delete_offsets(
        &self,
        group: &str,
        partitions: Vec<TopicPartition>,
    ) -> Result<(), ControllerError> {
        replies::group_changed(
            self.write(Command::DeleteOffsets { group: group.to_owned(), partitions }).await?,
        )
    }

    async fn delete_records(
        &self,
        topic: &TopicName,
        partition: PartitionId,
        before: Offset,
    ) -> Result<TopicInfo, ControllerError> {
        let command = Command::DeleteRecords { topic: topic.clone(), partition, before };
        replies::topic_updated(self.write(command).await?)
    }

    async fn list_groups(&self) -> Result<Vec<GroupInfo>, ControllerError> {
        self.read_barrier().await?;
        let state = self.shared.read();
        Ok(state.metadata.groups.iter().map(|(name, g)| g.info(name)).collect())
    }

    async fn describe_group(&self, group: &str) -> Result<GroupInfo, ControllerError> {
        self.read_barrier().await?;
        let state = self.shared.read();
        let g = state.metadata.groups.get(group).ok_or_else(|| MetaError::GroupNotFound(group.to_owned()))?;
        Ok(g.info(group))
    }

    async fn watch(&self, since: Option<u64>, wait: Duration) -> Result<WatchAnswer, ControllerError> {
        let deadline = Instant::now() + wait;
        let mut applied = self.shared.subscribe();
        loop {
            {
                let state = self.shared.read();
                let version = state.last_applied.map_or(0, |l| l.index);
                let feed = self.shared.feed();
                match since.and_then(|v| feed.since(v)) {
                    None => {
                        let reset = Some(crate::store::feed::mirror(&state.metadata));
                        return Ok(WatchAnswer { version, reset, changes: Vec::new() });
                    }
                    Some(changes) if !changes.is_empty() || Instant::now() >= deadline => {
                        return Ok(WatchAnswer { version, reset: None, changes });
                    }
                    Some(_) => {}
                }
            }
            match tokio::time::timeout_at(deadline, applied.changed()).await {
                Ok(Ok(())) | Err(_) => continue,
                Ok(Err(_)) => return Err(ControllerError::Unavailable("controller stopped".into())),
            }
        }
    }

    async fn list_topics(&self) -> Result<Vec<TopicInfo>, ControllerError> {
        let state = self.shared.read();
        let m = &state.metadata;
        Ok(m.topics.keys().filter_map(|name| m.topic_info(name).ok()).collect())
    }

    async fn describe_topic(&self, name: &TopicName) -> Result<TopicInfo, ControllerError> {
        Ok(self.shared.read().metadata.topic_info(name)?)
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
        let mut applied = self.shared.subscribe();
        loop {
            {
                let state = self.shared.read();
                let p = state.metadata.partition(topic, partition)?;
                if from < p.high_watermark || Instant::now() >= deadline {
                    return Ok(PartitionRead {
                        log_start_offset: p.log_start_offset,
                        high_watermark: p.high_watermark,
                        chunks: p
                            .chunks_from(from, max_chunks)
                            .into_iter()
                            .map(|(base_offset, chunk)| ChunkSpan { base_offset, chunk })
                            .collect(),
                    });
                }
            }
            match tokio::time::timeout_at(deadline, applied.changed()).await {
                Ok(Ok(())) | Err(_) => continue,
                Ok(Err(_)) => return Err(ControllerError::Unavailable("controller stopped".into())),
            }
        }
    }

    async fn is_ready(&self) -> bool {
        self.raft.metrics().borrow().current_leader.is_some()
    }
}

#[cfg(test)]
mod tests;
