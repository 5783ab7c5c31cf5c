//! A [`Controller`] reached over HTTP. Writes go to the leader, following
//! `NotLeader` hints; reads go to any node that answers. A write is tried on
//! another node only when it was certainly not committed (the connection was
//! refused, or the node refused it); a lost answer is `OutcomeUnknown`.

use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use reqwest::Method;
use serde::Serialize;
use serde::de::DeserializeOwned;
use shale_core::{Offset, PartitionId, TopicName};
use tokio::time::Instant;

use crate::api::{
    self, CreateTopicRequest, HeartbeatRequest, LeaveRequest, ReadQuery, TimeQuery, UpdateTopicRequest,
};
use crate::auth::{TokenInfo, TokenRecord};
use crate::classic::{ClassicAnswer, ClassicRequest};
use crate::client::{Controller, ControllerError, PartitionRead, SegmentOutcomes};
use crate::command::{CommitSegment, ReplaceRange};
use crate::group::{
    CommitOffsets, GroupInfo, MemberAssignment, MemberHeartbeat, OffsetCommit, TopicPartition,
};
use crate::meta::{CompactorLease, GatewayLease, TopicConfig, TopicInfo};
use crate::secret::ClusterSecret;
use crate::status::Status;
use crate::watch::{WatchAnswer, WatchQuery};

/// How long a write keeps looking for a leader (an election takes well under this).
const FIND_LEADER_FOR: Duration = Duration::from_secs(10);
/// How long one write may wait for its answer. A healthy commit takes
/// milliseconds; a stalled leader (stopped, partitioned) still accepts TCP
/// connections, so this bounds how long it can hold a write.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a feed answer may take beyond its wait (the whole state can be
/// large).
const WATCH_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a node may take to say who leads.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

pub struct RemoteController {
    http: reqwest::Client,
    /// `http` or `https`.
    scheme: &'static str,
    /// `host:port` of every controller node.
    nodes: Vec<String>,
    leader: Mutex<Option<String>>,
    /// The node that last answered a read; reads start there, so a stalled
    /// node costs one timeout, not one per read.
    reader: AtomicUsize,
}

/// How a client reaches the controller nodes.
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    /// Presented on every request.
    pub secret: Option<ClusterSecret>,
    /// Trust this CA (PEM) for `https://` nodes, besides the system's roots.
    pub ca_cert_pem: Option<Vec<u8>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientSetupError {
    #[error("controller URLs must all be http:// or all https://")]
    MixedSchemes,
    #[error("the HTTP client (or its CA certificate): {0}")]
    Http(reqwest::Error),
}

/// An HTTP client for controllers: it presents the cluster secret on every
/// request and trusts `ca_cert_pem` besides the system's roots.
pub fn http_client(
    secret: Option<&ClusterSecret>,
    ca_cert_pem: Option<&[u8]>,
) -> Result<reqwest::Client, reqwest::Error> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(secret) = secret
        && let Ok(mut value) = reqwest::header::HeaderValue::from_str(&secret.header_value())
    {
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    let mut builder =
        reqwest::Client::builder().connect_timeout(Duration::from_secs(1)).default_headers(headers);
    if let Some(pem) = ca_cert_pem {
        builder = builder.add_root_certificate(reqwest::Certificate::from_pem(pem)?);
    }
    builder.build()
}

impl RemoteController {
    /// `nodes` as `host:port`, `http://host:port` or `https://host:port`.
    pub fn new(nodes: Vec<String>, options: &ClientOptions) -> Result<Self, ClientSetupError> {
        let tls = nodes.iter().any(|n| n.starts_with("https://"));
        if tls && nodes.iter().any(|n| !n.starts_with("https://")) {
            return Err(ClientSetupError::MixedSchemes);
        }
        let nodes = nodes
            .into_iter()
            .map(|n| {
                n.trim_start_matches("http://")
                    .trim_start_matches("https://")
                    .trim_end_matches('/')
                    .to_owned()
            })
            .collect();
        let http = http_client(options.secret.as_ref(), options.ca_cert_pem.as_deref())
            .map_err(ClientSetupError::Http)?;
        let scheme = if tls { "https" } else { "http" };
        Ok(Self { http, scheme, nodes, leader: Mutex::new(None), reader: AtomicUsize::new(0) })
    }

    fn leader_guess(&self) -> Option<String> {
        self.leader.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    fn set_leader(&self, addr: Option<String>) {
        *self.leader.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = addr;
    }

    /// Sends a write to the leader and decodes its answer. A write moves to
    /// another node only when it was certainly not committed.
    async fn write<B: Serialize + Sync, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: &B,
    ) -> Result<T, ControllerError> {
        let method = &method;
        self.to_leader(|addr| async move {
            let url = format!("{}://{addr}{path}", self.scheme);
            let sent = self.http.request(method.clone(), url).timeout(WRITE_TIMEOUT).json(body).send().await;
            match sent {
                // nothing was sent: another node may take it
                Err(e) if e.is_connect() => Ok(Err(ControllerError::Unavailable(e.to_string()))),
                Err(e) => Err(ControllerError::OutcomeUnknown(e.to_string())),
                // refused before anything was done
                Ok(response) if response.status() == reqwest::StatusCode::UNAUTHORIZED => {
                    Err(ControllerError::Unavailable(
                        "the controller refused this node's cluster credential".into(),
                    ))
                }
                Ok(response) => {
                    response.json().await.map_err(|e| ControllerError::OutcomeUnknown(e.to_string()))
                }
            }
        })
        .await
    }

    /// A read from the leader, following `NotLeader` hints.
    async fn read_from_leader<T: DeserializeOwned, Q: Serialize + Sync>(
        &self,
        path: &str,
        query: &Q,
    ) -> Result<T, ControllerError> {
        self.to_leader(|addr| async move {
            let url = format!("{}://{addr}{path}", self.scheme);
            let answer = match self.http.get(url).query(query).timeout(WRITE_TIMEOUT).send().await {
                Ok(response) => {
                    response.json().await.map_err(|e| ControllerError::Unavailable(e.to_string()))
                }
                Err(e) => Err(ControllerError::Unavailable(e.to_string())),
            };
            Ok(answer.unwrap_or_else(Err))
        })
        .await
    }

    /// Runs `attempt` against the leader until it answers: following
    /// `NotLeader` hints, looking for a new leader when one is unavailable,
    /// for up to [`FIND_LEADER_FOR`]. `attempt` gives the node's answer, or
    /// an error that ends the call at once (its outcome is then unknown, or
    /// retrying cannot help).
    async fn to_leader<T, F, Fut>(&self, attempt: F) -> Result<T, ControllerError>
    where
        F: Fn(String) -> Fut,
        Fut: Future<Output = Result<Result<T, ControllerError>, ControllerError>>,
    {
        let deadline = Instant::now() + FIND_LEADER_FOR;
        loop {
            let leader = match self.leader_guess() {
                Some(addr) => Some(addr),
                None => self.discover().await,
            };
            if let Some(addr) = leader {
                let answer = match attempt(addr.clone()).await {
                    Ok(answer) => answer,
                    Err(end) => {
                        self.set_leader(None);
                        return Err(end);
                    }
                };
                match answer {
                    Err(ControllerError::NotLeader { leader }) => self.set_leader(leader),
                    Err(ControllerError::Unavailable(_)) => self.set_leader(None),
                    other => {
                        self.set_leader(Some(addr));
                        return other;
                    }
                }
            }
            if Instant::now() >= deadline {
                return Err(ControllerError::Unavailable("no controller leader answered".into()));
            }
            if self.leader_guess().is_none() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    /// Asks every node at once who leads; trusts only nodes that say they
    /// lead themselves, and of those the one with the highest term (a stale
    /// leader cut off from the majority still believes it leads).
    async fn discover(&self) -> Option<String> {
        let probes = self.nodes.iter().map(|addr| async move {
            let response = self
                .http
                .get(format!("{}://{addr}{}", self.scheme, api::STATUS))
                .timeout(PROBE_TIMEOUT)
                .send()
                .await
                .ok()?;
            let status: Status = response.json().await.ok()?;
            status.is_leader().then(|| (status.term, addr.clone()))
        });
        let found = futures::future::join_all(probes).await.into_iter().flatten().max().map(|(_, addr)| addr);
        self.set_leader(found.clone());
        found
    }

    /// A read from the first node that answers, starting with the last one that did.
    async fn read<T: DeserializeOwned, Q: Serialize>(
        &self,
        path: &str,
        query: Option<&Q>,
        timeout: Duration,
    ) -> Result<T, ControllerError> {
        let mut last = String::from("no controller nodes");
        let start = self.reader.load(Ordering::Relaxed);
        for k in 0..self.nodes.len() {
            let i = (start + k) % self.nodes.len();
            let url = format!("{}://{}{path}", self.scheme, self.nodes[i]);
            let mut request = self.http.get(url).timeout(timeout);
            if let Some(q) = query {
                request = request.query(q);
            }
            match request.send().await {
                Ok(response) => match response.json::<Result<T, ControllerError>>().await {
                    Ok(answer) => {
                        self.reader.store(i, Ordering::Relaxed);
                        return answer;
                    }
                    Err(e) => last = e.to_string(),
                },
                Err(e) => last = e.to_string(),
            }
        }
        Err(ControllerError::Unavailable(last))
    }
}

#[async_trait]
impl Controller for RemoteController {
    async fn list_topics(&self) -> Result<Vec<TopicInfo>, ControllerError> {
        self.read::<_, ()>(api::TOPICS, None, PROBE_TIMEOUT).await
    }

    async fn describe_topic(&self, name: &TopicName) -> Result<TopicInfo, ControllerError> {
        self.read::<_, ()>(&format!("{}/{name}", api::TOPICS), None, PROBE_TIMEOUT).await
    }

    /// Any node answers; one that has not applied up to `from` yet (a
    /// lagging follower) is not trusted to say `from` is out of range: the
    /// leader answers then, after a read barrier, so an acknowledged offset
    /// is always found.
    async fn read_partition(
        &self,
        topic: &TopicName,
        partition: PartitionId,
        from: Offset,
        max_chunks: usize,
        wait: Duration,
    ) -> Result<PartitionRead, ControllerError> {
        let mut query = ReadQuery {
            topic: topic.clone(),
            partition,
            from,
            max_chunks,
            wait_ms: wait.as_millis() as u64,
            linearizable: false,
        };
        let any: PartitionRead = self.read(api::READ, Some(&query), wait + PROBE_TIMEOUT).await?;
        if from <= any.high_watermark {
            return Ok(any);
        }
        query.linearizable = true;
        query.wait_ms = 0;
        self.read_from_leader(api::READ, &query).await
    }

    async fn is_ready(&self) -> bool {
        self.discover().await.is_some()
    }

    async fn create_topic(
        &self,
        name: TopicName,
        partitions: u32,
        config: TopicConfig,
        created_ms: i64,
    ) -> Result<TopicInfo, ControllerError> {
        let body = CreateTopicRequest { name, partitions, config, created_ms };
        self.write(Method::POST, api::TOPICS, &body).await
    }

    async fn delete_topic(&self, name: TopicName) -> Result<(), ControllerError> {
        self.write(Method::DELETE, &format!("{}/{name}", api::TOPICS), &()).await
    }

    async fn update_topic(
        &self,
        name: TopicName,
        config: Option<serde_json::Value>,
        partitions: Option<u32>,
    ) -> Result<TopicInfo, ControllerError> {
        let body = UpdateTopicRequest { config, partitions };
        self.write(Method::PATCH, &format!("{}/{name}", api::TOPICS), &body).await
    }

    async fn commit_segments(
        &self,
        commits: Vec<CommitSegment>,
    ) -> Result<Vec<SegmentOutcomes>, ControllerError> {
        self.write(Method::POST, api::SEGMENT_GROUPS, &commits).await
    }

    async fn heartbeat(&self, url: &str, lease_ms: u64) -> Result<GatewayLease, ControllerError> {
        self.write(Method::POST, api::HEARTBEAT, &HeartbeatRequest { url: url.to_owned(), lease_ms }).await
    }

    async fn leave(&self, url: &str) -> Result<(), ControllerError> {
        self.write(Method::POST, api::LEAVE, &LeaveRequest { url: url.to_owned() }).await
    }

    async fn list_tokens(&self) -> Result<Vec<TokenRecord>, ControllerError> {
        self.read::<_, ()>(api::TOKENS, None, PROBE_TIMEOUT).await
    }

    async fn create_token(&self, token: TokenRecord) -> Result<TokenInfo, ControllerError> {
        self.write(Method::POST, api::TOKENS, &token).await
    }

    async fn revoke_token(&self, name: &str) -> Result<(), ControllerError> {
        self.write(Method::DELETE, &format!("{}/{name}", api::TOKENS), &()).await
    }

    async fn compactor_heartbeat(&self, id: &str, lease_ms: u64) -> Result<CompactorLease, ControllerError> {
        let body = HeartbeatRequest { url: id.to_owned(), lease_ms };
        self.write(Method::POST, api::COMPACTOR_HEARTBEAT, &body).await
    }

    async fn compactor_leave(&self, id: &str) -> Result<(), ControllerError> {
        self.write(Method::POST, api::COMPACTOR_LEAVE, &LeaveRequest { url: id.to_owned() }).await
    }

    async fn replace_range(&self, replace: ReplaceRange) -> Result<(), ControllerError> {
        self.write(Method::POST, api::RANGES, &replace).await
    }

    async fn referenced_objects(&self) -> Result<Vec<String>, ControllerError> {
        self.read_from_leader(api::OBJECTS, &()).await
    }

    /// Any node answers; one that finds nothing may only be lagging, so the
    /// leader is asked then.
    async fn find_time(
        &self,
        topic: &TopicName,
        partition: PartitionId,
        timestamp_ms: i64,
    ) -> Result<PartitionRead, ControllerError> {
        let query = TimeQuery { topic: topic.clone(), partition, timestamp_ms };
        let any: PartitionRead = self.read(api::TIME, Some(&query), PROBE_TIMEOUT).await?;
        if !any.chunks.is_empty() {
            return Ok(any);
        }
        self.read_from_leader(api::TIME, &query).await
    }

    async fn group_heartbeat(
        &self,
        group: &str,
        member_id: &str,
        heartbeat: MemberHeartbeat,
    ) -> Result<MemberAssignment, ControllerError> {
        self.write(Method::POST, &format!("{}/{group}/members/{member_id}", api::GROUPS), &heartbeat).await
    }

    async fn leave_group(&self, group: &str, member_id: &str) -> Result<(), ControllerError> {
        self.write(Method::DELETE, &format!("{}/{group}/members/{member_id}", api::GROUPS), &()).await
    }

    async fn classic_group(
        &self,
        group: &str,
        request: ClassicRequest,
    ) -> Result<ClassicAnswer, ControllerError> {
        self.write(Method::POST, &format!("{}/{group}/classic", api::GROUPS), &request).await
    }

    async fn commit_offsets(&self, group: &str, commit: CommitOffsets) -> Result<(), ControllerError> {
        self.write(Method::POST, &format!("{}/{group}/offsets", api::GROUPS), &commit).await
    }

    async fn reset_offsets(&self, group: &str, offsets: Vec<OffsetCommit>) -> Result<(), ControllerError> {
        self.write(Method::POST, &format!("{}/{group}/reset", api::GROUPS), &offsets).await
    }

    async fn delete_group(&self, group: &str) -> Result<(), ControllerError> {
        self.write(Method::DELETE, &format!("{}/{group}", api::GROUPS), &()).await
    }

    async fn delete_offsets(
        &self,
        group: &str,
        partitions: Vec<TopicPartition>,
    ) -> Result<(), ControllerError> {
        self.write(Method::POST, &format!("{}/{group}/offsets/delete", api::GROUPS), &partitions).await
    }

    async fn delete_records(
        &self,
        topic: &TopicName,
        partition: PartitionId,
        before: Offset,
    ) -> Result<TopicInfo, ControllerError> {
        let path = format!("{}/{topic}/partitions/{partition}/delete-records", api::TOPICS);
        self.write(Method::POST, &path, &before).await
    }

    async fn list_groups(&self) -> Result<Vec<GroupInfo>, ControllerError> {
        self.read_from_leader(api::GROUPS, &()).await
    }

    async fn describe_group(&self, group: &str) -> Result<GroupInfo, ControllerError> {
        self.read_from_leader(&format!("{}/{group}", api::GROUPS), &()).await
    }

    /// Any node answers: every node derives the same changes from the log.
    async fn watch(&self, since: Option<u64>, wait: Duration) -> Result<WatchAnswer, ControllerError> {
        let query = WatchQuery { since, wait_ms: wait.as_millis() as u64 };
        self.read(api::WATCH, Some(&query), wait + WATCH_TIMEOUT).await
    }
}
