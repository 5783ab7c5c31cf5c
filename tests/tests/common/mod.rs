//! Producers that record what was acknowledged.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::bail;
use serde_json::{Value, json};
use shale_tests::Client;
use shale_tests::history::{Ack, History};

/// How one producer picks keys and partitions.
#[derive(Debug, Clone)]
pub enum Routing {
    /// Keys cycle through this set.
    Keyed(Vec<String>),
    /// No key, no partition: the gateway's sticky choice.
    Unkeyed,
    /// `POST /partitions/{p}/records`.
    Partition(u32),
}

/// A producer that sends requests of 1–4 records one after another and
/// records every acknowledgement in the shared history. Values are
/// `"{name}:{sequence}"`, so the checker can verify per-producer order.
pub struct Producer {
    pub client: Client,
    pub topic: String,
    pub name: String,
    pub routing: Routing,
    /// Stop after this many requests; `None` = until `stop` or a failure.
    pub requests: Option<usize>,
    pub history: Arc<History>,
    pub stop: Arc<AtomicBool>,
    /// A failed request ends the run quietly (the server was killed) instead
    /// of failing it.
    pub stop_on_error: bool,
    /// A failed request is skipped and producing goes on (a controller fails
    /// over behind the gateway). Its records may or may not be in the log.
    pub keep_going: bool,
}

impl Producer {
    /// Runs until done; returns the number of acknowledged requests.
    pub async fn run(self) -> anyhow::Result<usize> {
        let Producer {
            client,
            topic,
            name: producer,
            routing,
            requests,
            history,
            stop,
            stop_on_error,
            keep_going,
        } = self;
        let mut seq = 0u64;
        let mut sent = 0;
        while requests.is_none_or(|n| sent < n) && !stop.load(Ordering::Relaxed) {
            let count = 1 + (seq % 4) as usize;
            let mut records = Vec::with_capacity(count);
            for _ in 0..count {
                let value = format!("{producer}:{seq}");
                seq += 1;
                let key = match &routing {
                    Routing::Keyed(keys) => Some(keys[(seq as usize) % keys.len()].clone()),
                    _ => None,
                };
                records.push((key, value));
            }
            let body = json!({"records": records.iter().map(|(k, v)| json!({"key": k, "value": v})).collect::<Vec<Value>>()});
            let path = match routing {
                Routing::Partition(p) => format!("/v1/topics/{topic}/partitions/{p}/records"),
                _ => format!("/v1/topics/{topic}/records"),
            };
            let answer = client.post_json(&path, &body).await;
            let (status, reply) = match answer {
                Ok(a) => a,
                Err(_) if stop_on_error => break,
                Err(_) if keep_going => (0, serde_json::Value::Null),
                Err(e) => return Err(e),
            };
            if status != 200 {
                if stop_on_error {
                    break;
                }
                if keep_going {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
                bail!("{producer}: produce answered {status} {reply}");
            }
            let offsets = reply["offsets"].as_array().cloned().unwrap_or_default();
            if offsets.len() != records.len() {
                bail!("{producer}: {} offsets for {} records", offsets.len(), records.len());
            }
            for ((key, value), o) in records.into_iter().zip(offsets) {
                let partition = o["partition"].as_u64().unwrap_or(u64::MAX) as u32;
                let offset = o["offset"].as_u64().unwrap_or(u64::MAX);
                history.ack(Ack { partition, offset, key, value });
            }
            sent += 1;
        }
        Ok(sent)
    }
}
