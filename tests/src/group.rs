//! A consumer-group member as a client would write one: it joins, reads
//! through the member records route (each read commits the cursor of the
//! read before), moves to another gateway when its own stops answering, and
//! on a clean stop commits what it read and leaves.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, ensure};
use serde_json::{Value, json};

use crate::Client;

/// What the member last heard: its epoch and partitions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct View {
    pub epoch: u64,
    pub assignment: BTreeSet<u32>,
}

/// Every (partition, offset) any member received, and the first offset each
/// member got per partition after it was assigned it.
#[derive(Debug, Default)]
pub struct Deliveries {
    pub seen: Mutex<BTreeSet<(u32, u64)>>,
    pub first: Mutex<BTreeMap<u32, u64>>,
}

pub struct Member {
    pub id: String,
    pub group: String,
    pub topic: String,
    /// Gateways to use, the first one first.
    pub clients: Vec<Client>,
    pub session_timeout_ms: u64,
    pub deliveries: Arc<Deliveries>,
    pub view: Arc<Mutex<View>>,
    /// Set to stop cleanly: commit, then leave.
    pub stop: Arc<AtomicBool>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Member {
    /// Runs until `stop`; returns how many gateway switches it made.
    pub async fn run(self) -> anyhow::Result<usize> {
        let mut gateway = 0usize;
        let mut switches = 0usize;
        let mut cursor = String::new();
        let mut epoch = self.join(gateway).await?;
        while !self.stop.load(Ordering::Relaxed) {
            let client = &self.clients[gateway % self.clients.len()];
            let path = format!("/v1/groups/{}/members/{}/records", self.group, self.id);
            let request = client.http.get(format!("{}{path}", client.url)).query(&[
                ("cursor", cursor.as_str()),
                ("member_epoch", &epoch.to_string()),
                ("commit", "true"),
                ("wait_ms", "500"),
                ("max_records", "300"),
            ]);
            let (status, page) = match client.send(request).await {
                Ok(answer) => answer,
                Err(_) => {
                    // the gateway is gone: any other serves the same member
                    gateway += 1;
                    switches += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            match status {
                200 => {}
                404 if page["error_code"] == "member_not_found" => {
                    epoch = self.join(gateway).await?;
                    continue;
                }
                // the controller is failing over: group calls are safe to repeat
                503 | 504 if page["retryable"] == true => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                _ => bail!("member {} read: {status} {page}", self.id),
            }
            self.take(&page);
            epoch = page["member_epoch"].as_u64().unwrap_or(epoch);
            cursor = page["cursor"].as_str().unwrap_or_default().to_owned();
        }
        self.commit_and_leave(gateway, &cursor, epoch).await?;
        Ok(switches)
    }

    async fn join(&self, gateway: usize) -> anyhow::Result<u64> {
        let body = json!({"topics": [self.topic], "session_timeout_ms": self.session_timeout_ms});
        for attempt in 0..50 {
            let client = &self.clients[(gateway + attempt) % self.clients.len()];
            let path = format!("/v1/groups/{}/members/{}", self.group, self.id);
            match client.send(client.http.put(format!("{}{path}", client.url)).json(&body)).await {
                Ok((200, a)) => return Ok(a["member_epoch"].as_u64().unwrap_or(0)),
                Ok((503 | 504, _)) | Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                Ok((status, a)) => bail!("join {}: {status} {a}", self.id),
            }
        }
        bail!("member {} could not join", self.id)
    }

    /// Records what a page delivered and what the member now holds.
    fn take(&self, page: &Value) {
        let assignment: BTreeSet<u32> = page["assignment"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|tp| tp["partition"].as_u64())
            .map(|p| p as u32)
            .collect();
        let mut seen = lock(&self.deliveries.seen);
        let mut first = lock(&self.deliveries.first);
        for r in page["records"].as_array().into_iter().flatten() {
            let (Some(p), Some(o)) = (r["partition"].as_u64(), r["offset"].as_u64()) else { continue };
            seen.insert((p as u32, o));
            first.entry(p as u32).or_insert(o);
        }
        *lock(&self.view) = View { epoch: page["member_epoch"].as_u64().unwrap_or(0), assignment };
    }

    async fn commit_and_leave(&self, gateway: usize, cursor: &str, epoch: u64) -> anyhow::Result<()> {
        let mut offsets: Vec<Value> = cursor
            .split(',')
            .filter(|p| !p.is_empty())
            .filter_map(|p| {
                let mut f = p.rsplitn(3, ':');
                let (o, p, t) = (f.next()?.parse::<u64>().ok()?, f.next()?.parse::<u32>().ok()?, f.next()?);
                Some(json!({"topic": t, "partition": p, "offset": o}))
            })
            .collect();
        let client = &self.clients[gateway % self.clients.len()];
        let member = format!("{}/v1/groups/{}/members/{}", client.url, self.group, self.id);
        let mut epoch = epoch;
        for _ in 0..5 {
            if offsets.is_empty() {
                break;
            }
            let body = json!({"member_id": self.id, "member_epoch": epoch, "offsets": offsets});
            let (status, answer) =
                client.post_json(&format!("/v1/groups/{}/offsets", self.group), &body).await?;
            if status == 204 {
                break;
            }
            ensure!(status == 409, "final commit of {}: {status} {answer}", self.id);
            // the assignment moved on (another member left): commit what is still ours
            let join = json!({"topics": [self.topic], "session_timeout_ms": self.session_timeout_ms});
            let (status, a) = client.send(client.http.put(&member).json(&join)).await?;
            ensure!(status == 200, "heartbeat of {}: {status} {a}", self.id);
            epoch = a["member_epoch"].as_u64().unwrap_or(epoch);
            let held: BTreeSet<u64> = ["assignment", "revoke"]
                .iter()
                .flat_map(|k| a[*k].as_array().cloned().unwrap_or_default())
                .filter_map(|tp| tp["partition"].as_u64())
                .collect();
            offsets.retain(|o| o["partition"].as_u64().is_some_and(|p| held.contains(&p)));
        }
        let (status, answer) = client.send(client.http.delete(&member)).await?;
        ensure!(status == 204, "leave {}: {status} {answer}", self.id);
        Ok(())
    }
}

/// The group's committed offsets by partition.
pub async fn committed(client: &Client, group: &str) -> anyhow::Result<BTreeMap<u32, u64>> {
    let (status, body) = client.get(&format!("/v1/groups/{group}/offsets")).await?;
    ensure!(status == 200, "offsets of {group}: {status} {body}");
    Ok(body["offsets"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| Some((o["partition"].as_u64()? as u32, o["offset"].as_u64()?)))
        .collect())
}
