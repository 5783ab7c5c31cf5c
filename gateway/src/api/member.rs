//! Reading as a group member: records of the member's assigned partitions,
//! each tagged with its topic and partition, from the member's position.
//!
//! The position travels with the client as a cursor
//! (`topic:partition:offset,…`, the `cursor` field of each answer and the
//! `id:` of each event). Without one, a partition starts at the group's
//! committed offset, or per `reset` (earliest by default) when there is
//! none; a cursor position below the committed offset is raised to it.
//! With `commit=true` the gateway commits the cursor the client presents
//! (what it received), never what it last sent; the commit runs beside the
//! read, and a revocation the call acknowledges completes only after it.
//! Every call is also a heartbeat; its wait is capped at the member's
//! heartbeat interval.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use shale_controller_client::auth::{Operation, Principal};
use shale_controller_client::group::{MemberAssignment, MemberHeartbeat, OffsetCommit, TopicPartition};
use shale_core::{ErrorCode, Offset, TopicName};

use super::encoding::Encoding;
use super::extract::{ApiPath, ApiQuery};
use super::fetch::{FetchedRecord, render};
use super::groups::repeatable;
use super::openapi::ErrorBody;
use super::stream::{self, Turn};
use super::{ApiError, AppState, require};
use crate::reader::{FetchRequest, Fetched};
use crate::service::groups::{self, GroupId, MemberId};
use crate::service::read::{count_out, read_many};

const DEFAULT_MAX_RECORDS: usize = 1000;
const LIMIT_MAX_RECORDS: usize = 10_000;
const DEFAULT_MAX_BYTES: usize = 1 << 20;

#[derive(Debug, Clone, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct MemberQuery {
    /// Where the member is, as the last answer's `cursor` said.
    cursor: Option<String>,
    /// The epoch of the last answer acted on (acknowledges its revocations).
    member_epoch: Option<u64>,
    /// Commit the presented cursor first (needs `member_epoch`).
    #[serde(default)]
    commit: bool,
    /// Where a partition without a committed offset starts: `earliest`
    /// (the default) or `latest`.
    reset: Option<String>,
    #[param(minimum = 1, maximum = 10000)]
    max_records: Option<usize>,
    max_bytes: Option<usize>,
    /// With no record ready, wait this long (capped by the member's
    /// heartbeat interval and the gateway's `--max-wait-ms`).
    wait_ms: Option<u64>,
    #[serde(default)]
    #[param(inline)]
    encoding: Encoding,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MemberRecord {
    #[schema(value_type = String)]
    topic: TopicName,
    partition: u32,
    #[serde(flatten)]
    record: FetchedRecord,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MemberRecords {
    // each record already rendered as JSON, on the task that read it (read_all)
    #[schema(value_type = Vec<MemberRecord>)]
    records: Vec<Box<RawValue>>,
    /// Present it as `cursor` (or `Last-Event-ID`) to go on from here.
    cursor: String,
    member_epoch: u64,
    assignment: Vec<TopicPartition>,
    /// Partitions being taken away: stop reading them, commit them.
    revoke: Vec<TopicPartition>,
    /// Whether the presented cursor was committed (false when none was
    /// asked, or the member's epoch had moved on: nothing was committed).
    committed: bool,
}

/// Positions by partition.
type Cursor = BTreeMap<TopicPartition, Offset>;

fn parse_cursor(s: &str) -> Result<Cursor, ApiError> {
    let bad = || ApiError::invalid(format!("a cursor is topic:partition:offset,…; got {s:?}"));
    let mut cursor = Cursor::new();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        let mut fields = part.rsplitn(3, ':');
        let (Some(offset), Some(partition), Some(topic)) = (fields.next(), fields.next(), fields.next())
        else {
            return Err(bad());
        };
        let topic = TopicName::new(topic.to_owned())?;
        let partition = partition.parse().map_err(|_| bad())?;
        cursor.insert(TopicPartition { topic, partition }, offset.parse().map_err(|_| bad())?);
    }
    Ok(cursor)
}

fn format_cursor(cursor: &Cursor) -> String {
    let parts: Vec<String> =
        cursor.iter().map(|(tp, o)| format!("{}:{}:{o}", tp.topic, tp.partition)).collect();
    parts.join(",")
}

/// What one call needs beyond the query: who, and how.
#[derive(Clone)]
struct Reading {
    group: GroupId,
    member: MemberId,
    max_records: usize,
    max_bytes: usize,
    wait: Duration,
    latest: bool,
    encoding: Encoding,
}

#[utoipa::path(
    get,
    path = "/v1/groups/{group}/members/{member_id}/records",
    tag = "groups",
    summary = "Records of the member's partitions from its position (long-poll; a stream with Accept: text/event-stream)",
    params(("group" = String, Path), ("member_id" = String, Path), MemberQuery),
    responses(
        (status = 200, content((MemberRecords = "application/json"), (String = "text/event-stream"))),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 429, body = ErrorBody),
    ),
)]
pub async fn records(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Arc<Principal>>,
    ApiPath((group, member)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<MemberQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let group = GroupId::parse(group)?;
    let member = MemberId::parse(member)?;
    let max_records = q.max_records.unwrap_or(DEFAULT_MAX_RECORDS);
    if max_records == 0 || max_records > LIMIT_MAX_RECORDS {
        return Err(ApiError::invalid(format!("max_records must be between 1 and {LIMIT_MAX_RECORDS}")));
    }
    let latest = match q.reset.as_deref() {
        None | Some("earliest") => false,
        Some("latest") => true,
        Some(other) => return Err(ApiError::invalid(format!("reset is earliest or latest, got {other:?}"))),
    };
    if q.commit && q.member_epoch.is_none() {
        return Err(ApiError::invalid("commit=true needs the member_epoch the cursor was read at"));
    }
    let events = stream::wants_events(&headers);
    let presented = match stream::last_event_id(&headers).filter(|_| events).or(q.cursor.clone()) {
        Some(c) => parse_cursor(&c)?,
        None => Cursor::new(),
    };
    let reading = Reading {
        group,
        member,
        max_records,
        max_bytes: q.max_bytes.unwrap_or(DEFAULT_MAX_BYTES).clamp(1, state.config.max_request_bytes),
        wait: Duration::from_millis(q.wait_ms.unwrap_or(0)).min(state.config.max_wait),
        latest,
        encoding: q.encoding,
    };
    let commit = async {
        match (q.commit, q.member_epoch) {
            (true, Some(epoch)) => commit_presented(&state, &principal, &reading, epoch, &presented).await,
            _ => Ok(false),
        }
    };
    if !events {
        let page = read_page(&state, &principal, &reading, q.member_epoch, presented.clone(), commit)
            .await
            .map_err(repeatable)?;
        return Ok(Json(page).into_response());
    }
    // a stream commits the cursor it resumes from, then reads on
    commit.await?;
    let permit = stream::admit(&state)?;
    let st = state.clone();
    let seed = (presented, q.member_epoch);
    Ok(stream::respond(state, permit, seed, move |(cursor, epoch)| {
        let (state, principal, reading) = (st.clone(), principal.clone(), reading.clone());
        async move {
            let mut reading = reading;
            reading.wait = state.config.max_wait;
            match read_page(&state, &principal, &reading, epoch, cursor.clone(), async { Ok(false) }).await {
                Err(e) => (Turn::End(e), (cursor, epoch)),
                Ok(page) => {
                    let next = (parse_cursor(&page.cursor).unwrap_or(cursor), Some(page.member_epoch));
                    if page.records.is_empty() && page.revoke.is_empty() {
                        return (Turn::Quiet, next);
                    }
                    match Event::default().id(page.cursor.clone()).event("records").json_data(&page) {
                        Ok(event) => (Turn::Event(event), next),
                        Err(e) => (Turn::End(ApiError::new(ErrorCode::Internal, e.to_string())), next),
                    }
                }
            }
        }
    }))
}

/// Commits the presented cursor at `epoch`. A stale epoch commits nothing
/// and is not an error here: the answer says so, and the records come again.
async fn commit_presented(
    state: &AppState,
    principal: &Principal,
    reading: &Reading,
    epoch: u64,
    presented: &Cursor,
) -> Result<bool, ApiError> {
    if presented.is_empty() {
        return Ok(false);
    }
    let mut offsets = Vec::with_capacity(presented.len());
    for (tp, offset) in presented {
        require(principal, Operation::Consume, tp.topic.as_str())?;
        offsets.push(OffsetCommit {
            topic: tp.topic.clone(),
            partition: tp.partition,
            offset: *offset,
            metadata: None,
        });
    }
    match groups::commit(state, principal, &reading.group, Some((&reading.member, epoch)), offsets).await {
        Ok(()) => Ok(true),
        Err(e) if e.code == ErrorCode::StaleMember => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Heartbeats, works out each assigned partition's position, and reads
/// from them (waiting, if nothing is ready, up to the wait).
async fn read_page(
    state: &Arc<AppState>,
    principal: &Principal,
    reading: &Reading,
    epoch: Option<u64>,
    presented: Cursor,
    commit: impl std::future::Future<Output = Result<bool, ApiError>>,
) -> Result<MemberRecords, ApiError> {
    // the read runs beside the commit of the presented cursor, behind a
    // heartbeat that completes no revocation (epoch 0 acknowledges nothing):
    // a revoked partition moves on only once its commit has landed
    let probe =
        MemberHeartbeat { topics: None, session_timeout_ms: 0, instance_id: None, member_epoch: Some(0) };
    let read = async {
        let a = groups::heartbeat(state, principal, &reading.group, &reading.member, probe).await?;
        for p in &a.assignment {
            require(principal, Operation::Consume, p.topic.as_str())?;
        }
        let mut positions = positions(state, reading, &a, &presented).await?;
        let wait = reading.wait.min(Duration::from_millis(a.heartbeat_interval_ms));
        let mut records = read_all(state, reading, &mut positions, Duration::ZERO).await?;
        if records.is_empty() && !wait.is_zero() {
            if !positions.is_empty() {
                records = read_all(state, reading, &mut positions, wait).await?;
            } else if a.revoke.is_empty() {
                // nothing assigned yet (a rebalance is handing partitions
                // over): the long-poll waits out its time rather than answer
                // at once, so a member waiting for partitions does not spin
                tokio::time::sleep(wait).await;
            }
        }
        Ok::<_, ApiError>((a, positions, records))
    };
    let (committed, read) = tokio::join!(commit, read);
    let committed = committed?;
    let (mut a, positions, records) = read?;
    if !a.revoke.is_empty() && epoch.is_none_or(|e| e >= a.member_epoch) {
        let ack =
            MemberHeartbeat { topics: None, session_timeout_ms: 0, instance_id: None, member_epoch: epoch };
        a = groups::heartbeat(state, principal, &reading.group, &reading.member, ack).await?;
    }
    // revoking partitions stay in the cursor, so the client can commit them
    let mut cursor = positions.clone();
    for tp in &a.revoke {
        if let Some(o) = presented.get(tp) {
            cursor.insert(tp.clone(), *o);
        }
    }
    Ok(MemberRecords {
        records,
        cursor: format_cursor(&cursor),
        member_epoch: a.member_epoch,
        assignment: a
            .assignment
            .iter()
            .map(|p| TopicPartition { topic: p.topic.clone(), partition: p.partition })
            .collect(),
        revoke: a.revoke,
        committed,
    })
}

/// Each assigned partition's position: the presented one, raised to the
/// committed offset; else the committed offset; else per `reset`. Never
/// below the log start.
async fn positions(
    state: &AppState,
    reading: &Reading,
    a: &MemberAssignment,
    presented: &Cursor,
) -> Result<Cursor, ApiError> {
    let mut out = Cursor::new();
    for p in &a.assignment {
        let tp = TopicPartition { topic: p.topic.clone(), partition: p.partition };
        let start = match (presented.get(&tp), p.committed_offset) {
            (Some(at), Some(c)) => (*at).max(c),
            (Some(at), None) => *at,
            (None, Some(c)) => c,
            (None, None) => {
                let bounds =
                    state.controller.read_partition(&p.topic, p.partition, 0, 0, Duration::ZERO).await?;
                if reading.latest { bounds.high_watermark } else { bounds.log_start_offset }
            }
        };
        // a position below the log start is moved up by the read
        out.insert(tp, start);
    }
    Ok(out)
}

/// Renders one partition's records as JSON values, with where it goes on from.
fn render_all(
    request: &FetchRequest,
    fetched: Fetched,
    encoding: Encoding,
) -> Result<(Vec<Box<RawValue>>, Offset), ApiError> {
    let mut rendered = Vec::with_capacity(fetched.records.len());
    for (offset, record) in &fetched.records {
        let record = MemberRecord {
            topic: request.topic.clone(),
            partition: request.partition,
            record: render(*offset, record, encoding)?,
        };
        let raw = serde_json::value::to_raw_value(&record)
            .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?;
        rendered.push(raw);
    }
    Ok((rendered, fetched.next_offset))
}

/// Reads every partition from its position, sharing the limits among them,
/// and advances the positions. With a wait, returns as soon as any
/// partition has records (the other reads are cancelled and their
/// positions stay).
async fn read_all(
    state: &Arc<AppState>,
    reading: &Reading,
    positions: &mut Cursor,
    wait: Duration,
) -> Result<Vec<Box<RawValue>>, ApiError> {
    let n = positions.len().max(1);
    let (max_records, max_bytes) = ((reading.max_records / n).max(1), (reading.max_bytes / n).max(1));
    let requests: Vec<FetchRequest> = positions
        .iter()
        .map(|(tp, from)| FetchRequest {
            topic: tp.topic.clone(),
            partition: tp.partition,
            from: *from,
            max_records,
            max_bytes,
            wait,
        })
        .collect();
    let asked: Vec<(TopicPartition, Offset)> = positions.iter().map(|(tp, o)| (tp.clone(), *o)).collect();
    let encoding = reading.encoding;
    let served = state.clone();
    let reads = read_many(state, requests, move |request, fetched| {
        count_out(&served, &fetched.records);
        Ok(render_all(request, fetched, encoding))
    })
    .await;
    let mut out = Vec::new();
    for ((tp, from), read) in asked.into_iter().zip(reads) {
        let (records, next) = match read {
            // cancelled by the long-poll's answer: the position stays
            None => continue,
            Some(Ok(rendered)) => rendered?,
            // retention moved the log start past the position: start there
            Some(Err(e)) if e.code == ErrorCode::OffsetOutOfRange => {
                match e.offset("log_start_offset").filter(|start| from < *start) {
                    Some(start) => (Vec::new(), start),
                    None => return Err(e.into()),
                }
            }
            Some(Err(e)) => return Err(e.into()),
        };
        positions.insert(tp, next);
        out.extend(records);
    }
    Ok(out)
}
