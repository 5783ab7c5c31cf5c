//! The controller's Prometheus metrics (`GET /metrics` on every node),
//! rendered from its [`Status`] at each scrape.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
pub use shale_core::store::fine_latency;

use crate::node::ControllerNode;
use crate::status::Status;

pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Member {
    node: u64,
}

fn gauge(registry: &mut Registry, name: &str, help: &str, value: i64) {
    let g = Gauge::<i64>::default();
    g.set(value);
    registry.register(name, help, g);
}

fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn as_i64(v: Option<u64>) -> i64 {
    v.map_or(-1, |v| i64::try_from(v).unwrap_or(i64::MAX))
}

/// How long this node's Raft log appends (fsync included) and state-machine
/// applies take; the last stages of a produce's commit.
#[derive(Debug, Clone)]
pub struct RaftTimings {
    pub append: Histogram,
    pub apply: Histogram,
}

impl RaftTimings {
    /// Registers both as `shale_raft_append_seconds` and `shale_raft_apply_seconds`
    /// in `registry` (already prefixed `shale`).
    pub fn register(&self, registry: &mut Registry) {
        registry.register("raft_append_seconds", "Raft log appends, fsync included", self.append.clone());
        registry.register("raft_apply_seconds", "Raft state-machine applies", self.apply.clone());
    }
}

const INDEX_ENTRIES: (&str, &str) =
    ("index_entries", "Index entries across every partition: what the state and its snapshots grow with");

/// `shale_controller_index_entries`, read from the node at each scrape, for
/// a process that serves the controller's state beside other metrics
/// (`shale dev`); register it under the `shale_controller` prefix.
pub struct IndexEntries(pub ControllerNode);

impl std::fmt::Debug for IndexEntries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IndexEntries").finish_non_exhaustive()
    }
}

impl Collector for IndexEntries {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let gauge = ConstGauge::new(count(self.0.index_entries()));
        let (name, help) = INDEX_ENTRIES;
        gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)
    }
}

/// The metrics text for one scrape.
pub fn render(status: &Status, timings: &RaftTimings, index_entries: usize) -> String {
    let mut root = Registry::default();
    timings.register(root.sub_registry_with_prefix("shale"));
    let registry = root.sub_registry_with_prefix("shale_controller");
    let (name, help) = INDEX_ENTRIES;
    gauge(registry, name, help, count(index_entries));
    gauge(registry, "term", "Current Raft term", as_i64(Some(status.term)));
    gauge(registry, "is_leader", "1 when this node leads", i64::from(status.is_leader()));
    gauge(registry, "last_applied_index", "Last log index applied (-1: none)", as_i64(status.last_applied));
    gauge(
        registry,
        "last_log_index",
        "Last index in this node's log (-1: none)",
        as_i64(status.last_log_index),
    );
    let matched = Family::<Member, Gauge>::default();
    let lag = Family::<Member, Gauge>::default();
    for m in &status.members {
        if let (Some(i), Some(l)) = (m.matched, m.lag) {
            matched.get_or_create(&Member { node: m.id }).set(as_i64(Some(i)));
            lag.get_or_create(&Member { node: m.id }).set(as_i64(Some(l)));
        }
    }
    registry.register(
        "member_matched_index",
        "On the leader: last index matching the leader's, per member",
        matched,
    );
    registry.register("follower_lag_entries", "On the leader: entries each member is behind", lag);
    let mut out = String::new();
    if let Err(e) = encode(&mut out, &root) {
        tracing::warn!(error = %e, "cannot render metrics");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::MemberStatus;

    #[test]
    fn lag_is_shown_per_member() {
        let status = Status {
            id: 1,
            leader: Some(1),
            term: 3,
            last_applied: Some(90),
            last_log_index: Some(90),
            members: vec![
                MemberStatus { id: 1, addr: "a".into(), voter: true, matched: Some(90), lag: Some(0) },
                MemberStatus { id: 2, addr: "b".into(), voter: true, matched: Some(40), lag: Some(50) },
                MemberStatus { id: 3, addr: "c".into(), voter: false, matched: None, lag: None },
            ],
        };
        let timings = RaftTimings { append: fine_latency(), apply: fine_latency() };
        timings.append.observe(0.002);
        let text = render(&status, &timings, 7);
        assert!(text.contains("shale_raft_append_seconds_count 1"), "{text}");
        assert!(text.contains("shale_raft_apply_seconds_count 0"), "{text}");
        assert!(text.contains("shale_controller_follower_lag_entries{node=\"2\"} 50"), "{text}");
        assert!(text.contains("shale_controller_member_matched_index{node=\"1\"} 90"), "{text}");
        assert!(!text.contains("node=\"3\""), "no figure for an unknown match: {text}");
        assert!(text.contains("shale_controller_is_leader 1"), "{text}");
        assert!(text.contains("shale_controller_index_entries 7"), "{text}");
    }
}
