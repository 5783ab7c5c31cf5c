//! Produce, Fetch and ListOffsets: Kafka record batches to and from Shale
//! records, through the same append and read paths as HTTP.
//!
//! - A produce is answered once its records are committed, whatever `acks`
//!   says; with acks=0 no answer is sent (Kafka's contract), but the next
//!   request on the connection still waits for the commit.
//! - An idempotent producer's batch carries an idempotency key made of its
//!   producer id, epoch, partition and first sequence, so a retried batch
//!   writes nothing and answers the original offsets, through any gateway.
//! - A fetch answers, per partition, one uncompressed batch from the asked
//!   offset on; with nothing new anywhere it long-polls up to `max_wait_ms`.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{FetchRequest, FetchResponse, ListOffsetsRequest, ListOffsetsResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record as KafkaRecord, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
    TimestampType,
};
use shale_controller_client::auth::{Operation, Principal};
use shale_controller_client::command::ProducerBatch;
use shale_core::wire::ProduceRecord;
use shale_core::{ErrorCode, Header, Offset, PartitionId, Record, TopicName};

use super::errors::{self, NONE, UNSUPPORTED_VERSION};
use super::requests::{Handled, Response};
use super::{Session, Turn};
use shale_gateway::batcher::{BufferPermit, RequestGuard};
use shale_gateway::reader::{FetchRequest as ReadRequest, Fetched};
use shale_gateway::service::append::{Submitted, submit};
use shale_gateway::service::offsets::{At, resolve};
use shale_gateway::service::read::{count_out, read_many};
use shale_gateway::service::{ServiceError, authorize};

/// A partition's records as a producer sent them, and who sent them.
#[derive(Debug)]
pub struct Produced {
    pub records: Vec<ProduceRecord>,
    /// An idempotent producer's id, epoch and the batch's first sequence.
    pub producer: Option<(i64, i16, i32)>,
}

/// Decodes a partition's record batches (any compression Kafka has).
/// Transactions are not supported, so transactional and control batches
/// are refused. A header with a null value becomes an empty one.
pub fn decode_batches(mut bytes: Bytes) -> Result<Produced, String> {
    let sets =
        RecordBatchDecoder::decode_all(&mut bytes).map_err(|e| format!("malformed record batch: {e}"))?;
    let mut produced = Produced { records: Vec::new(), producer: None };
    for record in sets.into_iter().flat_map(|s| s.records) {
        if record.transactional || record.control {
            return Err("transactional batches are not supported".into());
        }
        if produced.producer.is_none() && record.producer_id >= 0 {
            produced.producer = Some((record.producer_id, record.producer_epoch, record.sequence));
        }
        let headers = record
            .headers
            .into_iter()
            .map(|(key, value)| Header { key: key.to_string(), value: value.unwrap_or_default() })
            .collect();
        produced.records.push(ProduceRecord {
            partition: None,
            timestamp_ms: (record.timestamp >= 0).then_some(record.timestamp),
            key: record.key,
            value: record.value,
            headers,
        });
    }
    Ok(produced)
}

/// One uncompressed batch (magic 2) holding the records at their offsets.
/// Header keys repeated in a record keep their first position and last
/// value (Kafka's client types hold headers as a list, the crate as a map).
pub fn encode_batch(records: &[(Offset, Record)]) -> Result<Bytes, String> {
    let batch: Vec<KafkaRecord> = records
        .iter()
        .map(|(offset, r)| {
            let mut headers = IndexMap::new();
            for h in &r.headers {
                headers.insert(StrBytes::from_string(h.key.clone()), Some(h.value.clone()));
            }
            KafkaRecord {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: *offset as i64,
                sequence: -1,
                timestamp: r.timestamp_ms,
                key: r.key.clone(),
                value: r.value.clone(),
                headers,
            }
        })
        .collect();
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions { version: 2, compression: Compression::None };
    RecordBatchEncoder::encode(&mut buf, batch.iter(), &options).map_err(|e| e.to_string())?;
    Ok(buf.freeze())
}

/// A partition index from the wire, if it can name one.
fn partition_id(index: i32) -> Option<PartitionId> {
    PartitionId::try_from(index).ok()
}

impl Session {
    /// Appends every partition's batches, each under its share of the
    /// frame's room in the buffer. The batches are handed to the batcher in
    /// the connection's order (`turn`), then their commits are awaited at once.
    pub(super) async fn produce(
        &self,
        principal: &Principal,
        request: ProduceRequest,
        mut room: BufferPermit,
        turn: Option<Turn>,
    ) -> Handled {
        let timeout =
            Duration::from_millis(u64::try_from(request.timeout_ms).unwrap_or(0).clamp(1_000, 120_000));
        if request.transactional_id.is_some() {
            return Handled::Answer(Response::Produce(produce_error(
                &request,
                errors::TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
            )));
        }
        let mut turn = turn;
        if let Some(turn) = turn.as_mut() {
            turn.wait().await;
        }
        let mut submitted = Vec::new();
        for topic in &request.topic_data {
            for p in &topic.partition_data {
                let share = room.split(p.records.as_ref().map_or(0, Bytes::len));
                let records = p.records.clone();
                let name = topic.name.0.as_str();
                submitted
                    .push(self.submit_partition(principal, name, p.index, records, share, timeout).await);
            }
        }
        if let Some(turn) = turn {
            turn.pass();
        }
        let commits = submitted.into_iter().map(|s| async move {
            let acked = tokio::time::timeout(timeout, s?.acked()).await.map_err(|_| {
                ServiceError::new(ErrorCode::RequestTimeout, "the commit took longer than timeout_ms")
            })??;
            acked.first().map(|(_, o)| *o).ok_or_else(|| ServiceError::invalid("nothing was written"))
        });
        let mut outcomes = futures::future::join_all(commits).await.into_iter();
        if request.acks == 0 {
            return Handled::Silent;
        }
        let topics = request
            .topic_data
            .into_iter()
            .map(|topic| {
                let partitions = topic
                    .partition_data
                    .iter()
                    .map(|p| {
                        let outcome =
                            outcomes.next().unwrap_or_else(|| Err(ServiceError::invalid("unanswered")));
                        let (code, base_offset, message) = match outcome {
                            Ok(base) => (NONE, base as i64, None),
                            Err(e) => (errors::code(&e), -1, Some(StrBytes::from_string(e.message))),
                        };
                        PartitionProduceResponse::default()
                            .with_index(p.index)
                            .with_error_code(code)
                            .with_base_offset(base_offset)
                            .with_log_append_time_ms(-1)
                            .with_error_message(message)
                    })
                    .collect();
                TopicProduceResponse::default().with_name(topic.name).with_partition_responses(partitions)
            })
            .collect();
        Handled::Answer(Response::Produce(ProduceResponse::default().with_responses(topics)))
    }

    /// Validates one partition's batches and hands them to the batcher.
    async fn submit_partition(
        &self,
        principal: &Principal,
        topic: &str,
        index: i32,
        records: Option<Bytes>,
        share: Option<BufferPermit>,
        timeout: Duration,
    ) -> Result<Submitted, ServiceError> {
        let topic = TopicName::new(topic.to_owned())?;
        authorize(principal, Operation::Produce, topic.as_str())?;
        let partition =
            partition_id(index).ok_or_else(|| ServiceError::invalid(format!("partition {index}")))?;
        let bytes = records.unwrap_or_default();
        let produced = decode_batches(bytes.clone()).map_err(ServiceError::invalid)?;
        if produced.records.is_empty() {
            return Err(ServiceError::invalid("the batch holds no records"));
        }
        let permit = match share {
            Some(permit) => permit,
            // more than the frame reserved: wait up to the produce's timeout (a
            // Kafka producer has no way to be told to back off but an error)
            None => crate::reserve(&self.state, bytes.len(), Some(tokio::time::Instant::now() + timeout))
                .await
                .ok_or_else(|| {
                    ServiceError::new(ErrorCode::Overloaded, "the gateway's buffer stayed full")
                })?,
        };
        let record_count = u32::try_from(produced.records.len()).unwrap_or(u32::MAX);
        let guard = produced.producer.map(|(id, epoch, first_sequence)| RequestGuard {
            idempotency_key: Some(format!("kafka:{id}:{epoch}:{partition}:{first_sequence}")),
            expected_offset: None,
            producer: Some(ProducerBatch { id, epoch, first_sequence, record_count }),
        });
        submit(&self.state, topic, Some(partition), produced.records, guard, permit).await
    }

    pub(super) async fn fetch(&self, principal: &Principal, request: FetchRequest) -> Response {
        let max_wait = Duration::from_millis(u64::try_from(request.max_wait_ms).unwrap_or(0))
            .min(self.state.config.max_wait);
        let mut budget = usize::try_from(request.max_bytes).unwrap_or(0).max(1);
        let min_bytes = usize::try_from(request.min_bytes).unwrap_or(0);
        // in request order, so the answers line up with the asked partitions
        let wanted: Vec<Wanted> = request
            .topics
            .iter()
            .flat_map(|t| {
                let topic = TopicName::new(t.topic.0.to_string()).ok();
                t.partitions.iter().map(move |p| {
                    let max = usize::try_from(p.partition_max_bytes).unwrap_or(0).max(1);
                    (topic.clone(), p.partition, u64::try_from(p.fetch_offset).unwrap_or(u64::MAX), max)
                })
            })
            .collect();
        let mut answers = self.fetch_all(principal, &wanted, Duration::ZERO).await;
        let fetched: usize = answers.iter().map(|a| a.bytes).sum();
        if fetched < min_bytes.max(1) && !max_wait.is_zero() {
            self.wait_for_records(principal, &wanted, max_wait).await;
            answers = self.fetch_all(principal, &wanted, Duration::ZERO).await;
        }
        let mut topics: Vec<FetchableTopicResponse> = Vec::new();
        let mut sent_any = false;
        let mut answers = answers.into_iter();
        for t in &request.topics {
            let mut partitions = Vec::with_capacity(t.partitions.len());
            for p in &t.partitions {
                let answer = answers.next();
                let mut data = PartitionData::default().with_partition_index(p.partition);
                match answer {
                    Some(a) => {
                        // the first records go out whatever their size, as Kafka does
                        let fits = a.bytes <= budget || !sent_any;
                        let records = a.records.clone().filter(|_| fits);
                        if records.is_some() {
                            budget = budget.saturating_sub(a.bytes);
                            sent_any = true;
                        }
                        data = data
                            .with_error_code(a.error_code)
                            .with_high_watermark(a.high_watermark)
                            .with_last_stable_offset(a.high_watermark)
                            .with_log_start_offset(a.log_start_offset)
                            .with_records(Some(records.unwrap_or_default()));
                    }
                    None => {
                        data = data
                            .with_error_code(errors::UNKNOWN_TOPIC_OR_PARTITION)
                            .with_records(Some(Bytes::new()))
                    }
                }
                partitions.push(data);
            }
            topics.push(
                FetchableTopicResponse::default().with_topic(t.topic.clone()).with_partitions(partitions),
            );
        }
        Response::Fetch(
            FetchResponse::default().with_error_code(NONE).with_session_id(0).with_responses(topics),
        )
    }

    /// Every asked partition read once, at once, each encoded as a Kafka
    /// batch on a task of its own.
    async fn fetch_all(
        &self,
        principal: &Principal,
        wanted: &[Wanted],
        wait: Duration,
    ) -> Vec<PartitionAnswer> {
        let mut answers = vec![PartitionAnswer::empty(); wanted.len()];
        let mut asked = Vec::with_capacity(wanted.len());
        let mut requests = Vec::with_capacity(wanted.len());
        for (i, w) in wanted.iter().enumerate() {
            match read_request(principal, w, wait) {
                Ok(request) => {
                    asked.push(i);
                    requests.push(request);
                }
                Err(code) => answers[i].error_code = code,
            }
        }
        let served = self.state.clone();
        let reads = read_many(&self.state, requests, move |request, fetched| {
            // a long-poll's probe (1 byte a partition) only waits: it serves nothing
            if request.max_bytes > 1 {
                count_out(&served, &fetched.records);
            }
            Ok(encoded(request, fetched))
        })
        .await;
        for (i, read) in asked.into_iter().zip(reads) {
            answers[i] = match read {
                // cancelled once another partition had records
                None => PartitionAnswer::empty(),
                Some(Ok(answer)) => answer,
                Some(Err(e)) => refused(&e),
            };
        }
        answers
    }

    /// Waits until one of the partitions has a record past its asked
    /// offset, or `max_wait` passes.
    async fn wait_for_records(&self, principal: &Principal, wanted: &[Wanted], max_wait: Duration) {
        let started = tokio::time::Instant::now();
        let probes: Vec<Wanted> = wanted.iter().map(|(t, p, from, _)| (t.clone(), *p, *from, 1)).collect();
        let answers = self.fetch_all(principal, &probes, max_wait).await;
        if answers.iter().all(|a| a.bytes == 0) {
            // every partition answered at once with nothing (errors): wait out the time
            tokio::time::sleep_until(started + max_wait).await;
        }
    }

    pub(super) async fn list_offsets(&self, principal: &Principal, request: ListOffsetsRequest) -> Response {
        let mut topics = Vec::with_capacity(request.topics.len());
        for t in request.topics {
            let mut partitions = Vec::with_capacity(t.partitions.len());
            for p in &t.partitions {
                let (code, offset, timestamp) = match self
                    .list_offset(principal, t.name.0.as_str(), p.partition_index, p.timestamp)
                    .await
                {
                    Ok((offset, timestamp)) => (NONE, offset, timestamp),
                    Err(code) => (code, -1, -1),
                };
                partitions.push(
                    ListOffsetsPartitionResponse::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(code)
                        .with_offset(offset)
                        .with_timestamp(timestamp),
                );
            }
            topics.push(ListOffsetsTopicResponse::default().with_name(t.name).with_partitions(partitions));
        }
        Response::ListOffsets(ListOffsetsResponse::default().with_topics(topics))
    }

    /// -2 earliest, -1 latest, else the first offset at or after the time
    /// (-1 when no record is that recent, as Kafka answers).
    async fn list_offset(
        &self,
        principal: &Principal,
        topic: &str,
        partition: i32,
        timestamp: i64,
    ) -> Result<(i64, i64), i16> {
        let topic = TopicName::new(topic.to_owned()).map_err(|e| errors::code(&e.into()))?;
        authorize(principal, Operation::Describe, topic.as_str()).map_err(|e| errors::code(&e))?;
        let p = partition_id(partition).ok_or(errors::UNKNOWN_TOPIC_OR_PARTITION)?;
        let at = match timestamp {
            -2 => At::Earliest,
            -1 => At::Latest,
            t if t >= 0 => At::Time(t),
            _ => return Err(UNSUPPORTED_VERSION),
        };
        let (offset, found, _) = resolve(&self.state, &topic, p, &at).await.map_err(|e| errors::code(&e))?;
        match (&at, found) {
            (At::Time(_), Some(ts)) => Ok((offset as i64, ts)),
            (At::Time(_), None) => Ok((-1, -1)),
            _ => Ok((offset as i64, -1)),
        }
    }
}

/// A produce answer with `code` for every partition asked.
pub(super) fn produce_error(request: &ProduceRequest, code: i16) -> ProduceResponse {
    let topics = request
        .topic_data
        .iter()
        .map(|t| {
            let partitions = t
                .partition_data
                .iter()
                .map(|p| {
                    PartitionProduceResponse::default()
                        .with_index(p.index)
                        .with_error_code(code)
                        .with_base_offset(-1)
                })
                .collect();
            TopicProduceResponse::default().with_name(t.name.clone()).with_partition_responses(partitions)
        })
        .collect();
    ProduceResponse::default().with_responses(topics)
}

/// The read a fetch's partition asks for, or the error code that refuses it.
fn read_request(principal: &Principal, wanted: &Wanted, wait: Duration) -> Result<ReadRequest, i16> {
    let (topic, partition, from, max_bytes) = wanted;
    let topic = topic.as_ref().ok_or(errors::UNKNOWN_TOPIC_OR_PARTITION)?;
    authorize(principal, Operation::Consume, topic.as_str())
        .map_err(|_| errors::TOPIC_AUTHORIZATION_FAILED)?;
    let partition = partition_id(*partition).ok_or(errors::UNKNOWN_TOPIC_OR_PARTITION)?;
    Ok(ReadRequest {
        topic: topic.clone(),
        partition,
        from: *from,
        max_records: 100_000,
        max_bytes: *max_bytes,
        wait,
    })
}

/// A partition's records as one Kafka batch, with its bounds.
fn encoded(request: &ReadRequest, fetched: Fetched) -> PartitionAnswer {
    let mut answer = PartitionAnswer::empty();
    answer.high_watermark = fetched.high_watermark as i64;
    answer.log_start_offset = fetched.log_start_offset as i64;
    if fetched.records.is_empty() {
        return answer;
    }
    match encode_batch(&fetched.records) {
        Ok(bytes) => {
            answer.bytes = bytes.len();
            answer.records = Some(bytes);
        }
        Err(e) => {
            let (topic, partition) = (&request.topic, request.partition);
            tracing::warn!(%topic, partition, error = %e, "encoding a kafka fetch batch failed");
            answer.error_code = errors::UNKNOWN_SERVER_ERROR;
        }
    }
    answer
}

/// A partition's answer to a read that failed; an offset out of range
/// carries the bounds, so the client can reset.
fn refused(e: &ServiceError) -> PartitionAnswer {
    let mut answer = PartitionAnswer::empty();
    answer.error_code = errors::code(e);
    if e.code == ErrorCode::OffsetOutOfRange {
        let bound = |key| e.offset(key).map_or(-1, |o| o as i64);
        answer.high_watermark = bound("high_watermark");
        answer.log_start_offset = bound("log_start_offset");
    }
    answer
}

/// A partition a fetch asks for: its topic (None: not a valid name), index,
/// offset and `partition_max_bytes`.
type Wanted = (Option<TopicName>, i32, Offset, usize);

/// One partition of a fetch answer.
#[derive(Debug, Clone)]
struct PartitionAnswer {
    error_code: i16,
    high_watermark: i64,
    log_start_offset: i64,
    records: Option<Bytes>,
    bytes: usize,
}

impl PartitionAnswer {
    fn empty() -> Self {
        Self { error_code: NONE, high_watermark: -1, log_start_offset: -1, records: None, bytes: 0 }
    }
}

#[cfg(test)]
mod tests;
