//! The history checker, reused by every fault test.
//!
//! Producers record each acknowledged record (partition, offset, key, value).
//! [`History::verify`] then reads every partition from offset 0 to its high
//! watermark, and at least past its last acknowledged offset (the gateway
//! asked may lag the one that answered the produce: its high watermark
//! comes from its mirror, and a read at the acknowledged offset still finds
//! the record), and checks:
//! - offsets in each partition are dense from 0 and increasing;
//! - every acknowledged record is at its acknowledged offset, byte for byte;
//! - every acknowledged value appears exactly once in the whole topic;
//! - records with equal keys share a partition;
//! - one producer's records appear in each partition in the order it sent them
//!   (values are `"{producer}:{sequence}"`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use anyhow::{bail, ensure};

use crate::process::Client;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub partition: u32,
    pub offset: u64,
    pub key: Option<String>,
    pub value: String,
}

/// A record read back from the log.
#[derive(Debug, Clone)]
pub struct Stored {
    pub key: Option<String>,
    pub value: String,
}

#[derive(Debug, Default)]
pub struct History {
    acks: Mutex<Vec<Ack>>,
}

/// What a verification saw.
#[derive(Debug)]
pub struct Report {
    pub acknowledged: usize,
    /// Records in the log, acknowledged or not (a kill can lose an answer).
    pub stored: usize,
    pub per_partition: Vec<u64>,
}

impl History {
    pub fn ack(&self, ack: Ack) {
        self.acks.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(ack);
    }

    pub fn acks(&self) -> Vec<Ack> {
        self.acks.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    pub fn len(&self) -> usize {
        self.acks.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads the whole topic and checks every property above.
    pub async fn verify(&self, client: &Client, topic: &str, partitions: u32) -> anyhow::Result<Report> {
        let acks = self.acks.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let mut log: Vec<Vec<Stored>> = Vec::new();
        for p in 0..partitions {
            let acked_end = acks.iter().filter(|a| a.partition == p).map(|a| a.offset + 1).max().unwrap_or(0);
            log.push(read_partition(client, topic, p, acked_end).await?);
        }
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for records in &log {
            for r in records {
                *seen.entry(r.value.as_str()).or_default() += 1;
            }
        }
        let mut key_partition: HashMap<&str, u32> = HashMap::new();
        for ack in &acks {
            let stored = log.get(ack.partition as usize).and_then(|records| records.get(ack.offset as usize));
            let Some(stored) = stored else {
                bail!(
                    "acknowledged {ack:?} is missing: partition holds {} records",
                    log.get(ack.partition as usize).map_or(0, Vec::len)
                );
            };
            ensure!(
                stored.value == ack.value && stored.key == ack.key,
                "offset {} of partition {} holds {stored:?}, acknowledged {ack:?}",
                ack.offset,
                ack.partition
            );
            let count = seen.get(ack.value.as_str()).copied().unwrap_or(0);
            ensure!(count == 1, "acknowledged value {} appears {count} times", ack.value);
            if let Some(key) = &ack.key {
                let p = *key_partition.entry(key.as_str()).or_insert(ack.partition);
                ensure!(p == ack.partition, "key {key} is in partitions {p} and {}", ack.partition);
            }
        }
        for (p, records) in log.iter().enumerate() {
            let mut last: BTreeMap<&str, u64> = BTreeMap::new();
            for r in records {
                let Some((producer, seq)) = r.value.split_once(':') else { continue };
                let Ok(seq) = seq.parse::<u64>() else { continue };
                if let Some(prev) = last.insert(producer, seq) {
                    ensure!(prev < seq, "partition {p}: producer {producer} wrote {seq} after {prev}");
                }
            }
        }
        Ok(Report {
            acknowledged: acks.len(),
            stored: log.iter().map(Vec::len).sum(),
            per_partition: log.iter().map(|r| r.len() as u64).collect(),
        })
    }
}

/// Reads a partition from offset 0 to its high watermark and at least to
/// `at_least`, checking that offsets are dense and increasing. It stops
/// short of `at_least` only when the partition holds nothing more.
pub async fn read_partition(
    client: &Client,
    topic: &str,
    partition: u32,
    at_least: u64,
) -> anyhow::Result<Vec<Stored>> {
    let mut out = Vec::new();
    loop {
        let query = format!("offset={}&max_records=5000&max_bytes=4194304", out.len());
        // a retryable answer (the store failed) is asked again, as a client would
        let mut tries = 0;
        let (status, body) = loop {
            let (status, body) = client.fetch(topic, partition, &query).await?;
            tries += 1;
            if status == 200 || body["retryable"] != true || tries >= 10 {
                break (status, body);
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        };
        ensure!(status == 200, "fetch {topic}/{partition}@{}: {status} {body}", out.len());
        let records = body["records"].as_array().cloned().unwrap_or_default();
        for r in &records {
            let offset = r["offset"].as_u64().unwrap_or(u64::MAX);
            ensure!(
                offset == out.len() as u64,
                "partition {partition}: expected offset {}, got {offset}",
                out.len()
            );
            out.push(Stored {
                key: r["key"].as_str().map(str::to_owned),
                value: r["value"].as_str().unwrap_or_default().to_owned(),
            });
        }
        let hwm = body["high_watermark"].as_u64().unwrap_or(0);
        let read = out.len() as u64;
        if read >= hwm && (read >= at_least || records.is_empty()) {
            return Ok(out);
        }
        ensure!(
            !records.is_empty(),
            "partition {partition}: no records at {} below high watermark {hwm}",
            out.len()
        );
    }
}
