//! Offset resolution, as Kafka's ListOffsets: the first offset whose
//! record's timestamp is at or after a time, or the partition's earliest or
//! latest offset.

use shale_core::{ErrorCode, Offset, PartitionId, TopicName};

use super::ServiceError;
use crate::reader::FetchRequest;
use crate::state::AppState;

/// Records scanned per read while looking for a time inside a chunk.
const SCAN_RECORDS: usize = 10_000;

/// Where a time (or `earliest`/`latest`) lands in a partition.
pub enum At {
    Earliest,
    Latest,
    Time(i64),
}

impl At {
    pub fn parse(s: &str) -> Result<Self, ServiceError> {
        match s {
            "earliest" | "-2" => Ok(At::Earliest),
            "latest" | "-1" => Ok(At::Latest),
            n => n.parse().ok().filter(|t: &i64| *t >= 0).map(At::Time).ok_or_else(|| {
                ServiceError::new(
                    ErrorCode::InvalidOffset,
                    format!(
                        "timestamp_ms must be milliseconds since the epoch, 'earliest' or 'latest', got {n:?}"
                    ),
                )
            }),
        }
    }
}

/// The offset `at` names in the partition, the timestamp of its record when
/// found by time, and the partition's log start and high watermark.
pub async fn resolve(
    state: &AppState,
    topic: &TopicName,
    partition: PartitionId,
    at: &At,
) -> Result<(Offset, Option<i64>, (Offset, Offset)), ServiceError> {
    let ts = match at {
        At::Earliest | At::Latest => {
            let now =
                state.controller.read_partition(topic, partition, 0, 0, std::time::Duration::ZERO).await?;
            let bounds = (now.log_start_offset, now.high_watermark);
            let offset = if matches!(at, At::Earliest) { bounds.0 } else { bounds.1 };
            return Ok((offset, None, bounds));
        }
        At::Time(ts) => *ts,
    };
    // the first chunk whose newest record is at or after the time holds the
    // first such record: every chunk before it is older throughout
    let found = state.controller.find_time(topic, partition, ts).await?;
    let bounds = (found.log_start_offset, found.high_watermark);
    let Some(chunk) = found.chunks.first() else { return Ok((bounds.1, None, bounds)) };
    let mut from = chunk.base_offset.max(bounds.0);
    while from < chunk.end_offset() {
        let request = FetchRequest {
            topic: topic.clone(),
            partition,
            from,
            max_records: SCAN_RECORDS,
            max_bytes: 8 << 20,
            wait: std::time::Duration::ZERO,
        };
        let fetched = state.reader.fetch(&request).await?;
        if let Some((offset, r)) = fetched.records.iter().find(|(_, r)| r.timestamp_ms >= ts) {
            return Ok((*offset, Some(r.timestamp_ms), bounds));
        }
        if fetched.next_offset <= from {
            break;
        }
        from = fetched.next_offset;
    }
    // the record was compacted away: the next record after the chunk
    Ok((chunk.end_offset().min(bounds.1), None, bounds))
}
