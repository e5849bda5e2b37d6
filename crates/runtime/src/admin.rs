//! The admin gRPC API (`shop.admin.v1.AdminService`), one implementation for every service,
//! over the service's eventing tables ([`shop_eventing::admin`]). It is served on a port of its
//! own ([`crate::service::ServiceRunner::admin`]), never the public one, and every method
//! requires the operator role; the token's subject is what the audit records as the actor.
//! Errors become statuses here and nowhere else.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use shop_eventing::admin::{self, DeadLetterFilter, ParkedAction, Replayable};
use shop_eventing::{ConsumerConfig, ParkedEvents, RelayWaker};
use shop_proto::admin::v1 as pb;
use shop_proto::admin::v1::admin_service_server::AdminService;
use sqlx::PgPool;
use tonic::{Request, Response, Status};

use crate::auth::Caller;
use crate::status::{self, FieldViolations};

/// Longest text accepted in a filter field.
const MAX_TEXT: usize = 256;
/// Most ids, records or rows one call takes or returns.
const MAX_ITEMS: usize = 1000;

/// The admin API of one service process.
#[derive(Clone, Debug)]
pub struct AdminApi {
    pool: PgPool,
    described: Arc<pb::DescribeResponse>,
    relay: Option<RelayWaker>,
}

impl AdminApi {
    /// The admin API of `service` (e.g. `payment`) over its database.
    pub fn new(service: &str, pool: PgPool) -> Self {
        Self {
            pool,
            described: Arc::new(pb::DescribeResponse {
                service: service.to_owned(),
                produces: Vec::new(),
                consumers: Vec::new(),
            }),
            relay: None,
        }
    }

    /// The topics this service's outbox publishes: the only ones `RepublishRecords` accepts.
    #[must_use]
    pub fn produces(mut self, topics: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Arc::make_mut(&mut self.described)
            .produces
            .extend(topics.into_iter().map(Into::into));
        self
    }

    /// A consumer of this service (its dead letters are in this database).
    #[must_use]
    pub fn consumer(mut self, config: &ConsumerConfig) -> Self {
        Arc::make_mut(&mut self.described)
            .consumers
            .push(pb::Consumer {
                name: config.name.clone(),
                group_id: config.group_id.clone(),
                topics: config.topics.clone(),
                dead_letter_topic: config.dead_letter_topic.clone(),
            });
        self
    }

    /// Wakes this process's relay after a republish commits (it would find the rows at its next
    /// poll anyway).
    #[must_use]
    pub fn waking(mut self, relay: RelayWaker) -> Self {
        self.relay = Some(relay);
        self
    }

    /// The tonic service.
    pub fn into_server(self) -> pb::admin_service_server::AdminServiceServer<Self> {
        pb::admin_service_server::AdminServiceServer::new(self)
    }
}

fn operator<T>(request: &Request<T>) -> Result<String, Status> {
    let caller = Caller::of(request)?;
    caller.require_operator()?;
    Ok(caller.subject().to_owned())
}

fn database(error: sqlx::Error) -> Status {
    status::internal(&anyhow::Error::new(error).context("the service's database"))
}

fn timestamp(at: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

fn from_timestamp(at: &prost_types::Timestamp) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(at.seconds, u32::try_from(at.nanos).ok()?)
}

/// A text filter field: empty means unset.
fn text(violations: &mut FieldViolations, field: &str, value: String) -> Option<String> {
    if value.len() > MAX_TEXT || value.chars().any(char::is_control) {
        violations.add(
            field,
            format!("at most {MAX_TEXT} bytes, no control characters"),
        );
        return None;
    }
    (!value.is_empty()).then_some(value)
}

fn filter(
    violations: &mut FieldViolations,
    filter: Option<pb::DeadLetterFilter>,
) -> DeadLetterFilter {
    let f = filter.unwrap_or_default();
    let mut at = |field: &str, t: Option<prost_types::Timestamp>| {
        let t = t?;
        let parsed = from_timestamp(&t);
        if parsed.is_none() {
            violations.add(field, "not a valid timestamp");
        }
        parsed
    };
    let since = at("filter.since", f.since);
    let until = at("filter.until", f.until);
    if f.event_ids.len() > MAX_ITEMS {
        violations.add("filter.event_ids", format!("at most {MAX_ITEMS}"));
    }
    for (i, id) in f.event_ids.iter().enumerate() {
        if id.is_empty() || id.len() > MAX_TEXT || id.chars().any(char::is_control) {
            violations.add(
                format!("filter.event_ids[{i}]"),
                format!("1-{MAX_TEXT} bytes, no control characters"),
            );
        }
    }
    DeadLetterFilter {
        consumer: text(violations, "filter.consumer", f.consumer),
        event_type: text(violations, "filter.event_type", f.event_type),
        order_id: text(violations, "filter.order_id", f.order_id),
        since,
        until,
        event_ids: f.event_ids,
    }
}

fn limit(violations: &mut FieldViolations, field: &str, limit: u32) -> i64 {
    match limit {
        0 => 100,
        1..=1000 => i64::from(limit),
        _ => {
            violations.add(field, "1-1000, or 0 for 100");
            100
        }
    }
}

fn dead_letter_to_pb(dead: admin::DeadLetter, with_record: bool) -> pb::DeadLetter {
    let key = dead
        .record_key
        .as_deref()
        .and_then(|k| std::str::from_utf8(k).ok())
        .unwrap_or_default()
        .to_owned();
    // Headers are small and listed too (the trace context); the payload only for one.
    let headers = dead
        .headers()
        .into_iter()
        .map(|(name, value)| pb::Header {
            name: name.to_owned(),
            value: value.to_vec(),
        })
        .collect();
    pb::DeadLetter {
        key,
        headers,
        consumer: dead.consumer,
        event_id: dead.event_id,
        event_type: dead.event_type.unwrap_or_default(),
        topic: dead.topic,
        partition: dead.kafka_partition,
        offset: dead.kafka_offset,
        dead_letter_topic: dead.dead_letter_topic,
        published: dead.published,
        error: dead.error,
        attempts: u32::try_from(dead.attempts).unwrap_or(0),
        failed_at: Some(timestamp(dead.failed_at)),
        replays: u32::try_from(dead.replays).unwrap_or(0),
        payload: if with_record {
            dead.payload.unwrap_or_default()
        } else {
            Vec::new()
        },
        record_kept: dead.record_kept,
    }
}

fn record_to_pb(record: Replayable) -> pb::Record {
    pb::Record {
        topic: record.topic,
        key: record.key,
        payload: record.payload,
        event_id: record.event_id.to_string(),
        event_type: record.event_type,
        source: record.source,
        time: None,
        headers: record
            .headers
            .into_iter()
            .map(|(name, value)| pb::Header {
                name,
                value: value.into_bytes(),
            })
            .collect(),
    }
}

fn parked_selection<'a>(
    violations: &mut FieldViolations,
    selection: Option<&'a pb::ParkedSelection>,
) -> ParkedEvents<'a> {
    let Some(s) = selection else {
        violations.add("selection", "required: all, a topic or ids");
        return ParkedEvents::Ids(&[]);
    };
    let chosen =
        usize::from(s.all) + usize::from(!s.topic.is_empty()) + usize::from(!s.ids.is_empty());
    if chosen != 1 {
        violations.add("selection", "exactly one of all, topic and ids");
    }
    if s.ids.len() > MAX_ITEMS {
        violations.add("selection.ids", format!("at most {MAX_ITEMS}"));
    }
    if s.all {
        ParkedEvents::All
    } else if !s.topic.is_empty() {
        ParkedEvents::Topic(&s.topic)
    } else {
        ParkedEvents::Ids(&s.ids)
    }
}

#[tonic::async_trait]
impl AdminService for AdminApi {
    async fn describe(
        &self,
        request: Request<pb::DescribeRequest>,
    ) -> Result<Response<pb::DescribeResponse>, Status> {
        operator(&request)?;
        Ok(Response::new((*self.described).clone()))
    }

    async fn list_dead_letters(
        &self,
        request: Request<pb::ListDeadLettersRequest>,
    ) -> Result<Response<pb::ListDeadLettersResponse>, Status> {
        operator(&request)?;
        let r = request.into_inner();
        let mut violations = FieldViolations::new();
        let filter = filter(&mut violations, r.filter);
        let limit = limit(&mut violations, "limit", r.limit);
        violations.into_result()?;
        let rows = admin::dead_letters(&self.pool, &filter, limit)
            .await
            .map_err(database)?;
        Ok(Response::new(pb::ListDeadLettersResponse {
            dead_letters: rows
                .into_iter()
                .map(|d| dead_letter_to_pb(d, false))
                .collect(),
        }))
    }

    async fn get_dead_letter(
        &self,
        request: Request<pb::GetDeadLetterRequest>,
    ) -> Result<Response<pb::GetDeadLetterResponse>, Status> {
        operator(&request)?;
        let r = request.into_inner();
        let mut violations = FieldViolations::new();
        let consumer = text(&mut violations, "consumer", r.consumer);
        let event_id = text(&mut violations, "event_id", r.event_id);
        let (Some(consumer), Some(event_id)) = (consumer, event_id) else {
            violations.add("consumer", "consumer and event_id are both required");
            return Err(violations.into());
        };
        violations.into_result()?;
        let dead = admin::dead_letter(&self.pool, &consumer, &event_id)
            .await
            .map_err(database)?
            .ok_or_else(|| status::not_found("dead letter", &format!("{consumer}/{event_id}")))?;
        Ok(Response::new(pb::GetDeadLetterResponse {
            dead_letter: Some(dead_letter_to_pb(dead, true)),
        }))
    }

    async fn replay_dead_letters(
        &self,
        request: Request<pb::ReplayDeadLettersRequest>,
    ) -> Result<Response<pb::ReplayDeadLettersResponse>, Status> {
        let actor = operator(&request)?;
        let r = request.into_inner();
        let mut violations = FieldViolations::new();
        let filter = filter(&mut violations, r.filter);
        let max_replays = match r.max_replays {
            0 => admin::MAX_REPLAYS,
            n => i32::try_from(n).unwrap_or(i32::MAX),
        };
        violations.into_result()?;
        let mut tx = self.pool.begin().await.map_err(database)?;
        let decisions =
            admin::prepare_replay(&mut tx, &filter, max_replays, r.force, &actor, r.dry_run)
                .await
                .map_err(database)?;
        if decisions.len() > MAX_ITEMS {
            return Err(status::failed_precondition(
                "TOO_MANY",
                "filter",
                &format!(
                    "{} dead letters match: replay at most {MAX_ITEMS} at a time (narrow the filter)",
                    decisions.len()
                ),
            ));
        }
        tx.commit().await.map_err(database)?;
        Ok(Response::new(pb::ReplayDeadLettersResponse {
            decisions: decisions
                .into_iter()
                .map(|d| {
                    let (record, held_back) = match d.outcome {
                        Ok(record) => (Some(record_to_pb(record)), String::new()),
                        Err(why) => (None, why),
                    };
                    pb::ReplayDecision {
                        consumer: d.consumer,
                        event_id: d.event_id,
                        record,
                        held_back,
                        replay: u32::try_from(d.replay).unwrap_or(0),
                    }
                })
                .collect(),
        }))
    }

    async fn republish_records(
        &self,
        request: Request<pb::RepublishRecordsRequest>,
    ) -> Result<Response<pb::RepublishRecordsResponse>, Status> {
        let actor = operator(&request)?;
        let r = request.into_inner();
        let mut violations = FieldViolations::new();
        if r.records.len() > MAX_ITEMS {
            violations.add("records", format!("at most {MAX_ITEMS}"));
        }
        let mut records = Vec::with_capacity(r.records.len());
        for (i, record) in r.records.into_iter().enumerate() {
            let field = |name: &str| format!("records[{i}].{name}");
            if !self.described.produces.contains(&record.topic) {
                violations.add(
                    field("topic"),
                    format!(
                        "{:?} is not a topic of the {} service (it publishes {:?}): republish it through its owner's admin API",
                        record.topic, self.described.service, self.described.produces
                    ),
                );
            }
            let event_id = uuid::Uuid::parse_str(&record.event_id);
            if event_id.is_err() {
                violations.add(field("event_id"), "a UUID (the record's ce_id)");
            }
            for (name, value) in [
                ("key", &record.key),
                ("event_type", &record.event_type),
                ("source", &record.source),
            ] {
                if value.is_empty() || value.len() > 1024 || value.chars().any(char::is_control) {
                    violations.add(field(name), "1-1024 bytes, no control characters");
                }
            }
            let mut headers = Vec::with_capacity(record.headers.len());
            for (j, header) in record.headers.into_iter().enumerate() {
                match String::from_utf8(header.value) {
                    Ok(value) if !header.name.is_empty() && !header.name.starts_with("ce_") => {
                        headers.push((header.name, value));
                    }
                    _ => violations.add(
                        field(&format!("headers[{j}]")),
                        "a name (not a ce_ one: those come from the record's fields) and a UTF-8 value",
                    ),
                }
            }
            if let Ok(event_id) = event_id {
                records.push(Replayable {
                    topic: record.topic,
                    key: record.key,
                    payload: record.payload,
                    event_id,
                    event_type: record.event_type,
                    source: record.source,
                    headers,
                });
            }
        }
        violations.into_result()?;
        let mut tx = self.pool.begin().await.map_err(database)?;
        let done = admin::republish(&mut tx, &records, &actor, r.dry_run)
            .await
            .map_err(database)?;
        tx.commit().await.map_err(database)?;
        if let Some(relay) = &self.relay {
            relay.wake();
        }
        Ok(Response::new(pb::RepublishRecordsResponse {
            appended: done.appended,
            already_queued: done.already_queued,
        }))
    }

    async fn purge_dead_letters(
        &self,
        request: Request<pb::PurgeDeadLettersRequest>,
    ) -> Result<Response<pb::PurgeDeadLettersResponse>, Status> {
        let actor = operator(&request)?;
        let r = request.into_inner();
        let mut violations = FieldViolations::new();
        let filter = filter(&mut violations, r.filter);
        violations.into_result()?;
        let mut tx = self.pool.begin().await.map_err(database)?;
        let purged = admin::purge_dead_letters(&mut tx, &filter, &actor, r.dry_run)
            .await
            .map_err(database)?;
        tx.commit().await.map_err(database)?;
        Ok(Response::new(pb::PurgeDeadLettersResponse {
            purged: purged
                .into_iter()
                .map(|d| dead_letter_to_pb(d, false))
                .collect(),
        }))
    }

    async fn get_outbox_status(
        &self,
        request: Request<pb::GetOutboxStatusRequest>,
    ) -> Result<Response<pb::GetOutboxStatusResponse>, Status> {
        operator(&request)?;
        let mut conn = self.pool.acquire().await.map_err(database)?;
        let status = admin::outbox_status(&mut conn).await.map_err(database)?;
        Ok(Response::new(pb::GetOutboxStatusResponse {
            backlog: status.backlog,
            oldest_age_seconds: status.oldest_age_seconds,
            retrying: status.retrying,
            parked: status
                .parked
                .into_iter()
                .map(|p| pb::ParkedRow {
                    id: p.id,
                    event_id: p.event_id.to_string(),
                    topic: p.topic,
                    key: p.partition_key,
                    event_type: p.event_type,
                    attempts: u32::try_from(p.attempts).unwrap_or(0),
                    last_error: p.last_error.unwrap_or_default(),
                    created_at: Some(timestamp(p.created_at)),
                    parked_at: Some(timestamp(p.parked_at)),
                    waiting_behind: p.waiting_behind,
                })
                .collect(),
        }))
    }

    async fn retry_parked(
        &self,
        request: Request<pb::RetryParkedRequest>,
    ) -> Result<Response<pb::RetryParkedResponse>, Status> {
        let actor = operator(&request)?;
        let r = request.into_inner();
        let count = self
            .settle(r.selection.as_ref(), ParkedAction::Retry, &actor, r.dry_run)
            .await?;
        Ok(Response::new(pb::RetryParkedResponse { count }))
    }

    async fn drop_parked(
        &self,
        request: Request<pb::DropParkedRequest>,
    ) -> Result<Response<pb::DropParkedResponse>, Status> {
        let actor = operator(&request)?;
        let r = request.into_inner();
        let count = self
            .settle(r.selection.as_ref(), ParkedAction::Drop, &actor, r.dry_run)
            .await?;
        Ok(Response::new(pb::DropParkedResponse { count }))
    }

    async fn list_audit_records(
        &self,
        request: Request<pb::ListAuditRecordsRequest>,
    ) -> Result<Response<pb::ListAuditRecordsResponse>, Status> {
        operator(&request)?;
        let mut violations = FieldViolations::new();
        let limit = limit(&mut violations, "limit", request.into_inner().limit);
        violations.into_result()?;
        let records = admin::audit_records(&self.pool, limit)
            .await
            .map_err(database)?;
        Ok(Response::new(pb::ListAuditRecordsResponse {
            records: records
                .into_iter()
                .map(|a| pb::AuditRecord {
                    id: a.id,
                    at: Some(timestamp(a.at)),
                    actor: a.actor,
                    action: a.action,
                    consumer: a.consumer.unwrap_or_default(),
                    event_id: a.event_id.unwrap_or_default(),
                    detail: a.detail.to_string(),
                })
                .collect(),
        }))
    }
}

impl AdminApi {
    async fn settle(
        &self,
        selection: Option<&pb::ParkedSelection>,
        action: ParkedAction,
        actor: &str,
        dry_run: bool,
    ) -> Result<u64, Status> {
        let mut violations = FieldViolations::new();
        let which = parked_selection(&mut violations, selection);
        violations.into_result()?;
        let mut tx = self.pool.begin().await.map_err(database)?;
        let count = admin::settle_parked(&mut tx, which, action, actor, dry_run)
            .await
            .map_err(database)?;
        tx.commit().await.map_err(database)?;
        if action == ParkedAction::Retry
            && let Some(relay) = &self.relay
        {
            relay.wake();
        }
        Ok(count)
    }
}
