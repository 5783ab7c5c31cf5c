//! A [`Controller`] reached over HTTP. Writes go to the leader, following
//! `NotLeader` hints; reads go to any node that answers. A write is tried on
//! another node only when it was certainly not committed (the connection was
//! refused, or the node refused it); a lost answer is `OutcomeUnknown`.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use serde::de::DeserializeOwned;
use shale_core::{Offset, PartitionId, TopicName};
use tokio::time::Instant;

use crate::api::{ReadQuery, Status};
use crate::client::{Controller, ControllerError, PartitionRead};
use crate::model::TopicInfo;
use crate::types::{Command, CommandReply};

/// How long a write keeps looking for a leader (an election takes well under this).
const FIND_LEADER_FOR: Duration = Duration::from_secs(10);
/// How long one write may wait for its answer. A healthy commit takes
/// milliseconds; a stalled leader (stopped, partitioned) still accepts TCP
/// connections, so this bounds how long it can hold a write.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a node may take to say who leads.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

pub struct RemoteController {
    http: reqwest::Client,
    /// `host:port` of every controller node.
    nodes: Vec<String>,
    leader: Mutex<Option<String>>,
    /// The node that last answered a read; reads start there, so a stalled
    /// node costs one timeout, not one per read.
    reader: AtomicUsize,
}

impl RemoteController {
    /// `nodes` as `host:port` or `http://host:port`.
    pub fn new(nodes: Vec<String>) -> Self {
        let nodes = nodes
            .into_iter()
            .map(|n| n.trim_start_matches("http://").trim_end_matches('/').to_owned())
            .collect();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(1))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Self { http, nodes, leader: Mutex::new(None), reader: AtomicUsize::new(0) }
    }

    fn leader_guess(&self) -> Option<String> {
        self.leader.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    fn set_leader(&self, addr: Option<String>) {
        *self.leader.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = addr;
    }

    async fn write(&self, command: &Command) -> Result<CommandReply, ControllerError> {
        let deadline = Instant::now() + FIND_LEADER_FOR;
        loop {
            let leader = match self.leader_guess() {
                Some(addr) => Some(addr),
                None => self.discover().await,
            };
            if let Some(addr) = leader {
                let sent = self
                    .http
                    .post(format!("http://{addr}/api/write"))
                    .timeout(WRITE_TIMEOUT)
                    .json(command)
                    .send()
                    .await;
                let answer: Result<CommandReply, ControllerError> = match sent {
                    // nothing was sent: another node may take it
                    Err(e) if e.is_connect() => Err(ControllerError::Unavailable(e.to_string())),
                    Err(e) => {
                        self.set_leader(None);
                        return Err(ControllerError::OutcomeUnknown(e.to_string()));
                    }
                    Ok(response) => match response.json().await {
                        Ok(answer) => answer,
                        Err(e) => {
                            self.set_leader(None);
                            return Err(ControllerError::OutcomeUnknown(e.to_string()));
                        }
                    },
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
                .get(format!("http://{addr}/api/status"))
                .timeout(PROBE_TIMEOUT)
                .send()
                .await
                .ok()?;
            let status: Status = response.json().await.ok()?;
            (status.leader == Some(status.id)).then(|| (status.term, addr.clone()))
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
            let mut request = self.http.get(format!("http://{}{path}", self.nodes[i])).timeout(timeout);
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
    async fn propose(&self, command: Command) -> Result<CommandReply, ControllerError> {
        self.write(&command).await
    }

    async fn list_topics(&self) -> Result<Vec<TopicInfo>, ControllerError> {
        self.read::<_, ()>("/api/topics", None, PROBE_TIMEOUT).await
    }

    async fn describe_topic(&self, name: &TopicName) -> Result<TopicInfo, ControllerError> {
        self.read::<_, ()>(&format!("/api/topics/{name}"), None, PROBE_TIMEOUT).await
    }

    async fn read_partition(
        &self,
        topic: &TopicName,
        partition: PartitionId,
        from: Offset,
        max_chunks: usize,
        wait: Duration,
    ) -> Result<PartitionRead, ControllerError> {
        let query =
            ReadQuery { topic: topic.clone(), partition, from, max_chunks, wait_ms: wait.as_millis() as u64 };
        self.read("/api/read", Some(&query), wait + PROBE_TIMEOUT).await
    }

    async fn is_ready(&self) -> bool {
        self.discover().await.is_some()
    }
}
