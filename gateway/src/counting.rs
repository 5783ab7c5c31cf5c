//! Counts every call this process makes to the controller, by call, for
//! `/metrics` (`shale_controller_calls_total{call}`): what the mirror saves
//! shows there.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use shale_controller_client::auth::{TokenInfo, TokenRecord};
use shale_controller_client::classic::{ClassicAnswer, ClassicRequest};
use shale_controller_client::group::{
    CommitOffsets, GroupInfo, MemberAssignment, MemberHeartbeat, OffsetCommit, TopicPartition,
};
use shale_controller_client::watch::WatchAnswer;
use shale_controller_client::{
    CommitSegment, CompactorLease, Controller, ControllerError, GatewayLease, PartitionRead, ReplaceRange,
    SegmentOutcomes, TopicConfig, TopicInfo,
};
use shale_core::{Offset, PartitionId, TopicName};

use crate::metrics::{CallLabels, GatewayMetrics};

pub struct Counting {
    inner: Arc<dyn Controller>,
    metrics: Arc<GatewayMetrics>,
}

impl Counting {
    pub fn new(inner: Arc<dyn Controller>, metrics: Arc<GatewayMetrics>) -> Self {
        Self { inner, metrics }
    }

    fn count(&self, call: &'static str) {
        self.metrics.controller_calls.get_or_create(&CallLabels { call }).inc();
    }
}

#[async_trait]
impl Controller for Counting {
    async fn list_topics(&self) -> Result<Vec<TopicInfo>, ControllerError> {
        self.count("list_topics");
        self.inner.list_topics().await
    }

    async fn describe_topic(&self, name: &TopicName) -> Result<TopicInfo, ControllerError> {
        self.count("describe_topic");
        self.inner.describe_topic(name).await
    }

    async fn read_partition(
        &self,
        topic: &TopicName,
        partition: PartitionId,
        from: Offset,
        max_chunks: usize,
        wait: Duration,
    ) -> Result<PartitionRead, ControllerError> {
        self.count("read_partition");
        self.inner.read_partition(topic, partition, from, max_chunks, wait).await
    }

    async fn find_time(
        &self,
        topic: &TopicName,
        partition: PartitionId,
        timestamp_ms: i64,
    ) -> Result<PartitionRead, ControllerError> {
        self.count("find_time");
        self.inner.find_time(topic, partition, timestamp_ms).await
    }

    async fn is_ready(&self) -> bool {
        self.count("is_ready");
        self.inner.is_ready().await
    }

    async fn create_topic(
        &self,
        name: TopicName,
        partitions: u32,
        config: TopicConfig,
        created_ms: i64,
    ) -> Result<TopicInfo, ControllerError> {
        self.count("create_topic");
        self.inner.create_topic(name, partitions, config, created_ms).await
    }

    async fn delete_topic(&self, name: TopicName) -> Result<(), ControllerError> {
        self.count("delete_topic");
        self.inner.delete_topic(name).await
    }

    async fn update_topic(
        &self,
        name: TopicName,
        config: Option<serde_json::Value>,
        partitions: Option<u32>,
    ) -> Result<TopicInfo, ControllerError> {
        self.count("update_topic");
        self.inner.update_topic(name, config, partitions).await
    }

    async fn commit_segments(
        &self,
        commits: Vec<CommitSegment>,
    ) -> Result<Vec<SegmentOutcomes>, ControllerError> {
        self.count("commit_segments");
        self.inner.commit_segments(commits).await
    }

    async fn heartbeat(&self, url: &str, lease_ms: u64) -> Result<GatewayLease, ControllerError> {
        self.count("heartbeat");
        self.inner.heartbeat(url, lease_ms).await
    }

    async fn leave(&self, url: &str) -> Result<(), ControllerError> {
        self.count("leave");
        self.inner.leave(url).await
    }

    async fn list_tokens(&self) -> Result<Vec<TokenRecord>, ControllerError> {
        self.count("list_tokens");
        self.inner.list_tokens().await
    }

    async fn create_token(&self, token: TokenRecord) -> Result<TokenInfo, ControllerError> {
        self.count("create_token");
        self.inner.create_token(token).await
    }

    async fn revoke_token(&self, name: &str) -> Result<(), ControllerError> {
        self.count("revoke_token");
        self.inner.revoke_token(name).await
    }

    async fn compactor_heartbeat(&self, id: &str, lease_ms: u64) -> Result<CompactorLease, ControllerError> {
        self.count("compactor_heartbeat");
        self.inner.compactor_heartbeat(id, lease_ms).await
    }

    async fn compactor_leave(&self, id: &str) -> Result<(), ControllerError> {
        self.count("compactor_leave");
        self.inner.compactor_leave(id).await
    }

    async fn replace_range(&self, replace: ReplaceRange) -> Result<(), ControllerError> {
        self.count("replace_range");
        self.inner.replace_range(replace).await
    }

    async fn referenced_objects(&self) -> Result<Vec<String>, ControllerError> {
        self.count("referenced_objects");
        self.inner.referenced_objects().await
    }

    async fn group_heartbeat(
        &self,
        group: &str,
        member_id: &str,
        heartbeat: MemberHeartbeat,
    ) -> Result<MemberAssignment, ControllerError> {
        self.count("group_heartbeat");
        self.inner.group_heartbeat(group, member_id, heartbeat).await
    }

    async fn leave_group(&self, group: &str, member_id: &str) -> Result<(), ControllerError> {
        self.count("leave_group");
        self.inner.leave_group(group, member_id).await
    }

    async fn classic_group(
        &self,
        group: &str,
        request: ClassicRequest,
    ) -> Result<ClassicAnswer, ControllerError> {
        self.count("classic_group");
        self.inner.classic_group(group, request).await
    }

    async fn commit_offsets(&self, group: &str, commit: CommitOffsets) -> Result<(), ControllerError> {
        self.count("commit_offsets");
        self.inner.commit_offsets(group, commit).await
    }

    async fn reset_offsets(&self, group: &str, offsets: Vec<OffsetCommit>) -> Result<(), ControllerError> {
        self.count("reset_offsets");
        self.inner.reset_offsets(group, offsets).await
    }

    async fn delete_group(&self, group: &str) -> Result<(), ControllerError> {
        self.count("delete_group");
        self.inner.delete_group(group).await
    }

    async fn delete_offsets(
        &self,
        group: &str,
        partitions: Vec<TopicPartition>,
    ) -> Result<(), ControllerError> {
        self.count("delete_offsets");
        self.inner.delete_offsets(group, partitions).await
    }

    async fn delete_records(
        &self,
        topic: &TopicName,
        partition: PartitionId,
        before: Offset,
    ) -> Result<TopicInfo, ControllerError> {
        self.count("delete_records");
        self.inner.delete_records(topic, partition, before).await
    }

    async fn list_groups(&self) -> Result<Vec<GroupInfo>, ControllerError> {
        self.count("list_groups");
        self.inner.list_groups().await
    }

    async fn describe_group(&self, group: &str) -> Result<GroupInfo, ControllerError> {
        self.count("describe_group");
        self.inner.describe_group(group).await
    }

    async fn watch(&self, since: Option<u64>, wait: Duration) -> Result<WatchAnswer, ControllerError> {
        self.count("watch");
        self.inner.watch(since, wait).await
    }
}
