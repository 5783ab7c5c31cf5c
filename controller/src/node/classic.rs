//! Kafka's classic group protocol on the leader: requests that change the
//! group go through the log, the rest are answered from the state; a join
//! or sync that waits for other members waits here for a few seconds at a
//! time. The leader's keeper ends classic sessions and overdue rounds.

use std::time::Duration;

use shale_controller_client::ControllerError;
use shale_controller_client::classic::{ClassicAnswer, ClassicRequest};
use shale_controller_client::client::replies;
use tokio::time::Instant;

use super::{ControllerNode, lock, silent};
use crate::model::ClassicStep;
use crate::types::Command;

/// Longest a join or sync waits here before answering `Pending`: well
/// within the clients' write timeout, so the gateway asks again.
const CLASSIC_WAIT: Duration = Duration::from_secs(2);

impl ControllerNode {
    pub(super) async fn classic(
        &self,
        group: &str,
        request: ClassicRequest,
    ) -> Result<ClassicAnswer, ControllerError> {
        self.require_leader()?;
        let member = match &request {
            ClassicRequest::Join(j) => Some(j.member_id.as_str()),
            ClassicRequest::Sync(s) => Some(s.member_id.as_str()),
            ClassicRequest::Heartbeat { member_id, .. } => Some(member_id.as_str()),
            ClassicRequest::Leave { .. } => None,
        };
        let deadline = Instant::now() + CLASSIC_WAIT;
        let mut applied = self.shared.subscribe();
        loop {
            if let Some(member) = member {
                self.touch(group, member);
            }
            let step = self.shared.read().metadata.classic_step(group, &request);
            match step {
                ClassicStep::Answer(ClassicAnswer::Pending) => {}
                ClassicStep::Answer(answer) => return Ok(answer),
                ClassicStep::Write => {
                    let command =
                        Command::Classic { group: group.to_owned(), request: request.clone(), now_ms: 0 };
                    let answer = replies::classic(self.write(command).await?)?;
                    if answer != ClassicAnswer::Pending {
                        return Ok(answer);
                    }
                }
            }
            match tokio::time::timeout_at(deadline, applied.changed()).await {
                Ok(Ok(())) => {}
                Err(_) => return Ok(ClassicAnswer::Pending),
                Ok(Err(_)) => return Err(ControllerError::Unavailable("controller stopped".into())),
            }
        }
    }

    /// Per classic group with something due: the members whose session
    /// ended ([`silent`]), or a round's deadline that passed.
    pub(super) fn classic_due(&self, now_ms: i64, leading_since_ms: i64) -> Vec<(String, Vec<String>)> {
        let state = self.shared.read();
        let sessions = lock(&self.sessions);
        let mut due = Vec::new();
        for (group, g) in &state.metadata.groups {
            let expired: Vec<String> = g
                .classic
                .members
                .iter()
                .filter(|(id, m)| {
                    silent(&sessions, group, id, m.session_timeout_ms, now_ms, leading_since_ms)
                })
                .map(|(id, _)| id.clone())
                .collect();
            if !expired.is_empty() || g.classic.deadline().is_some_and(|d| d <= now_ms) {
                due.push((group.clone(), expired));
            }
        }
        due
    }

    /// Ends what [`Self::classic_due`] found.
    pub(super) async fn expire_classic(&self, now_ms: i64, leading_since_ms: i64) {
        for (group, members) in self.classic_due(now_ms, leading_since_ms) {
            // stamped with this node's clock in `write`
            let command = Command::ClassicExpire { group: group.clone(), members, now_ms };
            if let Err(e) = self.write(command).await {
                tracing::warn!(%group, error = %e, "cannot end expired classic group sessions");
            }
        }
    }
}
