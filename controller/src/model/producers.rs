//! Idempotent Kafka producers' sequence numbers, per partition, checked as
//! Kafka checks them: a batch is appended only if its first sequence follows
//! the producer's last one on the partition (0 after an epoch bump), and a
//! batch from an older epoch is fenced. A retried batch never gets here: its
//! idempotency key (producer, epoch, partition, first sequence) answers its
//! original offsets first. A producer not seen within the idempotency window
//! (log time) is forgotten, and its next batch is taken as it comes, as
//! Kafka takes a producer whose state has expired.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use shale_controller_client::command::ProducerBatch;

use super::{IDEMPOTENCY_WINDOW_MS, MetaError};

/// Producers remembered per partition at most; the least recent go first.
const MAX_PRODUCERS_PER_PARTITION: usize = 10_000;

/// A producer's last batch on a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerEntry {
    pub epoch: i16,
    pub last_sequence: i32,
    /// Log time of its last batch.
    pub committed_ms: i64,
}

/// The partition's producers, by producer id.
pub type Producers = BTreeMap<i64, ProducerEntry>;

/// Whether `batch` may follow `last`, its producer's last batch on the partition.
pub fn follows(last: Option<&ProducerEntry>, batch: &ProducerBatch, now_ms: i64) -> Result<(), MetaError> {
    let Some(last) = last.filter(|e| !expired(e, now_ms)) else { return Ok(()) };
    if batch.epoch < last.epoch {
        return Err(MetaError::ProducerFenced {
            producer: batch.id,
            epoch: batch.epoch,
            current: last.epoch,
        });
    }
    let expected = if batch.epoch > last.epoch { 0 } else { next(last.last_sequence) };
    if batch.first_sequence != expected {
        return Err(MetaError::OutOfOrderSequence {
            producer: batch.id,
            expected,
            got: batch.first_sequence,
        });
    }
    Ok(())
}

/// Remembers an appended batch, and forgets producers past the window.
pub fn record(producers: &mut Producers, batch: &ProducerBatch, now_ms: i64) {
    producers.retain(|_, e| !expired(e, now_ms));
    producers.insert(batch.id, entry(batch, now_ms));
    while producers.len() > MAX_PRODUCERS_PER_PARTITION {
        let oldest = producers.iter().min_by_key(|(_, e)| e.committed_ms).map(|(id, _)| *id);
        match oldest {
            Some(id) => producers.remove(&id),
            None => break,
        };
    }
}

/// What the partition remembers of `batch` once appended.
pub fn entry(batch: &ProducerBatch, now_ms: i64) -> ProducerEntry {
    ProducerEntry { epoch: batch.epoch, last_sequence: batch.last_sequence(), committed_ms: now_ms }
}

fn expired(entry: &ProducerEntry, now_ms: i64) -> bool {
    entry.committed_ms < now_ms.saturating_sub(IDEMPOTENCY_WINDOW_MS)
}

/// The sequence after `last`: Kafka's sequences wrap from `i32::MAX` to 0.
fn next(last: i32) -> i32 {
    if last == i32::MAX { 0 } else { last + 1 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(epoch: i16, first_sequence: i32, record_count: u32) -> ProducerBatch {
        ProducerBatch { id: 7, epoch, first_sequence, record_count }
    }

    fn check(p: &Producers, batch: &ProducerBatch, now_ms: i64) -> Result<(), MetaError> {
        follows(p.get(&batch.id), batch, now_ms)
    }

    #[test]
    fn a_batch_must_follow_the_last_one_of_its_producer() {
        let mut p = Producers::new();
        // unknown producer: taken as it comes
        assert!(check(&p, &batch(0, 5, 3), 1_000).is_ok());
        record(&mut p, &batch(0, 5, 3), 1_000);
        assert!(check(&p, &batch(0, 8, 1), 1_001).is_ok());
        let gap = check(&p, &batch(0, 9, 1), 1_001);
        assert!(matches!(gap, Err(MetaError::OutOfOrderSequence { expected: 8, got: 9, .. })), "{gap:?}");
        // an epoch bump starts again at 0; an older epoch is fenced
        assert!(check(&p, &batch(1, 0, 1), 1_002).is_ok());
        assert!(check(&p, &batch(1, 3, 1), 1_002).is_err());
        record(&mut p, &batch(1, 0, 1), 1_002);
        assert!(matches!(
            check(&p, &batch(0, 1, 1), 1_003),
            Err(MetaError::ProducerFenced { current: 1, .. })
        ));
    }

    #[test]
    fn sequences_wrap_and_producers_expire() {
        let mut p = Producers::new();
        record(&mut p, &batch(0, i32::MAX - 1, 2), 0);
        assert_eq!(p[&7].last_sequence, i32::MAX);
        assert!(check(&p, &batch(0, 0, 1), 1).is_ok());
        assert_eq!(batch(0, i32::MAX, 3).last_sequence(), 1);
        // past the window the producer is forgotten: any sequence is taken
        assert!(check(&p, &batch(0, 42, 1), IDEMPOTENCY_WINDOW_MS + 10).is_ok());
    }
}
