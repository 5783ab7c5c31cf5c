//! CreatePartitions, DeleteRecords and OffsetForLeaderEpoch: a topic's
//! partitions grow, a partition's log start moves, and a client checks its
//! position after a leader change.

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::*;
use shale_controller_client::TopicInfo;
use shale_controller_client::auth::{Operation, Principal};
use shale_core::{Offset, PartitionId, TopicName};
use shale_gateway::service::{ServiceError, authorize};

use super::Session;
use super::errors::{self, NONE};
use super::groups::text;
use super::requests::Response;

/// DeleteRecords' offset meaning "up to the high watermark".
const HIGH_WATERMARK: i64 = -1;

impl Session {
    /// Partitions are added; records already written stay where they are,
    /// and new keyed records follow the new count, as in Kafka.
    pub(super) async fn create_partitions(
        &self,
        principal: &Principal,
        request: CreatePartitionsRequest,
    ) -> Response {
        let mut results = Vec::with_capacity(request.topics.len());
        for topic in request.topics {
            let outcome = self.grow(principal, &topic, request.validate_only).await;
            let (code, message) = match outcome {
                Ok(()) => (NONE, None),
                Err((code, message)) => (code, Some(text(message))),
            };
            results.push(
                CreatePartitionsTopicResult::default()
                    .with_name(topic.name)
                    .with_error_code(code)
                    .with_error_message(message),
            );
        }
        Response::CreatePartitions(CreatePartitionsResponse::default().with_results(results))
    }

    async fn grow(
        &self,
        principal: &Principal,
        topic: &create_partitions_request::CreatePartitionsTopic,
        validate_only: bool,
    ) -> Result<(), (i16, String)> {
        let fail = |e: ServiceError| (errors::code(&e), e.message);
        let name = TopicName::new(topic.name.0.to_string()).map_err(|e| fail(e.into()))?;
        authorize(principal, Operation::Admin, name.as_str()).map_err(fail)?;
        if topic.assignments.is_some() {
            return Err((
                errors::INVALID_REQUEST,
                "replica assignments do not apply: the object store replicates".into(),
            ));
        }
        let count = u32::try_from(topic.count)
            .map_err(|_| (errors::INVALID_PARTITIONS, "a negative count".into()))?;
        let info = self.state.controller.describe_topic(&name).await.map_err(|e| fail(e.into()))?;
        if count <= info.partitions.len() as u32 {
            let has = info.partitions.len();
            return Err((
                errors::INVALID_PARTITIONS,
                format!("topic {name} has {has} partitions; it can only grow"),
            ));
        }
        if validate_only {
            return Ok(());
        }
        self.state.controller.update_topic(name, None, Some(count)).await.map_err(|e| fail(e.into()))?;
        Ok(())
    }

    /// Moves each partition's log start up to the asked offset, as
    /// retention does: records below it are no longer served.
    pub(super) async fn delete_records(
        &self,
        principal: &Principal,
        request: DeleteRecordsRequest,
    ) -> Response {
        let mut topics = Vec::with_capacity(request.topics.len());
        for topic in request.topics {
            let mut partitions = Vec::with_capacity(topic.partitions.len());
            for p in &topic.partitions {
                let outcome =
                    self.delete_before(principal, topic.name.0.as_str(), p.partition_index, p.offset).await;
                let (code, low_watermark) = match outcome {
                    Ok(start) => (NONE, i64::try_from(start).unwrap_or(i64::MAX)),
                    Err(code) => (code, -1),
                };
                partitions.push(
                    DeleteRecordsPartitionResult::default()
                        .with_partition_index(p.partition_index)
                        .with_low_watermark(low_watermark)
                        .with_error_code(code),
                );
            }
            topics
                .push(DeleteRecordsTopicResult::default().with_name(topic.name).with_partitions(partitions));
        }
        Response::DeleteRecords(DeleteRecordsResponse::default().with_topics(topics))
    }

    /// One partition of a DeleteRecords: its new log start, or an error code.
    async fn delete_before(
        &self,
        principal: &Principal,
        name: &str,
        index: i32,
        offset: i64,
    ) -> Result<Offset, i16> {
        let code = |e: ServiceError| errors::code(&e);
        let topic = TopicName::new(name.to_owned()).map_err(|e| code(e.into()))?;
        authorize(principal, Operation::Admin, topic.as_str()).map_err(code)?;
        let info = self.state.controller.describe_topic(&topic).await.map_err(|e| code(e.into()))?;
        let (partition, high_watermark) = bounds(&info, index).ok_or(errors::UNKNOWN_TOPIC_OR_PARTITION)?;
        let before = match offset {
            HIGH_WATERMARK => high_watermark,
            n => Offset::try_from(n)
                .ok()
                .filter(|n| *n <= high_watermark)
                .ok_or(errors::OFFSET_OUT_OF_RANGE)?,
        };
        let info = self
            .state
            .controller
            .delete_records(&topic, partition, before)
            .await
            .map_err(|e| code(e.into()))?;
        tracing::info!(%topic, partition, before, "records deleted over kafka");
        bounds(&info, index)
            .map(|_| info.partitions[partition as usize].log_start_offset)
            .ok_or(errors::UNKNOWN_SERVER_ERROR)
    }

    /// Every partition has one leader epoch, 0, which ends at the high
    /// watermark: a client's position is never truncated.
    pub(super) async fn offset_for_leader_epoch(
        &self,
        principal: &Principal,
        request: OffsetForLeaderEpochRequest,
    ) -> Response {
        let mut topics = Vec::with_capacity(request.topics.len());
        for topic in request.topics {
            let info = self.describe(principal, topic.topic.0.as_str()).await;
            let partitions = topic
                .partitions
                .iter()
                .map(|p| {
                    let answer = EpochEndOffset::default().with_partition(p.partition);
                    let found = info
                        .as_ref()
                        .map_err(errors::code)
                        .and_then(|info| bounds(info, p.partition).ok_or(errors::UNKNOWN_TOPIC_OR_PARTITION));
                    match found {
                        Ok((_, end)) => answer
                            .with_error_code(NONE)
                            .with_leader_epoch(0)
                            .with_end_offset(i64::try_from(end).unwrap_or(i64::MAX)),
                        Err(code) => answer.with_error_code(code).with_leader_epoch(-1).with_end_offset(-1),
                    }
                })
                .collect();
            topics.push(
                OffsetForLeaderTopicResult::default().with_topic(topic.topic).with_partitions(partitions),
            );
        }
        Response::OffsetForLeaderEpoch(OffsetForLeaderEpochResponse::default().with_topics(topics))
    }
}

/// The partition an index names in the topic, with its high watermark.
fn bounds(info: &TopicInfo, index: i32) -> Option<(PartitionId, Offset)> {
    let partition = PartitionId::try_from(index).ok()?;
    let p = info.partitions.get(partition as usize)?;
    Some((partition, p.high_watermark))
}
