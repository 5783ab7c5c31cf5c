//! A producer that routes by partition leadership and retries with
//! idempotency keys, for the gateway fault tests.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::bail;
use serde_json::{Value, json};

use crate::Client;
use crate::history::{Ack, History};

/// The leader gateway of each partition, as `GET /v1/topics/{t}` shows it.
pub async fn partition_leaders(
    gateways: &[Client],
    topic: &str,
) -> anyhow::Result<Vec<(Option<String>, u64)>> {
    let mut last = anyhow::anyhow!("no gateways");
    for g in gateways {
        match g.get(&format!("/v1/topics/{topic}")).await {
            Ok((200, info)) => {
                let partitions = info["partitions"].as_array().cloned().unwrap_or_default();
                return Ok(partitions
                    .iter()
                    .map(|p| {
                        (p["leader"].as_str().map(str::to_owned), p["leader_epoch"].as_u64().unwrap_or(0))
                    })
                    .collect());
            }
            Ok((status, body)) => last = anyhow::anyhow!("describe {topic}: {status} {body}"),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// What a [`LeaderProducer`] did.
#[derive(Debug, Default)]
pub struct LeaderStats {
    pub requests: usize,
    /// Requests sent again (same key) after a failure.
    pub retries: usize,
    /// Requests first sent to the partition's leader.
    pub to_leader: usize,
}

/// A producer that sends each request to its partition's leader gateway with
/// an `Idempotency-Key`. A request that fails in any way is sent again, with
/// the same key and body, through whichever gateway leads now (or any other
/// live one) until it is acknowledged, so every record it sent ends up
/// acknowledged, and must be in the log exactly once.
pub struct LeaderProducer {
    pub gateways: Vec<Client>,
    pub topic: String,
    pub partitions: u32,
    /// The partition of the first request; each next request takes the next.
    pub first_partition: u32,
    pub name: String,
    pub history: Arc<History>,
    pub stop: Arc<AtomicBool>,
}

impl LeaderProducer {
    pub async fn run(self) -> anyhow::Result<LeaderStats> {
        let LeaderProducer { gateways, topic, partitions, first_partition, name, history, stop } = self;
        let mut stats = LeaderStats::default();
        let mut leaders = partition_leaders(&gateways, &topic).await?;
        let mut seq = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let partition = (first_partition + stats.requests as u32) % partitions;
            let values: Vec<String> = (0..1 + seq % 3).map(|i| format!("{name}:{}", seq + i)).collect();
            seq += values.len() as u64;
            let body = json!({"records": values.iter().map(|v| json!({"value": v})).collect::<Vec<Value>>()});
            let key = format!("{name}-{}", stats.requests);
            let path = format!("/v1/topics/{topic}/partitions/{partition}/records");
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            let mut failed: Option<String> = None;
            let offsets = loop {
                let leader = leaders.get(partition as usize).and_then(|(l, _)| l.as_deref());
                let leader = leader.filter(|l| Some(*l) != failed.as_deref());
                let target = leader.and_then(|l| gateways.iter().find(|g| g.url == l));
                if failed.is_none() && target.is_some() {
                    stats.to_leader += 1;
                }
                // no leader known, or it just failed: any other gateway
                let target = target
                    .or_else(|| gateways.iter().find(|g| Some(g.url.as_str()) != failed.as_deref()))
                    .unwrap_or(&gateways[0]);
                let request =
                    target.http.post(format!("{}{path}", target.url)).header("Idempotency-Key", &key);
                match target.send(request.json(&body)).await {
                    Ok((200, reply)) => break reply["offsets"].as_array().cloned().unwrap_or_default(),
                    Ok((status, reply)) if status < 500 && status != 429 => {
                        bail!("{name}: produce answered {status} {reply}")
                    }
                    _ => {}
                }
                if std::time::Instant::now() > deadline {
                    bail!("{name}: request {key} not acknowledged within 30 s");
                }
                stats.retries += 1;
                failed = Some(target.url.clone());
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                if let Ok(fresh) = partition_leaders(&gateways, &topic).await {
                    leaders = fresh;
                }
            };
            if offsets.len() != values.len() {
                bail!("{name}: {} offsets for {} records", offsets.len(), values.len());
            }
            for (value, o) in values.into_iter().zip(offsets) {
                let partition = o["partition"].as_u64().unwrap_or(u64::MAX) as u32;
                let offset = o["offset"].as_u64().unwrap_or(u64::MAX);
                history.ack(Ack { partition, offset, key: None, value });
            }
            stats.requests += 1;
            if stats.requests % 20 == 0
                && let Ok(fresh) = partition_leaders(&gateways, &topic).await
            {
                leaders = fresh;
            }
        }
        Ok(stats)
    }
}
