//! The idempotency window: offsets of recently committed keyed requests, per
//! topic incarnation (its id, so a deleted and re-created topic never answers
//! the old one's offsets), bounded in entries and in age. Age is measured in log time (the
//! largest `committed_ms` applied so far), never the applying node's clock, so
//! every node evicts the same entries.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::OffsetRun;

/// Keys are remembered this long (log time).
pub const IDEMPOTENCY_WINDOW_MS: i64 = 10 * 60 * 1000;
/// Keys remembered at most; the oldest go first.
pub const IDEMPOTENCY_MAX_ENTRIES: usize = 100_000;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IdempotencyWindow {
    /// `topic_id/key` → original offsets in request order.
    entries: BTreeMap<String, Vec<OffsetRun>>,
    /// (log time remembered, `topic_id/key`), oldest first.
    order: VecDeque<(i64, String)>,
    log_time_ms: i64,
}

fn slot(topic_id: u64, key: &str) -> String {
    format!("{topic_id}/{key}")
}

impl IdempotencyWindow {
    /// Moves log time forward (never back) and forgets expired keys.
    pub fn advance(&mut self, committed_ms: i64) {
        self.log_time_ms = self.log_time_ms.max(committed_ms);
        let horizon = self.log_time_ms.saturating_sub(IDEMPOTENCY_WINDOW_MS);
        while self.order.front().is_some_and(|(at, _)| *at < horizon) {
            self.pop_oldest();
        }
    }

    pub fn get(&self, topic_id: u64, key: &str) -> Option<&[OffsetRun]> {
        self.entries.get(&slot(topic_id, key)).map(Vec::as_slice)
    }

    pub fn remember(&mut self, topic_id: u64, key: &str, offsets: Vec<OffsetRun>) {
        let slot = slot(topic_id, key);
        if self.entries.insert(slot.clone(), offsets).is_none() {
            self.order.push_back((self.log_time_ms, slot));
        }
        while self.entries.len() > IDEMPOTENCY_MAX_ENTRIES {
            self.pop_oldest();
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn pop_oldest(&mut self) {
        if let Some((_, slot)) = self.order.pop_front() {
            self.entries.remove(&slot);
        }
    }
}
