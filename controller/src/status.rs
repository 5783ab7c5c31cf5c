//! On the leader: noticing members that are behind and make no progress.

use crate::types::NodeId;
pub use shale_controller_client::status::{MemberStatus, Status};

/// How long a member may be behind without progress before the leader logs it.
pub const STUCK_AFTER: std::time::Duration = std::time::Duration::from_secs(10);

/// On the leader: notices members that are behind and make no progress, so
/// a stuck follower is logged once (and its recovery too) instead of never.
#[derive(Debug, Default)]
pub struct FollowerWatch {
    /// Per member: its matched index, since when, and whether it was reported.
    seen: std::collections::BTreeMap<NodeId, (Option<u64>, std::time::Instant, bool)>,
}

/// A change worth one log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FollowerEvent {
    Stuck { id: NodeId, matched: Option<u64>, lag: u64 },
    CaughtUp { id: NodeId },
}

impl FollowerWatch {
    pub fn observe(&mut self, status: &Status, now: std::time::Instant) -> Vec<FollowerEvent> {
        let mut events = Vec::new();
        for m in status.members.iter().filter(|m| m.id != status.id) {
            let lag = m.lag.unwrap_or(u64::MAX);
            let entry = self.seen.entry(m.id).or_insert((m.matched, now, false));
            if lag == 0 || entry.0 != m.matched {
                if entry.2 && lag == 0 {
                    events.push(FollowerEvent::CaughtUp { id: m.id });
                }
                let reported = entry.2 && lag != 0;
                *entry = (m.matched, now, reported);
                continue;
            }
            if !entry.2 && now.duration_since(entry.1) >= STUCK_AFTER {
                entry.2 = true;
                events.push(FollowerEvent::Stuck { id: m.id, matched: m.matched, lag });
            }
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    fn status(matched: Option<u64>, last: u64) -> Status {
        let member = |id, matched: Option<u64>| MemberStatus {
            id,
            addr: String::new(),
            voter: true,
            matched,
            lag: matched.map(|m| last - m),
        };
        Status {
            id: 1,
            leader: Some(1),
            term: 1,
            last_applied: Some(last),
            last_log_index: Some(last),
            members: vec![member(1, Some(last)), member(2, matched)],
        }
    }

    #[test]
    fn a_follower_without_progress_is_reported_once_then_its_recovery() {
        let mut watch = FollowerWatch::default();
        let t0 = Instant::now();
        assert!(watch.observe(&status(Some(10), 50), t0).is_empty());
        assert!(watch.observe(&status(Some(10), 60), t0 + Duration::from_secs(5)).is_empty());
        let stuck = watch.observe(&status(Some(10), 70), t0 + STUCK_AFTER);
        assert_eq!(stuck, vec![FollowerEvent::Stuck { id: 2, matched: Some(10), lag: 60 }]);
        assert!(watch.observe(&status(Some(10), 80), t0 + STUCK_AFTER * 2).is_empty(), "reported once");
        // progress that still lags is not news; catching up is
        assert!(watch.observe(&status(Some(70), 80), t0 + STUCK_AFTER * 3).is_empty());
        let back = watch.observe(&status(Some(80), 80), t0 + STUCK_AFTER * 3);
        assert_eq!(back, vec![FollowerEvent::CaughtUp { id: 2 }]);
    }

    #[test]
    fn a_follower_that_keeps_moving_is_not_stuck() {
        let mut watch = FollowerWatch::default();
        let t0 = Instant::now();
        for i in 0..30u64 {
            let now = t0 + Duration::from_secs(i);
            assert!(watch.observe(&status(Some(i * 10), i * 10 + 5), now).is_empty());
        }
    }
}
