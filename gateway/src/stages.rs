//! Where a produce request's time went, stage by stage: each request's
//! breakdown is observed in `shale_produce_stage_seconds{stage}` and, above
//! `--log-slow-ms`, logged.

use std::time::{Duration, Instant};

use crate::metrics::GatewayMetrics;

/// When a flushed segment passed each of its stages; shared by every request
/// in it.
#[derive(Debug, Clone, Copy)]
pub struct FlightTimes {
    pub sealed: Instant,
    /// Encoded into one segment (on a blocking thread).
    pub encoded: Instant,
    /// Its PUT (hedged or not) answered.
    pub written: Instant,
    /// Its commit call started: earlier flights' commits were done.
    pub commit_started: Instant,
    /// The controller answered: applied, offsets assigned.
    pub committed: Instant,
    /// A second PUT raced the first.
    pub hedged: bool,
}

/// One produce request's time per stage.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Stages {
    /// From buffer reservation to the batch: body read, decoded, validated.
    pub admission: Duration,
    /// In the open batch until it was sealed.
    pub batch: Duration,
    pub encode: Duration,
    pub put: Duration,
    /// Written, waiting for earlier segments' commits (commits keep flush order).
    pub queue: Duration,
    /// The commit call: Raft append and apply (fsync included) plus, for a
    /// remote controller, the round trip.
    pub commit: Duration,
    /// From the commit's answer until the request's task had its offsets.
    pub answer: Duration,
    pub hedged: bool,
}

/// Stage names, as the `stage` label shows them.
pub const STAGES: [&str; 7] = ["admission", "batch", "encode", "put", "queue", "commit", "answer"];

impl Stages {
    /// A request admitted at `reserved`, added to its batch at `arrived`, in
    /// the flight `flight`, and handed its answer at `answered`.
    pub fn new(reserved: Instant, arrived: Instant, flight: &FlightTimes, answered: Instant) -> Self {
        Self {
            admission: arrived.saturating_duration_since(reserved),
            batch: flight.sealed.saturating_duration_since(arrived),
            encode: flight.encoded.saturating_duration_since(flight.sealed),
            put: flight.written.saturating_duration_since(flight.encoded),
            queue: flight.commit_started.saturating_duration_since(flight.written),
            commit: flight.committed.saturating_duration_since(flight.commit_started),
            answer: answered.saturating_duration_since(flight.committed),
            hedged: flight.hedged,
        }
    }

    /// Every stage, in [`STAGES`] order.
    pub fn durations(&self) -> [Duration; 7] {
        [self.admission, self.batch, self.encode, self.put, self.queue, self.commit, self.answer]
    }

    pub fn total(&self) -> Duration {
        self.durations().iter().sum()
    }

    /// Observes each stage and logs the breakdown when the total reaches
    /// `slow` (zero: never).
    pub fn record(&self, metrics: &GatewayMetrics, slow: Duration) {
        for (stage, d) in STAGES.iter().zip(self.durations()) {
            metrics.stage(stage).observe(d.as_secs_f64());
        }
        let total = self.total();
        if !slow.is_zero() && total >= slow {
            let ms = |d: Duration| d.as_secs_f64() * 1000.0;
            tracing::warn!(
                total_ms = ms(total),
                admission_ms = ms(self.admission),
                batch_ms = ms(self.batch),
                encode_ms = ms(self.encode),
                put_ms = ms(self.put),
                queue_ms = ms(self.queue),
                commit_ms = ms(self.commit),
                answer_ms = ms(self.answer),
                hedged = self.hedged,
                "slow produce"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_split_the_whole_time_between_them() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let flight = FlightTimes {
            sealed: at(20),
            encoded: at(21),
            written: at(40),
            commit_started: at(55),
            committed: at(60),
            hedged: true,
        };
        let stages = Stages::new(t0, at(2), &flight, at(61));
        let ms: Vec<u128> = stages.durations().iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [2, 18, 1, 19, 15, 5, 1]);
        assert_eq!(stages.total(), Duration::from_millis(61));
        assert!(stages.hedged);
    }

    #[test]
    fn a_clock_read_out_of_order_gives_zero_not_a_panic() {
        let t0 = Instant::now();
        let later = t0 + Duration::from_millis(5);
        let flight = FlightTimes {
            sealed: t0,
            encoded: t0,
            written: t0,
            commit_started: t0,
            committed: t0,
            hedged: false,
        };
        let stages = Stages::new(later, later, &flight, t0);
        assert_eq!(stages.total(), Duration::ZERO);
    }

    #[test]
    fn recorded_stages_appear_in_the_metrics() {
        let metrics = GatewayMetrics::new();
        let flight = FlightTimes {
            sealed: Instant::now(),
            encoded: Instant::now(),
            written: Instant::now(),
            commit_started: Instant::now(),
            committed: Instant::now(),
            hedged: false,
        };
        let now = Instant::now();
        Stages::new(now, now, &flight, now).record(&metrics, Duration::ZERO);
        let text = metrics.render();
        for stage in STAGES {
            let line = format!("shale_produce_stage_seconds_count{{stage=\"{stage}\"}} 1");
            assert!(text.contains(&line), "{line} missing from:\n{text}");
        }
    }
}
