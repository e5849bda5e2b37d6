use std::collections::HashSet;
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use sqlx::postgres::PgListener;
use sqlx::{Connection, PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::failpoint::Crashed;
use crate::metrics::TopicLabels;
use crate::{EventingMetrics, Failpoints, KafkaConfig, headers};

/// The NOTIFY channel the outbox trigger signals on commit.
const CHANNEL: &str = "eventing_outbox";
/// How long a stopping relay waits for the acknowledgements of the batch in flight.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
/// Session advisory lock held by the replica that relays (ASCII "outbox-relay" folded into 63 bits).
const RELAY_LOCK: i64 = 0x6f75_7462_6f78_7265;

/// Tuning of a [`Relay`].
#[derive(Clone, Debug)]
pub struct RelayConfig {
    /// Rows read, published and deleted per round trip.
    pub batch_size: usize,
    /// How long to wait for a NOTIFY before reading the table anyway. Only matters when a
    /// notification is lost (e.g. the listening connection dropped); it bounds that delay.
    pub poll_interval: Duration,
    /// How often a standby replica tries to take the relay lock.
    pub standby_retry: Duration,
    /// Pause after a database or Kafka failure before starting over.
    pub error_backoff: Duration,
    /// Where counts and timings go (see [`EventingMetrics`]).
    pub metrics: EventingMetrics,
    /// Crash points for tests.
    pub failpoints: Failpoints,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            batch_size: 1000,
            poll_interval: Duration::from_secs(1),
            standby_retry: Duration::from_secs(1),
            error_backoff: Duration::from_millis(500),
            metrics: EventingMetrics::default(),
            failpoints: Failpoints::from_env(),
        }
    }
}

/// Why a relay stopped.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Crashed(#[from] Crashed),
}

/// Publishes committed outbox rows to Kafka, then deletes them.
///
/// Every replica of a service runs one; the replica holding a PostgreSQL session advisory lock
/// relays and the others stand by, ready to take over within [`RelayConfig::standby_retry`] of
/// the leader's connection going away. A single publisher per outbox is what keeps each key's
/// events in order: two relays claiming disjoint rows concurrently could publish a key's second
/// event before its first.
///
/// The relay never remembers how far it got. Each round it reads the oldest rows still in the
/// table, so a transaction that took an early id but committed late is simply read on a later
/// round: no gap can be skipped.
pub struct Relay {
    pool: PgPool,
    producer: FutureProducer,
    config: RelayConfig,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

#[derive(sqlx::FromRow)]
struct OutboxRow {
    id: i64,
    event_id: uuid::Uuid,
    topic: String,
    partition_key: String,
    event_type: String,
    source: String,
    payload: Vec<u8>,
    headers: serde_json::Value,
    created_at: DateTime<Utc>,
}

impl OutboxRow {
    /// The trace context stored with the row: that of the span that appended the event.
    fn stored_trace_headers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.headers
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| Some((k.as_str(), v.as_str()?)))
    }

    /// The `send <topic>` span of this event: a producer span, child of the span that appended
    /// the event (whatever request or consumer that was), so a trace runs through the outbox.
    fn send_span(&self) -> tracing::Span {
        let span = tracing::info_span!(
            parent: None,
            "send",
            otel.name = %format!("send {}", self.topic),
            otel.kind = "producer",
            otel.status_code = tracing::field::Empty,
            messaging.system = "kafka",
            messaging.operation.type = "send",
            messaging.operation.name = "send",
            messaging.destination.name = %self.topic,
            messaging.message.id = %self.event_id,
            messaging.kafka.message.key = %self.partition_key,
            messaging.destination.partition.id = tracing::field::Empty,
            messaging.kafka.offset = tracing::field::Empty,
            event.type = %self.event_type,
        );
        shop_telemetry::set_parent_from_headers(&span, self.stored_trace_headers());
        span
    }

    /// CloudEvents headers, plus the trace context: `send_context` (the send span's, so the
    /// consumer's span is the child of the send) or, without one, the stored context.
    fn kafka_headers(&self, send_context: &[(String, String)]) -> OwnedHeaders {
        let id = self.event_id.to_string();
        let time = self.created_at.to_rfc3339_opts(SecondsFormat::Micros, true);
        let mut out = OwnedHeaders::new_with_capacity(8)
            .insert(header(headers::CE_ID, &id))
            .insert(header(headers::CE_TYPE, &self.event_type))
            .insert(header(headers::CE_SOURCE, &self.source))
            .insert(header(headers::CE_SPECVERSION, headers::SPEC_VERSION))
            .insert(header(headers::CE_TIME, &time))
            .insert(header(headers::CE_PARTITIONKEY, &self.partition_key))
            .insert(header(headers::CONTENT_TYPE, headers::PROTOBUF));
        if send_context.is_empty() {
            for (k, v) in self.stored_trace_headers() {
                out = out.insert(header(k, v));
            }
        } else {
            for (k, v) in send_context {
                out = out.insert(header(k, v));
            }
        }
        out
    }
}

fn header<'a>(key: &'a str, value: &'a str) -> Header<'a, &'a str> {
    Header {
        key,
        value: Some(value),
    }
}

impl Relay {
    /// A relay for the outbox in `pool`'s database, publishing through `kafka`.
    ///
    /// # Errors
    /// When the Kafka producer cannot be created (invalid properties).
    pub fn new(pool: PgPool, kafka: &KafkaConfig, config: RelayConfig) -> Result<Self, RelayError> {
        Ok(Self {
            pool,
            producer: kafka.idempotent_producer()?,
            config,
        })
    }

    /// Relays until `shutdown` is cancelled. Database and Kafka failures are logged and retried
    /// after [`RelayConfig::error_backoff`]; rows stay in the outbox until they are published.
    ///
    /// # Errors
    /// Only when a crash failpoint fires (tests).
    pub async fn run(&self, shutdown: CancellationToken) -> Result<(), RelayError> {
        while !shutdown.is_cancelled() {
            let outcome = self.lead(&shutdown).await;
            self.config.metrics.relay_leader.set(0);
            match outcome {
                Ok(()) => break,
                Err(RelayError::Crashed(c)) => return Err(c.into()),
                Err(error) => {
                    self.config.metrics.relay_errors.inc();
                    tracing::warn!(%error, "Outbox relay failed; starting over.");
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(self.config.error_backoff) => {}
                    }
                }
            }
        }
        Ok(())
    }

    /// Waits for the relay lock, then relays until shutdown or a failure.
    async fn lead(&self, shutdown: &CancellationToken) -> Result<(), RelayError> {
        // A dedicated connection, not a pooled one: the session lock lives as long as this
        // connection, and a pooled connection would carry it to whoever borrowed it next. Rows
        // are read and deleted over the same connection, so a leader whose connection died
        // (lock released, another replica took over) cannot delete anything any more.
        let mut conn = PgConnection::connect_with(&self.pool.connect_options()).await?;
        // The relay only ever deletes rows Kafka has acknowledged. Losing such a delete in a
        // database crash means publishing those events again, which consumers absorb (inbox);
        // so its commits need not wait for the WAL flush, which would add an fsync to every
        // round and to every event's commit-to-publish latency.
        sqlx::query("SET synchronous_commit = off")
            .execute(&mut conn)
            .await?;
        loop {
            let leader: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                .bind(RELAY_LOCK)
                .fetch_one(&mut conn)
                .await?;
            if leader {
                break;
            }
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                () = tokio::time::sleep(self.config.standby_retry) => {}
            }
        }
        tracing::info!("This replica now relays the outbox.");
        self.config.metrics.relay_leader.set(1);

        // Listen before the first read, so no commit can fall between read and listen.
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(CHANNEL).await?;
        loop {
            // Notifications already received are about rows the next read sees anyway.
            while listener.next_buffered().is_some() {}
            let publish = self.publish_batch(&mut conn);
            tokio::pin!(publish);
            let read = tokio::select! {
                read = &mut publish => read?,
                () = shutdown.cancelled() => {
                    // Let the batch in flight finish (its rows are then deleted, not published
                    // twice), unless the broker keeps it waiting: a shutdown must end. Its rows
                    // stay in the outbox and are published again; consumers skip the copies.
                    match tokio::time::timeout(SHUTDOWN_GRACE, &mut publish).await {
                        Ok(read) => read?,
                        Err(_) => {
                            tracing::warn!(grace = ?SHUTDOWN_GRACE, "Kafka did not acknowledge the batch in flight before shutdown; it stays in the outbox.");
                            break;
                        }
                    }
                }
            };
            if read == self.config.batch_size {
                if shutdown.is_cancelled() {
                    break;
                }
                continue;
            }
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                notification = listener.recv() => { notification?; }
                () = tokio::time::sleep(self.config.poll_interval) => {}
            }
        }
        let _ = conn.close().await;
        Ok(())
    }

    /// Publishes the oldest rows (up to one batch) and deletes those Kafka acknowledged.
    /// Returns how many rows were read.
    async fn publish_batch(&self, conn: &mut PgConnection) -> Result<usize, RelayError> {
        let started = Instant::now();
        let rows: Vec<OutboxRow> = sqlx::query_as(
            "SELECT id, event_id, topic, partition_key, event_type, source, payload, headers, created_at \
             FROM eventing_outbox ORDER BY id LIMIT $1",
        )
        .bind(i64::try_from(self.config.batch_size).unwrap_or(i64::MAX))
        .fetch_all(&mut *conn)
        .await?;
        if rows.is_empty() {
            return Ok(0);
        }
        self.config.failpoints.hit("relay.before_publish")?;
        // Each event gets its own `send` span in its own trace; the round itself is worth a
        // span only when debugging the relay (a root span per round would bury the traces).
        let read = rows.len();
        self.publish(conn, rows, started)
            .instrument(tracing::debug_span!("outbox relay batch", rows = read))
            .await
    }

    async fn publish(
        &self,
        conn: &mut PgConnection,
        rows: Vec<OutboxRow>,
        started: Instant,
    ) -> Result<usize, RelayError> {
        // Enqueue the whole batch, then await the acknowledgements: one broker round trip per
        // batch instead of one per event.
        let mut deliveries = Vec::with_capacity(rows.len());
        let mut failure: Option<KafkaError> = None;
        for row in &rows {
            let span = row.send_span();
            let send_context = span.in_scope(shop_telemetry::current_trace_headers);
            let record = FutureRecord::to(&row.topic)
                .key(&row.partition_key)
                .payload(&row.payload)
                .headers(row.kafka_headers(&send_context))
                .timestamp(row.created_at.timestamp_millis());
            match self.producer.send_result(record) {
                Ok(delivery) => deliveries.push((delivery, span)),
                Err((error, _)) => {
                    // E.g. the local queue is full: publish what is enqueued, retry the rest.
                    failure = Some(error);
                    break;
                }
            }
        }
        let mut acked = Vec::with_capacity(deliveries.len());
        let mut failed_keys = HashSet::new();
        let metrics = &self.config.metrics;
        for (row, (delivery, span)) in rows.iter().zip(deliveries) {
            match delivery.await {
                Ok(Ok(delivery)) => {
                    span.record("messaging.destination.partition.id", delivery.partition);
                    span.record("messaging.kafka.offset", delivery.offset);
                    metrics
                        .published
                        .get_or_create(&TopicLabels {
                            topic: row.topic.clone(),
                        })
                        .inc();
                    let waited = (Utc::now() - row.created_at).as_seconds_f64();
                    metrics.publish_latency.observe(waited.max(0.0));
                    // A key that already failed in this batch keeps its later rows too:
                    // deleting them would let them overtake the failed one when it is retried.
                    if !failed_keys.contains(&(&row.topic, &row.partition_key)) {
                        acked.push(row.id);
                    }
                }
                Ok(Err((error, _))) => {
                    span.record("otel.status_code", "ERROR");
                    failed_keys.insert((&row.topic, &row.partition_key));
                    failure.get_or_insert(error);
                }
                Err(_) => {
                    span.record("otel.status_code", "ERROR");
                    failed_keys.insert((&row.topic, &row.partition_key));
                    failure.get_or_insert(KafkaError::Canceled);
                }
            }
        }

        self.config.failpoints.hit("relay.after_publish")?;
        if !acked.is_empty() {
            sqlx::query("DELETE FROM eventing_outbox WHERE id = ANY($1)")
                .bind(&acked)
                .execute(&mut *conn)
                .await?;
        }
        metrics.relay_batch.observe(started.elapsed().as_secs_f64());
        match failure {
            Some(error) => Err(error.into()),
            None => Ok(rows.len()),
        }
    }
}
