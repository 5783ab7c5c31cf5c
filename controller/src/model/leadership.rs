//! Gateway leases and partition leadership.
//!
//! Gateways heartbeat through the controller leader, which stamps each
//! heartbeat with its own clock, so leases never compare two machines' clocks.
//! A lease ends when its gateway leaves, or by `ExpireGateways`, which the
//! controller leader proposes once its clock passes the lease's expiry. Whenever the set of live gateways changes (or a topic is created
//! or deleted), every topic's partitions are spread evenly over the live
//! gateways, moving as few as possible; a partition whose leader changes gets
//! the next leader epoch. Leadership is routing and cache locality only: any
//! gateway accepts any write.
//!
//! Compaction work is leased the same way, with its own lease set and epoch
//! per partition ([`Role::Compactor`]); there the epoch is a fence: the
//! controller refuses a swap from any but the current holder at its epoch.

use std::cmp::Reverse;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{GatewayLease, PartitionState, TopicState};
use shale_core::TopicName;

/// Shortest and longest lease a gateway may ask for.
pub const MIN_LEASE_MS: u64 = 500;
pub const MAX_LEASE_MS: u64 = 300_000;

/// The live gateways, by URL.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gateways {
    live: BTreeMap<String, GatewayLease>,
}

impl Gateways {
    pub fn live(&self) -> impl Iterator<Item = &GatewayLease> {
        self.live.values()
    }

    /// Extends a gateway's lease, registering it if it is new; returns the
    /// lease and whether the gateway joined.
    pub fn heartbeat(&mut self, url: &str, now_ms: i64, lease_ms: u64) -> (GatewayLease, bool) {
        let lease_ms = lease_ms.clamp(MIN_LEASE_MS, MAX_LEASE_MS) as i64;
        let expires_ms = now_ms.saturating_add(lease_ms);
        match self.live.get_mut(url) {
            Some(lease) => {
                // a new controller leader's clock may lag: a lease never shrinks
                lease.expires_ms = lease.expires_ms.max(expires_ms);
                (lease.clone(), false)
            }
            None => {
                let lease = GatewayLease { url: url.to_owned(), registered_ms: now_ms, expires_ms };
                self.live.insert(url.to_owned(), lease.clone());
                (lease, true)
            }
        }
    }

    /// Ends the leases that expired by `now_ms`; returns their URLs.
    pub fn expire(&mut self, now_ms: i64) -> Vec<String> {
        let expired: Vec<String> =
            self.live.values().filter(|l| l.expires_ms <= now_ms).map(|l| l.url.clone()).collect();
        for url in &expired {
            self.live.remove(url);
        }
        expired
    }

    /// Ends a lease now (the gateway shut down cleanly).
    pub fn leave(&mut self, url: &str) -> bool {
        self.live.remove(url).is_some()
    }

    /// The earliest expiry among live leases.
    pub fn next_expiry(&self) -> Option<i64> {
        self.live.values().map(|l| l.expires_ms).min()
    }
}

/// Which holder of a partition a rebalance assigns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The gateway leading the partition (routing, cache locality).
    Leader,
    /// The compactor that may rewrite the partition.
    Compactor,
}

impl Role {
    fn holder(self, p: &PartitionState) -> Option<&str> {
        match self {
            Role::Leader => p.leader.as_deref(),
            Role::Compactor => p.compactor.as_deref(),
        }
    }

    /// Gives the partition to `holder` with the next epoch.
    fn assign(self, p: &mut PartitionState, holder: Option<String>) {
        let (slot, epoch) = match self {
            Role::Leader => (&mut p.leader, &mut p.leader_epoch),
            Role::Compactor => (&mut p.compactor, &mut p.compactor_epoch),
        };
        *slot = holder;
        *epoch += 1;
    }
}

/// Spreads every topic's partitions evenly over the live holders of `role`
/// (gateways or compactors).
///
/// Per topic, each gateway gets ⌊n/g⌋ or ⌈n/g⌉ partitions; the larger shares
/// go to gateways that already lead the most of the topic (fewest moves), then
/// to those leading the fewest partitions overall (so single-partition topics
/// do not pile up on one gateway). A leader keeps its partitions up to its
/// share; the rest move to gateways below theirs.
pub fn rebalance(topics: &mut BTreeMap<TopicName, TopicState>, gateways: &Gateways, role: Role) {
    let live: Vec<&str> = gateways.live.keys().map(String::as_str).collect();
    let mut overall: BTreeMap<&str, usize> = live.iter().map(|g| (*g, 0)).collect();
    for topic in topics.values_mut() {
        if live.is_empty() {
            for p in &mut topic.partitions {
                if role.holder(p).is_some() {
                    role.assign(p, None);
                }
            }
            continue;
        }
        let mut leading: BTreeMap<&str, usize> = live.iter().map(|g| (*g, 0)).collect();
        for p in &topic.partitions {
            if let Some(n) = role.holder(p).and_then(|l| leading.get_mut(l)) {
                *n += 1;
            }
        }
        let mut ranked = live.clone();
        ranked.sort_by_key(|g| (Reverse(leading[g]), overall[g], *g));
        let (base, extra) = (topic.partitions.len() / live.len(), topic.partitions.len() % live.len());
        let share: BTreeMap<&str, usize> =
            ranked.iter().enumerate().map(|(i, g)| (*g, base + usize::from(i < extra))).collect();

        let mut kept: BTreeMap<&str, usize> = live.iter().map(|g| (*g, 0)).collect();
        let mut orphans = Vec::new();
        for (i, p) in topic.partitions.iter().enumerate() {
            match role.holder(p).and_then(|l| kept.get_key_value(l)) {
                Some((&g, &n)) if n < share[g] => *kept.entry(g).or_default() += 1,
                _ => orphans.push(i),
            }
        }
        for i in orphans {
            let Some(g) = live
                .iter()
                .copied()
                .filter(|g| kept[g] < share[g])
                .min_by_key(|g| (kept[g] + overall[g], *g))
            else {
                break; // unreachable: the shares add up to the partition count
            };
            *kept.entry(g).or_default() += 1;
            role.assign(&mut topic.partitions[i], Some(g.to_owned()));
        }
        for (g, n) in kept {
            *overall.entry(g).or_default() += n;
        }
    }
}

#[cfg(test)]
mod tests;
