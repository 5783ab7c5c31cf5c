use std::collections::BTreeMap;

use proptest::prelude::*;
use shale_core::TopicName;

use crate::model::{Metadata, TopicConfig};
use crate::types::{Command, CommandReply};

fn create(m: &mut Metadata, topic: &str, partitions: u32) {
    let name = TopicName::new(topic).expect("valid name");
    let reply =
        m.apply(&Command::CreateTopic { name, partitions, config: TopicConfig::default(), created_ms: 0 });
    assert!(matches!(reply, CommandReply::TopicCreated(_)), "{reply:?}");
}

fn heartbeat(m: &mut Metadata, url: &str, now_ms: i64) {
    let reply = m.apply(&Command::GatewayHeartbeat { url: url.into(), now_ms, lease_ms: 1000 });
    assert!(matches!(reply, CommandReply::Lease(_)), "{reply:?}");
}

/// (leader, epoch) of every partition of `topic`.
fn leaders(m: &Metadata, topic: &str) -> Vec<(Option<String>, u64)> {
    let t = &m.topics[&TopicName::new(topic).expect("valid name")];
    t.partitions.iter().map(|p| (p.leader.clone(), p.leader_epoch)).collect()
}

/// Partitions led per gateway, for one topic.
fn counts(m: &Metadata, topic: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for (leader, _) in leaders(m, topic) {
        *out.entry(leader.unwrap_or_default()).or_default() += 1;
    }
    out
}

#[test]
fn partitions_are_spread_evenly_and_move_when_a_gateway_joins() {
    let mut m = Metadata::default();
    create(&mut m, "t", 6);
    assert!(leaders(&m, "t").iter().all(|(l, e)| l.is_none() && *e == 0), "no gateway, no leader");

    heartbeat(&mut m, "http://a", 0);
    assert_eq!(counts(&m, "t"), BTreeMap::from([("http://a".into(), 6)]));
    assert!(leaders(&m, "t").iter().all(|(_, e)| *e == 1));

    heartbeat(&mut m, "http://b", 10);
    heartbeat(&mut m, "http://c", 20);
    let c = counts(&m, "t");
    assert_eq!(c.values().copied().collect::<Vec<_>>(), vec![2, 2, 2], "{c:?}");
    // four moved away from a, each with a new epoch; a kept two at epoch 1
    let after = leaders(&m, "t");
    let kept = after.iter().filter(|(l, e)| l.as_deref() == Some("http://a") && *e == 1).count();
    assert_eq!(kept, 2, "{after:?}");

    // a heartbeat from a known gateway moves nothing
    heartbeat(&mut m, "http://b", 30);
    assert_eq!(leaders(&m, "t"), after);
}

#[test]
fn an_expired_gateway_loses_its_partitions_with_a_new_epoch() {
    let mut m = Metadata::default();
    create(&mut m, "t", 4);
    heartbeat(&mut m, "http://a", 0);
    heartbeat(&mut m, "http://b", 0);
    heartbeat(&mut m, "http://a", 600); // a's lease now ends at 1600, b's at 1000
    let before = leaders(&m, "t");

    let reply = m.apply(&Command::ExpireGateways { now_ms: 999 });
    assert_eq!(reply, CommandReply::GatewaysGone(vec![]));
    assert_eq!(leaders(&m, "t"), before, "no lease ended yet");

    let reply = m.apply(&Command::ExpireGateways { now_ms: 1000 });
    assert_eq!(reply, CommandReply::GatewaysGone(vec!["http://b".into()]));
    for ((old, old_epoch), (new, new_epoch)) in before.iter().zip(leaders(&m, "t")) {
        assert_eq!(new.as_deref(), Some("http://a"));
        let moved = old.as_deref() == Some("http://b");
        assert_eq!(new_epoch, old_epoch + u64::from(moved), "epoch bumps only when the leader changes");
    }

    // the last gateway leaving leaves no leader
    assert_eq!(
        m.apply(&Command::GatewayLeave { url: "http://a".into() }),
        CommandReply::GatewaysGone(vec!["http://a".into()])
    );
    assert!(leaders(&m, "t").iter().all(|(l, _)| l.is_none()));
}

#[test]
fn single_partition_topics_do_not_pile_up_on_one_gateway() {
    let mut m = Metadata::default();
    heartbeat(&mut m, "http://a", 0);
    heartbeat(&mut m, "http://b", 0);
    heartbeat(&mut m, "http://c", 0);
    for t in ["t1", "t2", "t3", "t4", "t5", "t6"] {
        create(&mut m, t, 1);
    }
    let mut overall: BTreeMap<String, usize> = BTreeMap::new();
    for t in ["t1", "t2", "t3", "t4", "t5", "t6"] {
        for (g, n) in counts(&m, t) {
            *overall.entry(g).or_default() += n;
        }
    }
    assert_eq!(overall.values().copied().collect::<Vec<_>>(), vec![2, 2, 2], "{overall:?}");
}

#[test]
fn a_lease_never_shrinks_and_is_clamped() {
    let mut gateways = super::Gateways::default();
    let (lease, joined) = gateways.heartbeat("http://a", 1000, 10);
    assert!(joined);
    assert_eq!(lease.expires_ms, 1000 + super::MIN_LEASE_MS as i64);
    let (lease, joined) = gateways.heartbeat("http://a", 0, 1000);
    assert!(!joined);
    assert_eq!(lease.expires_ms, 1500, "an earlier clock does not shorten the lease");
    assert_eq!(gateways.next_expiry(), Some(1500));
}

proptest! {
    /// After any sequence of joins, expiries and topic changes, every
    /// partition of every topic is led by a live gateway (when there is one),
    /// each topic's shares differ by at most one, and an epoch never goes back.
    #[test]
    fn leadership_stays_balanced(events in prop::collection::vec((0u8..4, 0u8..5, 1u32..9), 1..40)) {
        let mut m = Metadata::default();
        let mut now = 0i64;
        let mut epochs: BTreeMap<(String, usize), u64> = BTreeMap::new();
        for (kind, who, n) in events {
            now += 300;
            let url = format!("http://g{who}");
            let topic = format!("t{who}");
            match kind {
                0 => heartbeat(&mut m, &url, now),
                1 => { m.apply(&Command::ExpireGateways { now_ms: now }); }
                2 => { m.apply(&Command::GatewayLeave { url }); }
                _ => {
                    let name = TopicName::new(topic).expect("valid name");
                    m.apply(&Command::CreateTopic { name, partitions: n, config: TopicConfig::default(), created_ms: now });
                }
            }
            let live: Vec<String> = m.gateways.live().map(|l| l.url.clone()).collect();
            for (name, t) in &m.topics {
                let mut per: BTreeMap<&str, usize> = live.iter().map(|g| (g.as_str(), 0)).collect();
                for (i, p) in t.partitions.iter().enumerate() {
                    let key = (name.to_string(), i);
                    let previous = epochs.insert(key, p.leader_epoch).unwrap_or(0);
                    prop_assert!(p.leader_epoch >= previous);
                    match &p.leader {
                        Some(l) => *per.get_mut(l.as_str()).ok_or_else(|| TestCaseError::fail(format!("{l} is not live")))? += 1,
                        None => prop_assert!(live.is_empty()),
                    }
                }
                if let (Some(max), Some(min)) = (per.values().max(), per.values().min()) {
                    prop_assert!(max - min <= 1, "{name}: {per:?}");
                }
            }
        }
    }
}
