//! Keeping a node whose disk was replaced from harming the cluster.
//!
//! A node started from the bucket's snapshot has lost its vote and every
//! entry after the snapshot. If it voted at once, it could help elect a
//! leader that lacks an entry it had itself helped commit (the openraft FAQ,
//! "wipe out the data of one node"). So it abstains — it grants no vote and
//! starts no election — until it has applied what the first append it
//! received from a leader committed or carried. That is not proof against
//! every interleaving (a leader elected a moment before may not have committed
//! older entries yet), but it closes the case the FAQ describes: a node voting,
//! right after its wipe, for a candidate that lacks an entry it had helped
//! commit. If no leader is heard from within
//! [`ABSTAIN_AT_MOST`], every node was restored (nothing anywhere is newer
//! than the bucket), and it votes again so that a leader can be elected.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a restored node waits to hear from a leader before voting anyway.
pub const ABSTAIN_AT_MOST: Duration = Duration::from_secs(10);

#[derive(Debug)]
enum State {
    Voting,
    Abstaining { until: Instant, catch_up_to: Option<u64> },
}

#[derive(Debug)]
pub struct Recovery {
    state: Mutex<State>,
}

impl Recovery {
    /// A node with its own disk: votes as usual.
    pub fn voting() -> Self {
        Self { state: Mutex::new(State::Voting) }
    }

    /// A node restored from the bucket: abstains until caught up.
    pub fn abstaining() -> Self {
        Self::abstaining_at_most(ABSTAIN_AT_MOST)
    }

    /// Abstains until caught up, or for `wait` if no leader is heard from.
    pub fn abstaining_at_most(wait: Duration) -> Self {
        Self { state: Mutex::new(State::Abstaining { until: Instant::now() + wait, catch_up_to: None }) }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn may_vote(&self) -> bool {
        matches!(*self.state(), State::Voting)
    }

    /// A leader's append reached up to `index` (its commit index or its last
    /// entry, whichever is later); the first one sets the catch-up target.
    pub fn heard_leader(&self, index: Option<u64>) {
        if let State::Abstaining { catch_up_to: target @ None, .. } = &mut *self.state() {
            *target = Some(index.unwrap_or(0));
        }
    }

    /// Ends abstaining once caught up (or no leader was heard from in time);
    /// returns true when it just ended.
    pub fn check(&self, last_applied: Option<u64>) -> bool {
        let mut state = self.state();
        let done = match &*state {
            State::Voting => return false,
            State::Abstaining { catch_up_to: Some(target), .. } => last_applied.is_some_and(|a| a >= *target),
            State::Abstaining { until, catch_up_to: None } => Instant::now() >= *until,
        };
        if done {
            *state = State::Voting;
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restored_node_votes_once_it_holds_what_was_committed() {
        let r = Recovery::abstaining();
        assert!(!r.may_vote());
        assert!(!r.check(Some(5)), "no leader heard yet");
        r.heard_leader(Some(10));
        r.heard_leader(Some(20)); // the first commit index heard is the target
        assert!(!r.check(Some(9)));
        assert!(!r.may_vote());
        assert!(r.check(Some(10)));
        assert!(r.may_vote());
        assert!(!r.check(Some(11)), "ends once");
    }

    #[test]
    fn with_no_leader_anywhere_it_votes_after_a_while() {
        let r = Recovery::abstaining_at_most(Duration::from_millis(30));
        assert!(!r.check(None));
        std::thread::sleep(Duration::from_millis(40));
        assert!(r.check(None));
        assert!(r.may_vote());
        assert!(Recovery::voting().may_vote());
    }
}
