//! Keeping this gateway registered with the controller: a heartbeat every
//! third of the lease, so two lost heartbeats in a row still keep it. The
//! controller spreads partition leadership over registered gateways; a
//! gateway that stops heartbeating loses its partitions when its lease ends,
//! and one that shuts down cleanly hands them over at once.

use std::sync::Arc;
use std::time::Duration;

use shale_controller_client::Controller;
use tokio::task::JoinHandle;

/// How long a clean shutdown waits for the controller to take the leave.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(2);

/// A running heartbeat loop.
pub struct Registration {
    controller: Arc<dyn Controller>,
    url: String,
    task: JoinHandle<()>,
}

/// Starts heartbeating as the gateway reachable at `url`.
pub fn register(controller: Arc<dyn Controller>, url: String, lease: Duration) -> Registration {
    let lease_ms = lease.as_millis() as u64;
    let task = tokio::spawn({
        let (controller, url) = (controller.clone(), url.clone());
        async move {
            let mut registered = false;
            loop {
                let pause = match controller.heartbeat(&url, lease_ms).await {
                    Ok(_) => {
                        if !registered {
                            tracing::info!(%url, lease_ms, "registered with the controller");
                            registered = true;
                        }
                        lease / 3
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "heartbeat failed; retrying");
                        lease / 10
                    }
                };
                tokio::time::sleep(pause).await;
            }
        }
    });
    Registration { controller, url, task }
}

impl Registration {
    /// Stops heartbeating and ends the lease, so leadership moves now rather
    /// than when the lease would have run out.
    pub async fn leave(self) {
        self.task.abort();
        match tokio::time::timeout(LEAVE_TIMEOUT, self.controller.leave(&self.url)).await {
            Ok(Ok(())) => tracing::info!(url = %self.url, "left the controller's gateway registry"),
            Ok(Err(e)) => tracing::warn!(error = %e, "leaving the registry failed; the lease will expire"),
            Err(_) => tracing::warn!("leaving the registry timed out; the lease will expire"),
        }
    }
}
