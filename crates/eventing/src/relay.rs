use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::{Connection, PgConnection};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use crate::failpoint::Crashed;
use crate::lease::Lease;
use crate::metrics::TopicLabels;
use crate::{EventingMetrics, Failpoints, KafkaConfig, RetryPolicy, headers};

/// The NOTIFY channel a standby relay signals the leader on (see [`Relay`]).
const CHANNEL: &str = "eventing_outbox";
/// How long a stopping relay waits for the acknowledgements of the batch in flight (and for a
/// database that does not answer). It also bounds how long the infinite `message.timeout.ms` of
/// the relay's producer can hold a stopping process: what is not acknowledged by then stays in
/// the outbox for the next leader.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
/// `application_name` of the relay's connections, so they are easy to tell apart in
/// `pg_stat_activity` (they are not the service pool's).
const APPLICATION_NAME: &str = "shop-outbox-relay";
/// How often a leader waiting on a round checks whether it stalled.
const STALL_CHECK: Duration = Duration::from_secs(1);

/// Values of the `reason` label of `shop_outbox_publish_failures_total`.
pub(crate) const FAILURE_REASONS: &[&str] = &[
    "message_too_large",
    "unknown_topic",
    "invalid_timestamp",
    "not_authorized",
    "invalid_record",
    "other",
    "producer_fatal",
    "purged",
    "queue_full",
];

/// Tuning of a [`Relay`].
#[derive(Clone, Debug)]
pub struct RelayConfig {
    /// Rows read, published and deleted per round trip.
    pub batch_size: usize,
    /// How long the leader waits for a wake-up before reading the table anyway. Wake-ups come
    /// from this process's commits and from the standbys' notifications; the poll bounds the
    /// delay when one is lost, and is when rows whose retry time came are picked up.
    pub poll_interval: Duration,
    /// How often a standby replica tries to take the lease.
    pub standby_retry: Duration,
    /// How long a lease lasts without renewal. A leader that cannot renew within it stops
    /// publishing, and a standby takes over within `lease_ttl + standby_retry` (whatever state
    /// the leader's TCP connection is in), or within `standby_retry` when the leader's session
    /// ended (its process died, its connection closed).
    pub lease_ttl: Duration,
    /// How often the leader renews its lease. Below `lease_ttl`, so that a renewal or two may be
    /// slow without the lease running out.
    pub lease_renewal: Duration,
    /// Attempts for a row Kafka refuses (too large, a missing topic, a timestamp the broker
    /// rejects): jittered exponential backoff between them, and the row is parked once
    /// `max_attempts` failed. Only the row's own failures count, not those it shared with a
    /// batch the producer lost.
    pub retry: RetryPolicy,
    /// How long the leader may have events waiting and publish none before it reports itself
    /// stalled ([`RelayHealth`], `shop_outbox_relay_stalled`, an error in the log) and rebuilds
    /// its producer. Events whose retry time has not come, and parked ones, are not waiting.
    pub stall_timeout: Duration,
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
            lease_ttl: Duration::from_secs(5),
            lease_renewal: Duration::from_secs(1),
            // About 3 minutes of tries (at most 6) before a row is parked: long enough for a
            // topic created a little after the first events for it, short enough that an
            // operator hears of a real problem (`ShopOutboxEventsParked`) soon.
            retry: RetryPolicy {
                max_attempts: 10,
                initial_backoff: Duration::from_secs(1),
                max_backoff: Duration::from_secs(120),
            },
            stall_timeout: Duration::from_secs(60),
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
    #[error("the database did not answer within {0:?}")]
    DatabaseTimeout(Duration),
    #[error("lost the relay lease: {0}")]
    LeaseLost(&'static str),
    #[error("invalid relay configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Crashed(#[from] Crashed),
}

/// What a relay is doing, as [`RelayHealth`] reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RelayStatus {
    /// This replica holds the lease and publishes.
    pub leading: bool,
    /// It leads, events wait, and it published none for [`RelayConfig::stall_timeout`].
    pub stalled: bool,
}

/// Watches a [`Relay`]'s [`RelayStatus`]: the service's health reports NOT_SERVING while its
/// relay is stalled (see `shop_runtime::service::ServiceRunner::relay`).
#[derive(Clone, Debug)]
pub struct RelayHealth(watch::Receiver<RelayStatus>);

impl RelayHealth {
    /// The status now.
    pub fn status(&self) -> RelayStatus {
        *self.0.borrow()
    }

    /// Waits until the status changes and returns it; `None` once the relay is gone.
    pub async fn changed(&mut self) -> Option<RelayStatus> {
        self.0.changed().await.ok()?;
        Some(*self.0.borrow_and_update())
    }
}

/// Wakes a [`Relay`] of this process: [`Outbox::waking`](crate::Outbox::waking) calls it after
/// each commit of an append.
#[derive(Clone, Debug)]
pub struct RelayWaker(Arc<watch::Sender<()>>);

impl RelayWaker {
    /// Tells the relay that events were committed. Cheap, never blocks; wake-ups that come while
    /// the relay is busy fold into one.
    pub fn wake(&self) {
        self.0.send_replace(());
    }
}

/// Publishes committed outbox rows to Kafka, then deletes them.
///
/// # Leadership
///
/// Every replica of a service runs one; the replica holding the outbox's lease (a row with an
/// expiry, renewed every [`RelayConfig::lease_renewal`]) relays and the others stand by, trying
/// to take it every [`RelayConfig::standby_retry`]. A standby takes the lease once it expired, or
/// at once when the holder's database session is gone. A leader whose renewals do not get
/// through within [`RelayConfig::lease_ttl`] stops publishing, whether its connection failed,
/// hangs or is silently black-holed; so with the defaults a dead or cut-off leader is replaced
/// within 6 s (5 s of lease, 1 s of retry), and a stopped or killed one within about 1 s.
///
/// # Per-key order
///
/// Events of one key are published in outbox `id` order, and every relay reads the *oldest*
/// rows still in the table, keeps no cursor, produces a key's event only once Kafka
/// acknowledged the key's previous one, and deletes a row only once Kafka acknowledged it. So
/// whenever any relay produces a key's event N+1, the key's event N is already on the topic:
/// this relay had it acknowledged in the same round, or it was deleted (so acknowledged)
/// before the read. That holds across a takeover too: a former leader that does not know yet
/// that it lost the lease (a zombie) publishes at most what it had read, by the same rule, and
/// since it deleted nothing it did not publish, the new leader publishes those rows again.
/// Consumers see duplicates, which the inbox absorbs, never a reordering. One leader at a time
/// is what keeps the duplicates rare.
///
/// # Faults that last
///
/// A row Kafka refuses (too large for `message.max.bytes`, a topic that does not exist, a
/// timestamp the broker rejects) is tried again after a backoff, alone, and parked once its
/// attempts are exhausted ([`RelayConfig::retry`], [`crate::parked_events`]). The read skips
/// every key with a row in backoff or parked, in SQL, so other keys' events keep flowing however
/// many such rows there are, and that key's later events wait instead of overtaking it. A
/// producer that raised a fatal error (idempotent-producer desynchronisation or fencing) is
/// replaced. A leader that has events waiting and
/// publishes none for [`RelayConfig::stall_timeout`] says so ([`Relay::health`]).
///
/// # Wake-ups
///
/// Commits do not NOTIFY (PostgreSQL serialises every notifying commit of the cluster on one
/// lock, held through the WAL flush). An append wakes the relay of its own process after the
/// commit ([`Outbox::waking`](crate::Outbox::waking)). If that relay stands by, it passes the
/// wake-up on to the leader with a NOTIFY from a statement of its own, one at a time (wake-ups
/// meanwhile fold into the next), with no WAL flush to wait for. The leader also polls every
/// [`RelayConfig::poll_interval`], which is the correctness path: no wake-up is needed for a
/// committed row to be published.
///
/// # Connections
///
/// A relay opens its own connections from the [`PgConnectOptions`] it is given, outside any
/// pool (so API traffic can never starve it of connections, nor it the API): one while standing
/// by; three while leading (the lease, the reads and deletes, the LISTEN).
pub struct Relay {
    database: PgConnectOptions,
    kafka: KafkaConfig,
    producer: Mutex<FutureProducer>,
    config: RelayConfig,
    wake: RelayWaker,
    status: watch::Sender<RelayStatus>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("config", &self.config)
            .field("status", &*self.status.borrow())
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
    attempts: i32,
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
    /// It is the "Send span (producer)" of the OpenTelemetry conventions for Kafka (v1.44.0):
    /// its context goes out with the record as the message's creation context. The partition
    /// (a string) and offset are recorded once Kafka acknowledged the record; a failure sets
    /// `error.type` to its reason (`FAILURE_REASONS`, as in `shop_outbox_publish_failures`).
    /// No `server.address`: the relay's producer talks to whichever broker leads the
    /// partition, which librdkafka does not report per delivery.
    fn send_span(&self) -> tracing::Span {
        let span = tracing::info_span!(
            parent: None,
            "send",
            otel.name = %format!("send {}", self.topic),
            otel.kind = "producer",
            otel.status_code = tracing::field::Empty,
            error.type = tracing::field::Empty,
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
    /// consumer's span is the child of the send) or, without one, the stored context; plus
    /// the stored headers that are not trace context.
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
            // The stored headers that are not trace context go as they are (a replayed
            // record's `shop_replay_*`, see the admin API).
            for (k, v) in self.stored_trace_headers() {
                let trace_context = k == headers::TRACEPARENT
                    || k == "tracestate"
                    || send_context.iter().any(|(sent, _)| sent == k);
                if !trace_context {
                    out = out.insert(header(k, v));
                }
            }
        }
        out
    }

    fn key(&self) -> (&str, &str) {
        (&self.topic, &self.partition_key)
    }
}

fn header<'a>(key: &'a str, value: &'a str) -> Header<'a, &'a str> {
    Header {
        key,
        value: Some(value),
    }
}

/// The oldest rows that may be published now: not parked, and of a key with no row in backoff
/// or parked at or before it (a key's later rows wait behind its stuck one). The filter is part
/// of the query, before the LIMIT, so stuck rows never fill a batch however many there are; the
/// subquery probes the partial index of rows in trouble. While that index is empty (nearly
/// always), the uncorrelated `NOT EXISTS`, evaluated once, spares the probes: the read then costs
/// what `ORDER BY id LIMIT n` does.
const READ: &str = "\
    SELECT id, event_id, topic, partition_key, event_type, source, payload, headers, created_at, attempts \
    FROM eventing_outbox AS o \
    WHERE o.parked_at IS NULL \
      AND (NOT EXISTS (SELECT 1 FROM eventing_outbox WHERE attempts > 0) \
           OR NOT EXISTS ( \
              SELECT 1 FROM eventing_outbox AS t \
              WHERE t.attempts > 0 \
                AND t.topic = o.topic AND t.partition_key = o.partition_key AND t.id <= o.id \
                AND (t.parked_at IS NOT NULL OR t.retry_at > clock_timestamp()))) \
    ORDER BY o.id \
    LIMIT $1";

/// A publishing attempt that failed because of the row.
struct Failure {
    id: i64,
    attempt: u32,
    error: String,
}

/// What became of a round's rows.
#[derive(Default)]
struct Published {
    acked: Vec<i64>,
    failed: Vec<Failure>,
}

/// What a round did.
#[derive(Default)]
struct Round {
    read: usize,
    published: usize,
}

/// Whether a publishing failure is the row's own (it will fail again: counted towards parking)
/// or the producer's (the row was caught in it: tried again at once, uncounted), and its
/// `reason` label.
fn classify(error: &KafkaError) -> (&'static str, bool) {
    use RDKafkaErrorCode as E;
    if matches!(error, KafkaError::Canceled) {
        return ("purged", false);
    }
    match error.rdkafka_error_code() {
        Some(E::MessageSizeTooLarge | E::InvalidMessageSize | E::MessageBatchTooLarge) => {
            ("message_too_large", true)
        }
        Some(E::UnknownTopic | E::UnknownTopicOrPartition | E::UnknownPartition) => {
            ("unknown_topic", true)
        }
        Some(E::InvalidTimestamp) => ("invalid_timestamp", true),
        Some(E::TopicAuthorizationFailed) => ("not_authorized", true),
        Some(E::InvalidRecord | E::InvalidMessage | E::PolicyViolation) => ("invalid_record", true),
        Some(E::QueueFull) => ("queue_full", false),
        Some(
            E::Fatal
            | E::GaplessGuarantee
            | E::OutOfOrderSequenceNumber
            | E::InvalidProducerEpoch
            | E::InvalidProducerIdMapping
            | E::UnknownProducerId
            | E::ProducerFenced,
        ) => ("producer_fatal", false),
        Some(E::PurgeQueue | E::PurgeInflight) => ("purged", false),
        _ => ("other", true),
    }
}

/// Marks a `send` span failed, with the failure's reason as its `error.type`.
fn failed(span: &tracing::Span, error: &KafkaError) {
    span.record("error.type", classify(error).0);
    span.record("otel.status_code", "ERROR");
}

/// When the leader last made progress, for its stall detection.
struct Progress {
    since: Instant,
    rebuilt: Instant,
    stalled: bool,
}

impl Relay {
    /// A relay for the outbox of the database `database` points at, publishing through `kafka`.
    ///
    /// It opens its own connections with these options (see [Connections](Relay#connections)),
    /// e.g. `pool.connect_options().as_ref().clone()` of the service's pool: they carry the
    /// service's session settings, and the relay adds `application_name` and, on the
    /// connection that deletes published rows, `synchronous_commit=off`.
    ///
    /// # Errors
    /// When the Kafka producer cannot be created (invalid properties, or properties that would
    /// weaken its guarantees: see [`KafkaConfig::properties`]), or when `lease_renewal` is not
    /// below `lease_ttl`.
    pub fn new(
        database: PgConnectOptions,
        kafka: &KafkaConfig,
        config: RelayConfig,
    ) -> Result<Self, RelayError> {
        if config.lease_renewal >= config.lease_ttl {
            return Err(RelayError::Config(format!(
                "lease_renewal {:?} must be below lease_ttl {:?}",
                config.lease_renewal, config.lease_ttl
            )));
        }
        Ok(Self {
            database: database.application_name(APPLICATION_NAME),
            kafka: kafka.clone(),
            producer: Mutex::new(kafka.relay_producer()?),
            config,
            wake: RelayWaker(Arc::new(watch::channel(()).0)),
            status: watch::channel(RelayStatus::default()).0,
        })
    }

    /// What an [`Outbox`](crate::Outbox) of this process wakes this relay with.
    pub fn waker(&self) -> RelayWaker {
        self.wake.clone()
    }

    /// Whether this relay leads, and whether it stalled.
    pub fn health(&self) -> RelayHealth {
        RelayHealth(self.status.subscribe())
    }

    /// Relays until `shutdown` is cancelled. Database and Kafka failures are logged and retried
    /// after [`RelayConfig::error_backoff`]; rows stay in the outbox until they are published.
    ///
    /// # Errors
    /// Only when a crash failpoint fires (tests).
    pub async fn run(&self, shutdown: CancellationToken) -> Result<(), RelayError> {
        while !shutdown.is_cancelled() {
            let serve = self.serve(&shutdown);
            tokio::pin!(serve);
            let outcome = tokio::select! {
                outcome = &mut serve => outcome,
                () = shutdown.cancelled() => {
                    // Let the round in flight finish (its rows are then deleted, not published
                    // twice) and the lease go, unless the broker or the database keeps it
                    // waiting: a shutdown must end. Unacknowledged rows stay in the outbox and
                    // are published again; consumers skip the copies.
                    match tokio::time::timeout(SHUTDOWN_GRACE, &mut serve).await {
                        Ok(outcome) => outcome,
                        Err(_) => {
                            tracing::warn!(grace = ?SHUTDOWN_GRACE, "The outbox relay did not finish its round before shutdown (Kafka did not acknowledge it, or the database did not answer); its events stay in the outbox.");
                            Ok(())
                        }
                    }
                }
            };
            // (Also when the turn was dropped at the end of the grace, before it could.)
            self.set_status(RelayStatus::default());
            self.config.metrics.relay_leader.set(0);
            self.config.metrics.relay_stalled.set(0);
            match outcome {
                // Only a shutdown ends a turn without an error; the loop's condition sees it.
                Ok(()) => {}
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

    /// Stands by until this replica holds the lease, then relays until shutdown, a failure or
    /// the loss of the lease.
    async fn serve(&self, shutdown: &CancellationToken) -> Result<(), RelayError> {
        let mut conn = self.db(PgConnection::connect_with(&self.database)).await?;
        let Some(lease) = self.stand_by(&mut conn, shutdown).await? else {
            return Ok(());
        };
        tracing::info!(epoch = lease.epoch, "This replica now relays the outbox.");
        self.set_status(RelayStatus {
            leading: true,
            stalled: false,
        });
        let outcome = self.lead(&mut conn, &lease, shutdown).await;
        self.set_status(RelayStatus::default());
        // A standby can then take over at its next try instead of at expiry. Pointless (and
        // bounded) when the connection is what failed.
        let _ = tokio::time::timeout(Duration::from_secs(1), lease.release(&mut conn)).await;
        outcome
    }

    /// Tries to take the lease every `standby_retry`; meanwhile passes this process's commits on
    /// to the leader. `None` on shutdown.
    async fn stand_by(
        &self,
        conn: &mut PgConnection,
        shutdown: &CancellationToken,
    ) -> Result<Option<Lease>, RelayError> {
        let holder = Uuid::new_v4();
        let mut commits = self.wake.0.subscribe();
        commits.borrow_and_update();
        loop {
            let sent = Instant::now();
            let taken = self.db(Lease::try_acquire(
                conn,
                holder,
                self.config.lease_ttl,
                sent,
            ));
            if let Some(lease) = taken.await? {
                return Ok(Some(lease));
            }
            let next_try = sent + self.config.standby_retry;
            loop {
                tokio::select! {
                    biased;
                    () = shutdown.cancelled() => return Ok(None),
                    () = tokio::time::sleep_until(next_try) => break,
                    Ok(()) = commits.changed() => {
                        commits.borrow_and_update();
                        // The simple protocol runs both statements as one transaction, so the
                        // notify lock it takes at commit is not held through a WAL flush.
                        let notify = sqlx::raw_sql(
                            "SET LOCAL synchronous_commit = off; SELECT pg_notify('eventing_outbox', '')",
                        )
                        .execute(&mut *conn);
                        self.db(notify).await?;
                    }
                }
            }
        }
    }

    /// Leads: renews the lease and relays, until either stops.
    async fn lead(
        &self,
        conn: &mut PgConnection,
        lease: &Lease,
        shutdown: &CancellationToken,
    ) -> Result<(), RelayError> {
        // Reads and deletes go over a connection of their own: a renewal is never queued behind a
        // batch. Losing a delete of acknowledged rows in a database crash means publishing them
        // again, which consumers absorb (inbox); so its commits need not wait for the WAL flush,
        // which would add an fsync to every round and to every event's commit-to-publish latency.
        let mut work = self.db(PgConnection::connect_with(&self.database)).await?;
        self.db(sqlx::query("SET synchronous_commit = off").execute(&mut work))
            .await?;
        // The LISTEN connection, in a pool of its own that reconnects it (never a slot of the
        // service's pool). Listening before the first read: no wake-up falls between the two.
        let listen_pool = PgPoolOptions::new()
            .max_connections(1)
            .max_lifetime(None)
            .idle_timeout(None)
            .connect_lazy_with(self.database.clone());
        let mut listener = self.db(PgListener::connect_with(&listen_pool)).await?;
        self.db(listener.listen(CHANNEL)).await?;
        self.config.metrics.relay_leader.set(1);
        let outcome = tokio::select! {
            outcome = self.keep(conn, lease) => outcome,
            outcome = self.relay(&mut work, &mut listener, lease, shutdown) => outcome,
        };
        self.config.metrics.relay_leader.set(0);
        self.config.metrics.relay_stalled.set(0);
        outcome
    }

    /// Renews the lease every `lease_renewal`; returns (an error) once it cannot. The relay stops
    /// with it: nothing is published after the lease ran out by this process's clock.
    async fn keep(&self, conn: &mut PgConnection, lease: &Lease) -> Result<(), RelayError> {
        loop {
            tokio::time::sleep(self.config.lease_renewal).await;
            let sent = Instant::now();
            let renewal = lease.renew(conn, self.config.lease_ttl, sent);
            match tokio::time::timeout_at(lease.valid_until(), renewal).await {
                Ok(Ok(true)) => {}
                Ok(Ok(false)) => return Err(RelayError::LeaseLost("another replica took it")),
                Ok(Err(error)) => return Err(error.into()),
                Err(_) => {
                    return Err(RelayError::LeaseLost(
                        "the database did not confirm a renewal before it ran out",
                    ));
                }
            }
        }
    }

    /// The leader's rounds: publish what may be published, then wait for a wake-up, a
    /// notification or the poll.
    async fn relay(
        &self,
        work: &mut PgConnection,
        listener: &mut PgListener,
        lease: &Lease,
        shutdown: &CancellationToken,
    ) -> Result<(), RelayError> {
        let mut commits = self.wake.0.subscribe();
        let now = Instant::now();
        let mut progress = Progress {
            since: now,
            rebuilt: now,
            stalled: false,
        };
        loop {
            if shutdown.is_cancelled() {
                return Ok(());
            }
            if !lease.is_valid() {
                return Err(RelayError::LeaseLost("it ran out before a renewal"));
            }
            // Wake-ups so far are about rows this round reads anyway.
            commits.borrow_and_update();
            while listener.next_buffered().is_some() {}
            let round = self.round(work, lease);
            tokio::pin!(round);
            let round = loop {
                tokio::select! {
                    round = &mut round => break Some(round?),
                    () = tokio::time::sleep(STALL_CHECK) => {
                        if self.check_stall(&mut progress)
                            && progress.rebuilt.elapsed() >= self.config.stall_timeout
                        {
                            break None;
                        }
                    }
                }
            };
            let Some(round) = round else {
                // Stalled on a round: give its deliveries up (the rows stay, and go out again
                // with a new producer; any copies the old one still lands are duplicates) in
                // case the producer itself is what is stuck.
                progress.rebuilt = Instant::now();
                self.rebuild_producer("it made no progress for the stall timeout")?;
                continue;
            };
            if round.published > 0 || round.read == 0 {
                progress.since = Instant::now();
            }
            self.check_stall(&mut progress);
            self.replace_producer_if_fatal()?;
            if round.read == self.config.batch_size {
                continue;
            }
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return Ok(()),
                Ok(()) = commits.changed() => {}
                notification = listener.recv() => { notification?; }
                () = tokio::time::sleep(self.config.poll_interval) => {}
            }
        }
    }

    /// Reads the oldest publishable rows (up to one batch), publishes them, records the failures
    /// and deletes what Kafka acknowledged.
    async fn round(&self, work: &mut PgConnection, lease: &Lease) -> Result<Round, RelayError> {
        let started = std::time::Instant::now();
        let limit = i64::try_from(self.config.batch_size).unwrap_or(i64::MAX);
        let rows: Vec<OutboxRow> = self
            .db(sqlx::query_as(READ).bind(limit).fetch_all(&mut *work))
            .await?;
        if rows.is_empty() {
            return Ok(Round::default());
        }
        self.config.failpoints.hit("relay.before_publish")?;
        // Each event gets its own `send` span in its own trace; the round itself is worth a
        // span only when debugging the relay (a root span per round would bury the traces).
        let published = self
            .publish(&rows, lease)
            .instrument(tracing::debug_span!(
                "outbox relay batch",
                rows = rows.len()
            ))
            .await;
        self.config.failpoints.hit("relay.after_publish")?;
        if !published.failed.is_empty() {
            self.record_failures(work, &rows, &published.failed).await?;
        }
        if !published.acked.is_empty() {
            let delete = sqlx::query("DELETE FROM eventing_outbox WHERE id = ANY($1)")
                .bind(&published.acked)
                .execute(&mut *work);
            self.db(delete).await?;
        }
        self.config
            .metrics
            .relay_batch
            .observe(started.elapsed().as_secs_f64());
        Ok(Round {
            read: rows.len(),
            published: published.acked.len(),
        })
    }

    /// Publishes `rows` (in id order) and reports which Kafka acknowledged and which failed
    /// because of themselves.
    ///
    /// A key's rows go out one at a time: each is produced only once Kafka acknowledged the one
    /// before it. That alone keeps a key in order on the wire, whatever fails: a row that failed
    /// (refused, purged with a dead producer) had nothing of its key sent after it, so its next
    /// try cannot land behind a later event. Pipelining a key's rows instead would rest on the
    /// broker rejecting every batch that follows a rejected one, which librdkafka defeats (after
    /// a permanent error it bumps the epoch and renumbers the partition's later batches, which
    /// are then written) and its mock cluster does not even check. Different keys, the whole
    /// batch in the common case, are in flight together: one broker round trip per round, plus
    /// one per extra row of the key that has the most.
    async fn publish(&self, rows: &[OutboxRow], lease: &Lease) -> Published {
        let mut published = Published::default();
        // Keys whose row failed in this round: their later rows must not go out before it.
        let mut blocked: HashSet<(&str, &str)> = HashSet::new();

        // Rows that failed before go first, one at a time, each awaited before anything else is
        // sent. A batch the broker rejects fails every record in it, the innocent with the
        // guilty; alone, a row that fails again is the guilty one, and only its own failures
        // count towards parking it.
        for row in rows.iter().filter(|r| r.attempts > 0) {
            if !lease.is_valid() {
                return published;
            }
            let producer = self.producer();
            let outcome = match self.send(&producer, row) {
                Ok((delivery, span)) => self.settle(row, delivery.await, &span),
                Err(error) => Err(error),
            };
            match outcome {
                Ok(()) => published.acked.push(row.id),
                Err(error) => {
                    blocked.insert(row.key());
                    self.note_failure(&mut published, row, &error);
                }
            }
            // A row that failed alone may have made the producer fatal: the next row needs a
            // working one.
            if let Err(error) = self.replace_producer_if_fatal() {
                tracing::warn!(%error, "Could not rebuild the relay's Kafka producer.");
                return published;
            }
        }

        // The others, as one chain per key, in id order.
        let mut chains: Vec<std::collections::VecDeque<&OutboxRow>> = Vec::new();
        let mut chain_of: std::collections::HashMap<(&str, &str), usize> =
            std::collections::HashMap::new();
        for row in rows.iter().filter(|r| r.attempts == 0) {
            if blocked.contains(&row.key()) {
                continue;
            }
            let chain = *chain_of.entry(row.key()).or_insert_with(|| {
                chains.push(std::collections::VecDeque::new());
                chains.len() - 1
            });
            chains[chain].push_back(row);
        }
        // In waves: every chain's next row is produced, then the wave's acknowledgements are
        // awaited in order (the first wait covers the others, which arrive with it: one wake-up
        // per wave rather than one per row), then the chains whose row was acknowledged go on.
        // Most rounds are one wave; a key with several rows adds a wave per extra row.
        let producer = self.producer();
        let mut going: Vec<usize> = (0..chains.len()).collect();
        let mut wave = Vec::with_capacity(chains.len());
        while !going.is_empty() {
            for index in going.drain(..) {
                if let Some((row, delivery, span)) =
                    self.send_next(&producer, lease, &mut chains[index], &mut published)
                {
                    wave.push((index, row, delivery, span));
                }
            }
            for (index, row, delivery, span) in wave.drain(..) {
                match self.settle(row, delivery.await, &span) {
                    Ok(()) => {
                        published.acked.push(row.id);
                        if !chains[index].is_empty() {
                            going.push(index);
                        }
                    }
                    Err(error) => {
                        self.note_failure(&mut published, row, &error);
                        chains[index].clear();
                    }
                }
            }
        }
        published
    }

    /// Produces the next row of a key's chain, if the lease still allows it.
    fn send_next<'r>(
        &self,
        producer: &FutureProducer,
        lease: &Lease,
        chain: &mut std::collections::VecDeque<&'r OutboxRow>,
        published: &mut Published,
    ) -> Option<(&'r OutboxRow, DeliveryFuture, tracing::Span)> {
        // Nothing is sent once the lease may have passed to another replica.
        if !lease.is_valid() {
            return None;
        }
        let row = chain.pop_front()?;
        match self.send(producer, row) {
            Ok((delivery, span)) => Some((row, delivery, span)),
            Err(error) => {
                self.note_failure(published, row, &error);
                // Refused at enqueue (too large, a topic known not to exist, a full queue): the
                // key's later rows wait for the next round.
                chain.clear();
                None
            }
        }
    }

    fn send(
        &self,
        producer: &FutureProducer,
        row: &OutboxRow,
    ) -> Result<(DeliveryFuture, tracing::Span), KafkaError> {
        let span = row.send_span();
        let send_context = span.in_scope(shop_telemetry::current_trace_headers);
        // No timestamp: the record gets the time it is produced (CreateTime = now), not the
        // outbox `created_at`. Retention (`retention.ms`) and the broker's timestamp checks
        // (`log.message.timestamp.*`) count from the record's timestamp, so an event that waited
        // in the outbox (a broker outage, a parked row retried days later) would otherwise be
        // rejected as too old, or deleted by retention soon after it is published, before slow
        // consumers read it; and timestamps would run backwards within a partition, which
        // offset lookups by time (`--to-datetime`) assume they do not. The event's own time
        // travels in `ce_time`, which consumers use.
        let record = FutureRecord::to(&row.topic)
            .key(&row.partition_key)
            .payload(&row.payload)
            .headers(row.kafka_headers(&send_context));
        match producer.send_result(record) {
            Ok(delivery) => Ok((delivery, span)),
            Err((error, _)) => {
                failed(&span, &error);
                Err(error)
            }
        }
    }

    /// Records a delivery's outcome on its span and in the metrics.
    fn settle(
        &self,
        row: &OutboxRow,
        delivery: <DeliveryFuture as Future>::Output,
        span: &tracing::Span,
    ) -> Result<(), KafkaError> {
        match delivery {
            Ok(Ok(delivery)) => {
                span.record(
                    "messaging.destination.partition.id",
                    delivery.partition.to_string(),
                );
                span.record("messaging.kafka.offset", delivery.offset);
                let metrics = &self.config.metrics;
                metrics
                    .published
                    .get_or_create(&TopicLabels {
                        topic: row.topic.clone(),
                    })
                    .inc();
                let waited = (Utc::now() - row.created_at).as_seconds_f64();
                metrics.publish_latency.observe(waited.max(0.0));
                Ok(())
            }
            Ok(Err((error, _))) => {
                failed(span, &error);
                Err(error)
            }
            Err(_) => {
                failed(span, &KafkaError::Canceled);
                Err(KafkaError::Canceled)
            }
        }
    }

    fn note_failure(&self, published: &mut Published, row: &OutboxRow, error: &KafkaError) {
        let (reason, own) = classify(error);
        self.config
            .metrics
            .count_publish_failure(&row.topic, reason);
        if own {
            let attempt = u32::try_from(row.attempts).unwrap_or(0).saturating_add(1);
            tracing::warn!(
                id = row.id,
                topic = %row.topic,
                key = %row.partition_key,
                attempt,
                max_attempts = self.config.retry.max_attempts,
                %error,
                "Kafka refused an outbox event; it is tried again later, and its key's later events wait behind it."
            );
            published.failed.push(Failure {
                id: row.id,
                attempt,
                error: error.to_string(),
            });
        } else {
            tracing::debug!(id = row.id, %error, "Outbox event caught in a producer failure; tried again next round.");
        }
    }

    /// Counts the failed attempts; schedules the next try, or parks the rows that had their last.
    async fn record_failures(
        &self,
        work: &mut PgConnection,
        rows: &[OutboxRow],
        failed: &[Failure],
    ) -> Result<(), RelayError> {
        let ids: Vec<i64> = failed.iter().map(|f| f.id).collect();
        let errors: Vec<&str> = failed.iter().map(|f| f.error.as_str()).collect();
        let delays: Vec<i64> = failed
            .iter()
            .map(|f| {
                i64::try_from(self.config.retry.backoff(f.attempt).as_millis()).unwrap_or(i64::MAX)
            })
            .collect();
        let max_attempts = i32::try_from(self.config.retry.max_attempts).unwrap_or(i32::MAX);
        let update = sqlx::query_as(
            "UPDATE eventing_outbox AS o \
             SET attempts = o.attempts + 1, last_error = f.error, last_attempt_at = clock_timestamp(), \
                 retry_at = clock_timestamp() + f.delay_ms * interval '1 millisecond', \
                 parked_at = CASE WHEN o.attempts + 1 >= $4 THEN clock_timestamp() END \
             FROM unnest($1::bigint[], $2::text[], $3::bigint[]) AS f(id, error, delay_ms) \
             WHERE o.id = f.id \
             RETURNING o.id, o.attempts, o.parked_at IS NOT NULL",
        )
        .bind(&ids)
        .bind(&errors)
        .bind(&delays)
        .bind(max_attempts)
        .fetch_all(&mut *work);
        let updated: Vec<(i64, i32, bool)> = self.db(update).await?;
        for (id, attempts, parked) in updated {
            if !parked {
                continue;
            }
            let row = rows.iter().find(|r| r.id == id);
            tracing::error!(
                id,
                attempts,
                topic = row.map(|r| r.topic.as_str()),
                key = row.map(|r| r.partition_key.as_str()),
                error = failed.iter().find(|f| f.id == id).map(|f| f.error.as_str()),
                "Parked an outbox event Kafka keeps refusing. Its key's later events wait behind it until an operator retries it (once the cause is fixed) or drops it: shop_eventing::retry_parked / drop_parked."
            );
        }
        Ok(())
    }

    /// Marks the relay stalled (or no longer) and returns whether it is.
    fn check_stall(&self, progress: &mut Progress) -> bool {
        let stalled = progress.since.elapsed() >= self.config.stall_timeout;
        if stalled != progress.stalled {
            progress.stalled = stalled;
            self.config.metrics.relay_stalled.set(i64::from(stalled));
            self.set_status(RelayStatus {
                leading: true,
                stalled,
            });
            if stalled {
                tracing::error!(
                    stall_timeout = ?self.config.stall_timeout,
                    "The outbox relay has events waiting and published none for the stall timeout: Kafka is unreachable or refuses them (see shop_outbox_publish_failures_total). The service reports NOT_SERVING until it publishes again."
                );
            } else {
                tracing::info!("The outbox relay publishes again.");
            }
        }
        stalled
    }

    fn producer(&self) -> FutureProducer {
        self.producer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Replaces the producer if librdkafka declared it unusable.
    fn replace_producer_if_fatal(&self) -> Result<(), RelayError> {
        let fatal = self.producer().client().fatal_error();
        if let Some((code, reason)) = fatal {
            tracing::error!(%code, %reason, "The relay's Kafka producer raised a fatal error; replacing it.");
            self.rebuild_producer("it raised a fatal error")?;
        }
        Ok(())
    }

    fn rebuild_producer(&self, why: &str) -> Result<(), RelayError> {
        let fresh = self.kafka.relay_producer()?;
        let old = std::mem::replace(
            &mut *self
                .producer
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
            fresh,
        );
        tracing::warn!(why, "Replaced the relay's Kafka producer.");
        // Dropping a producer purges its queue and waits up to 500 ms for the purge's reports:
        // not on a runtime thread.
        tokio::task::spawn_blocking(move || drop(old));
        Ok(())
    }

    fn set_status(&self, status: RelayStatus) {
        self.status.send_if_modified(|current| {
            let changed = *current != status;
            *current = status;
            changed
        });
    }

    /// A database call bounded by the lease's length: a connection that stopped answering (a
    /// black hole sends no error, ever) ends the relay's turn instead of hanging it.
    async fn db<T>(
        &self,
        call: impl Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, RelayError> {
        match tokio::time::timeout(self.config.lease_ttl, call).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(RelayError::DatabaseTimeout(self.config.lease_ttl)),
        }
    }
}
