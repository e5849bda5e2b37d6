use std::future::Future;
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use futures::FutureExt;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{Consumer as _, ConsumerContext, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::commit::Deferred;
use crate::failpoint::Crashed;
use crate::metrics::{
    DeadLetterLabels, ErrorLabels, GroupLabels, GroupTopicLabels, OutcomeLabels, PartitionLabels,
};
use crate::{EventingMetrics, Failpoints, InboundEvent, KafkaConfig, RetryPolicy, headers};

/// Where a consumer group with no committed offset starts reading. A group that has committed
/// offsets always resumes from them; this only decides a new group's (or a reset group's) start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartPosition {
    /// From the oldest retained record: a new subscriber backfills history.
    Earliest,
    /// From records produced after it joined: live events only.
    Latest,
}

/// Settings of a [`Consumer`].
///
/// Name a consumer after the team or purpose, not the host (`sales-analytics`, `fraud-check`):
/// the name is the Kafka group (every replica shares it, and Kafka spreads the partitions over
/// them), the inbox key and the dead-letter topic's prefix.
///
/// ```
/// use std::time::Duration;
/// use shop_eventing::{ConsumerConfig, StartPosition};
///
/// // A live dashboard: no backfill, only what happens from now on.
/// let mut config = ConsumerConfig::new("live-dashboard", ["order.events.v1"]);
/// config.start = StartPosition::Latest;
/// config.retry.max_attempts = 10;
/// config.retry.max_backoff = Duration::from_secs(30);
/// assert_eq!(config.group_id, "live-dashboard");
/// assert_eq!(config.dead_letter_topic, "live-dashboard.dlq");
///
/// // A replay: a new group reads everything again; the unchanged name's inbox skips what
/// // was applied.
/// let mut replay = ConsumerConfig::new("live-dashboard", ["order.events.v1"]);
/// replay.group_id = "live-dashboard-replay-1".into();
/// replay.start = StartPosition::Earliest;
/// ```
#[derive(Clone, Debug)]
pub struct ConsumerConfig {
    /// The inbox's consumer name: whose effects these are. One service, one name.
    pub name: String,
    /// Kafka consumer group; defaults to `name`. Replaying a topic safely means reading it again
    /// under a new group id (or with the group's offsets reset) with the same `name`: the inbox
    /// then skips everything already applied.
    pub group_id: String,
    /// Topics to subscribe to.
    pub topics: Vec<String>,
    /// Where records this consumer gives up on go. Default `<name>.dlq`.
    pub dead_letter_topic: String,
    /// Where a new group starts. Default [`StartPosition::Earliest`].
    pub start: StartPosition,
    /// Retries of transient handler failures.
    pub retry: RetryPolicy,
    /// Most records applied in one database transaction. Records already fetched are batched;
    /// the consumer never waits to fill a batch.
    pub max_batch: usize,
    /// Kafka group session timeout: how long the group waits for a dead member.
    pub session_timeout: Duration,
    /// Longest a fetch waits on the broker for new records. Apache Kafka answers as soon as a
    /// record arrives, so this only bounds idle polling there; brokers that hold fetches for the
    /// whole wait (tansu does) add up to this much latency per hop.
    pub max_fetch_wait: Duration,
    /// How often librdkafka reports statistics, from which `shop_consumer_lag` is read.
    pub statistics_interval: Duration,
    /// Where counts and timings go (see [`EventingMetrics`]).
    pub metrics: EventingMetrics,
    /// Crash points for tests.
    pub failpoints: Failpoints,
}

impl ConsumerConfig {
    /// Defaults for consumer group `name` reading `topics`.
    pub fn new(
        name: impl Into<String>,
        topics: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        let name = name.into();
        Self {
            dead_letter_topic: format!("{name}.dlq"),
            group_id: name.clone(),
            name,
            topics: topics.into_iter().map(Into::into).collect(),
            start: StartPosition::Earliest,
            retry: RetryPolicy::default(),
            max_batch: 200,
            session_timeout: Duration::from_secs(10),
            max_fetch_wait: Duration::from_millis(20),
            statistics_interval: Duration::from_secs(5),
            metrics: EventingMetrics::default(),
            failpoints: Failpoints::from_env(),
        }
    }
}

/// Why a handler could not apply an event.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// May succeed when tried again (a lock timeout, a serialization failure, a dependency
    /// briefly down): retried with backoff, then dead-lettered when the retries are exhausted.
    #[error("transient: {0:#}")]
    Transient(anyhow::Error),
    /// Will fail however often it is tried (a malformed payload, an event that violates the
    /// contract): dead-lettered at once.
    #[error("permanent: {0:#}")]
    Permanent(anyhow::Error),
}

impl HandlerError {
    /// A failure worth retrying.
    pub fn transient(error: impl Into<anyhow::Error>) -> Self {
        Self::Transient(error.into())
    }

    /// A failure not worth retrying.
    pub fn permanent(error: impl Into<anyhow::Error>) -> Self {
        Self::Permanent(error.into())
    }

    fn kind(&self) -> &'static str {
        match self {
            Self::Transient(_) => "transient",
            Self::Permanent(_) => "permanent",
        }
    }
}

impl From<sqlx::Error> for HandlerError {
    /// Connection trouble, pool exhaustion and the SQLSTATE classes that mean "try again"
    /// (40: serialization failure or deadlock; 53: insufficient resources; 57: operator
    /// intervention, e.g. a restart; 08: connection exception) are transient. Other database
    /// errors (constraint violations, bad SQL) are permanent: retrying cannot change them.
    fn from(error: sqlx::Error) -> Self {
        let transient = match &error {
            sqlx::Error::Database(db) => db
                .code()
                .is_some_and(|code| ["40", "53", "57", "08"].iter().any(|c| code.starts_with(c))),
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Protocol(_) => true,
            _ => false,
        };
        if transient {
            Self::Transient(error.into())
        } else {
            Self::Permanent(error.into())
        }
    }
}

/// Applies one event. Implemented by each subscriber; everything else (decoding helpers,
/// deduplication, retries, dead letters, offsets, tracing) is the [`Consumer`]'s job.
pub trait Handler: Send + Sync + 'static {
    /// Applies `event` using `tx`, the transaction its inbox row is written in. Write every
    /// effect through `tx` (including outbox appends): it commits only if this returns `Ok`.
    /// Events this handler does not care about should return `Ok(())`.
    fn handle(
        &self,
        tx: &mut PgConnection,
        event: &InboundEvent,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;
}

/// A consumer-group loop that applies each record exactly once in effect.
///
/// For each record: begin a transaction, insert `(consumer, ce_id)` into the inbox (a conflict
/// means the record was applied before: skip the handler), run the handler in the same
/// transaction, commit, and only then store the offset for the next auto-commit. Records already
/// fetched are applied in one transaction, so one fsync covers a batch (when a handler fails, the
/// records before it are applied again on their own and the failure is settled apart).
pub struct Consumer<H> {
    pool: PgPool,
    consumer: StreamConsumer<LagReporter>,
    dead_letters: FutureProducer,
    config: ConsumerConfig,
    handler: H,
}

impl<H> std::fmt::Debug for Consumer<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Why processing stopped early.
enum Stop {
    Shutdown,
    Crashed(Crashed),
}

impl From<Crashed> for Stop {
    fn from(c: Crashed) -> Self {
        Self::Crashed(c)
    }
}

struct Run {
    /// The records of the slice that were committed, from its start.
    applied: Vec<Applied>,
    /// The handler failure that ended the run, on the record after the committed ones.
    failure: Option<HandlerError>,
}

/// A record whose inbox row (and effect, unless a duplicate) is in the transaction.
struct Applied {
    duplicate: bool,
    deferred: Deferred,
}

/// Reads each partition's lag from librdkafka's statistics into `shop_consumer_lag`.
struct LagReporter {
    group: String,
    metrics: EventingMetrics,
}

impl ClientContext for LagReporter {
    fn stats(&self, statistics: rdkafka::Statistics) {
        for (topic, stats) in statistics.topics {
            for (partition, p) in stats.partitions {
                // -1 is librdkafka's internal "unassigned" partition.
                if partition < 0 {
                    continue;
                }
                let labels = PartitionLabels {
                    group: self.group.clone(),
                    topic: topic.clone(),
                    partition: partition.to_string(),
                };
                // Lag behind the stored offset: what this consumer has applied (offsets are
                // stored only after the database commit). -1 when the partition is not ours.
                let lag = if p.consumer_lag_stored >= 0 {
                    p.consumer_lag_stored
                } else {
                    p.consumer_lag
                };
                if lag >= 0 {
                    self.metrics.lag.get_or_create(&labels).set(lag);
                } else {
                    self.metrics.lag.remove(&labels);
                }
            }
        }
    }
}

impl ConsumerContext for LagReporter {}

impl<H: Handler> Consumer<H> {
    /// Creates the consumer and subscribes to the configured topics.
    ///
    /// # Errors
    /// When the Kafka clients cannot be created or the subscription is refused.
    pub fn new(
        pool: PgPool,
        kafka: &KafkaConfig,
        config: ConsumerConfig,
        handler: H,
    ) -> KafkaResult<Self> {
        let mut client = kafka.client_config();
        client
            .set("group.id", &config.group_id)
            .set("client.id", &config.name)
            // Offsets are stored by hand after the database commit and committed in the
            // background; nothing is committed that is not applied.
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "1000")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            .set(
                "fetch.wait.max.ms",
                config.max_fetch_wait.as_millis().to_string(),
            )
            .set(
                "statistics.interval.ms",
                config.statistics_interval.as_millis().to_string(),
            )
            .set(
                "session.timeout.ms",
                config.session_timeout.as_millis().to_string(),
            )
            .set(
                "auto.offset.reset",
                match config.start {
                    StartPosition::Earliest => "earliest",
                    StartPosition::Latest => "latest",
                },
            );
        for (k, v) in &kafka.properties {
            client.set(k, v);
        }
        let consumer: StreamConsumer<LagReporter> = client.create_with_context(LagReporter {
            group: config.group_id.clone(),
            metrics: config.metrics.clone(),
        })?;
        let topics: Vec<&str> = config.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics)?;
        config
            .metrics
            .start_consumer(&config.group_id, &config.topics, &config.dead_letter_topic);
        Ok(Self {
            pool,
            consumer,
            dead_letters: kafka.idempotent_producer()?,
            config,
            handler,
        })
    }

    /// Consumes until `shutdown` is cancelled, then finishes the batch in hand, commits the
    /// stored offsets and leaves the group.
    ///
    /// # Errors
    /// Only when a crash failpoint fires (tests); the group is then left without committing,
    /// as a dead process would.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), Crashed> {
        tracing::info!(consumer = %self.config.name, topics = ?self.config.topics, "Consuming.");
        loop {
            let first = tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                received = self.consumer.recv() => received,
            };
            let mut batch = match first {
                Ok(message) => vec![message.detach()],
                Err(error) => {
                    self.kafka_error(&error).await;
                    continue;
                }
            };
            while batch.len() < self.config.max_batch {
                match self.consumer.recv().now_or_never() {
                    Some(Ok(message)) => batch.push(message.detach()),
                    Some(Err(error)) => {
                        self.kafka_error(&error).await;
                        break;
                    }
                    None => break,
                }
            }
            let fetched = Instant::now();
            let events: Vec<InboundEvent> = batch.iter().map(InboundEvent::from_message).collect();
            match self.process(&events, fetched, &shutdown).await {
                Ok(()) => {}
                Err(Stop::Shutdown) => break,
                Err(Stop::Crashed(crashed)) => return Err(crashed),
            }
        }
        // Drained. Leaving the group hands the partitions back, and librdkafka's auto-commit
        // then commits their stored offsets (those of what was applied), so the next owner
        // starts right after. Closing the consumer waits for that commit and the leave, bounded
        // by session.timeout.ms even when the broker is gone (a synchronous commit here would
        // wait for a dead broker forever, and a shutdown must end). It blocks, so it runs on a
        // blocking thread rather than an async worker.
        self.consumer.unsubscribe();
        let Self {
            consumer, config, ..
        } = self;
        // On a thread of its own, not tokio's blocking pool: if librdkafka's close outlives
        // its bound, the runtime's shutdown must not wait for it.
        let (closed_tx, closed_rx) = tokio::sync::oneshot::channel();
        let closer = std::thread::Builder::new()
            .name("kafka-consumer-close".into())
            .spawn(move || {
                drop(consumer);
                let _ = closed_tx.send(());
            });
        let patience = config.session_timeout + Duration::from_secs(5);
        if closer.is_ok() && tokio::time::timeout(patience, closed_rx).await.is_err() {
            tracing::warn!(consumer = %config.name, ?patience, "The Kafka consumer did not close in time; leaving it behind (records since the last commit will be redelivered and skipped by the inbox).");
        }
        tracing::info!(consumer = %config.name, "Consumer stopped.");
        Ok(())
    }

    async fn kafka_error(&self, error: &KafkaError) {
        tracing::warn!(%error, consumer = %self.config.name, "Kafka consumer error.");
        // Errors usually repeat until the broker is back; do not spin.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    /// Applies `events` in order: runs of successes in one transaction each, failures settled one
    /// by one (retried, then dead-lettered), so a bad record never blocks its partition.
    async fn process(
        &self,
        events: &[InboundEvent],
        fetched: Instant,
        shutdown: &CancellationToken,
    ) -> Result<(), Stop> {
        let mut next = 0;
        let mut outages = 0;
        while next < events.len() {
            let run = match self.apply(&events[next..]).await {
                Ok(run) => run,
                Err(error) => {
                    // The database itself failed (not a handler): nothing was applied. Wait and
                    // try again; the records are not the problem, so they are not dead-lettered.
                    outages += 1;
                    tracing::warn!(%error, consumer = %self.config.name, "Database unavailable; retrying the batch.");
                    self.pause(self.config.retry.backoff(outages.min(10)), shutdown)
                        .await?;
                    continue;
                }
            };
            outages = 0;
            let committed = run.applied.len();
            if committed > 0 {
                self.config.failpoints.hit("consumer.after_commit")?;
                self.store_offsets(&events[next..next + committed]);
                self.record_applied(&events[next..next + committed], &run.applied, fetched);
                next += committed;
            }
            if let Some(failure) = run.failure {
                self.record_failure(&events[next], &failure);
                self.settle(&events[next], failure, fetched, shutdown)
                    .await?;
                next += 1;
            }
        }
        Ok(())
    }

    /// Applies a prefix of `events` in one transaction, stopping at the first handler failure.
    /// `Err` only when the database failed (nothing committed).
    ///
    /// The records go in one transaction without savepoints (the common case, where no handler
    /// fails, costs two statements less per record). When a handler fails, everything is rolled
    /// back and the records before the failing one are applied again on their own, so that the
    /// failing record's handler runs once per attempt (its failure is settled by the caller).
    async fn apply(&self, events: &[InboundEvent]) -> Result<Run, sqlx::Error> {
        let mut end = events.len();
        let mut failure = None;
        let mut run = loop {
            if end == 0 {
                break Run {
                    applied: Vec::new(),
                    failure,
                };
            }
            match self.apply_together(&events[..end]).await? {
                Ok(applied) => break Run { applied, failure },
                Err((at, first)) => {
                    end = at;
                    failure = Some(first);
                }
            }
        };
        if !run.applied.is_empty() {
            self.config
                .metrics
                .batch_size
                .get_or_create(&GroupLabels {
                    group: self.config.group_id.clone(),
                })
                .observe(run.applied.len() as f64);
        }
        for applied in &mut run.applied {
            std::mem::take(&mut applied.deferred).run();
        }
        Ok(run)
    }

    /// Every record of `events` in one transaction: all committed, or (at the first handler
    /// failure) all rolled back, with the failing record's index and failure.
    async fn apply_together(
        &self,
        events: &[InboundEvent],
    ) -> Result<Result<Vec<Applied>, (usize, HandlerError)>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let mut applied = Vec::with_capacity(events.len());
        for (at, event) in events.iter().enumerate() {
            if at == 1 {
                // A crash here loses the uncommitted batch; in-process it counts as an outage.
                self.config
                    .failpoints
                    .hit("consumer.mid_batch")
                    .map_err(|c| sqlx::Error::Protocol(c.to_string()))?;
            }
            match self.apply_one(&mut tx, event).await? {
                Ok(one) => applied.push(one),
                Err(failure) => {
                    // The effects deferred so far go with the transaction.
                    tx.rollback().await?;
                    return Ok(Err((at, failure)));
                }
            }
        }
        tx.commit().await?;
        Ok(Ok(applied))
    }

    /// Claims `event` in the inbox and runs the handler. The outer `Result` is the inbox write
    /// (infrastructure), the inner one the handler's verdict.
    async fn apply_one(
        &self,
        conn: &mut PgConnection,
        event: &InboundEvent,
    ) -> Result<Result<Applied, HandlerError>, sqlx::Error> {
        let span = tracing::info_span!(
            "process",
            otel.name = %format!("process {}", event.topic),
            otel.kind = "consumer",
            messaging.system = "kafka",
            messaging.operation.type = "process",
            messaging.destination.name = %event.topic,
            messaging.consumer.group.name = %self.config.name,
            messaging.destination.partition.id = event.partition,
            messaging.kafka.offset = event.offset,
            messaging.message.id = %event.id,
            event.type = event.event_type.as_deref().unwrap_or(""),
            duplicate = tracing::field::Empty,
        );
        shop_telemetry::set_parent_from_headers(
            &span,
            event
                .headers
                .iter()
                .filter_map(|(k, v)| Some((k.as_str(), std::str::from_utf8(v).ok()?))),
        );
        async {
            let claimed = sqlx::query(
                "INSERT INTO eventing_inbox (consumer, event_id, event_type, topic, kafka_partition, kafka_offset) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            )
            .bind(&self.config.name)
            .bind(&event.id)
            .bind(event.event_type.as_deref().unwrap_or(""))
            .bind(&event.topic)
            .bind(event.partition)
            .bind(event.offset)
            .execute(&mut *conn)
            .await?
            .rows_affected()
                == 1;
            tracing::Span::current().record("duplicate", !claimed);
            if !claimed {
                tracing::debug!("Already applied; skipping.");
                return Ok(Ok(Applied {
                    duplicate: true,
                    deferred: Deferred::default(),
                }));
            }
            let (outcome, deferred) = Deferred::collect(self.handler.handle(conn, event)).await;
            Ok(outcome.map(|()| Applied {
                duplicate: false,
                deferred,
            }))
        }
        .instrument(span)
        .await
    }

    /// Retries a failed record (transient failures, with backoff) until it applies or is
    /// dead-lettered; stores its offset either way.
    async fn settle(
        &self,
        event: &InboundEvent,
        mut failure: HandlerError,
        fetched: Instant,
        shutdown: &CancellationToken,
    ) -> Result<(), Stop> {
        let mut attempts = 1;
        loop {
            let retryable = matches!(failure, HandlerError::Transient(_))
                && attempts < self.config.retry.max_attempts;
            if !retryable {
                self.dead_letter(event, &failure, attempts, shutdown)
                    .await?;
                self.store_offsets(std::slice::from_ref(event));
                return Ok(());
            }
            let delay = self.config.retry.backoff(attempts);
            tracing::warn!(
                error = %failure, attempt = attempts, ?delay, event.id = %event.id,
                consumer = %self.config.name, "Handler failed; retrying."
            );
            self.pause(delay, shutdown).await?;
            match self.apply(std::slice::from_ref(event)).await {
                Ok(Run {
                    failure: None,
                    applied,
                }) => {
                    self.config.failpoints.hit("consumer.after_commit")?;
                    self.store_offsets(std::slice::from_ref(event));
                    self.record_applied(std::slice::from_ref(event), &applied, fetched);
                    return Ok(());
                }
                Ok(Run {
                    failure: Some(next),
                    ..
                }) => {
                    self.record_failure(event, &next);
                    failure = next;
                    // Only tries made while the database answers count: an outage must not
                    // push valid records to the dead-letter topic.
                    if self.database_reachable().await {
                        attempts += 1;
                    }
                }
                Err(error) => failure = HandlerError::transient(error),
            }
        }
    }

    async fn database_reachable(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }

    /// Publishes `event` to the dead-letter topic with the error and its origin, and records that
    /// in the database. A record this consumer already dead-lettered (a replay) is skipped.
    async fn dead_letter(
        &self,
        event: &InboundEvent,
        failure: &HandlerError,
        attempts: u32,
        shutdown: &CancellationToken,
    ) -> Result<(), Stop> {
        let known = loop {
            match sqlx::query_scalar::<_, bool>(
                "SELECT EXISTS (SELECT 1 FROM eventing_dead_letter WHERE consumer = $1 AND event_id = $2)",
            )
            .bind(&self.config.name)
            .bind(&event.id)
            .fetch_one(&self.pool)
            .await
            {
                Ok(known) => break known,
                Err(error) => {
                    tracing::warn!(%error, "Database unavailable while dead-lettering; retrying.");
                    self.pause(self.config.retry.max_backoff, shutdown).await?;
                }
            }
        };
        if known {
            tracing::info!(event.id = %event.id, "Already dead-lettered; skipping.");
            self.count(event, "duplicate");
            return Ok(());
        }

        let error_text = format!("{failure}");
        let partition = event.partition.to_string();
        let offset = event.offset.to_string();
        let failed_at = Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true);
        let attempts_text = attempts.to_string();
        loop {
            let mut headers = OwnedHeaders::new_with_capacity(event.headers.len() + 8);
            for (key, value) in &event.headers {
                headers = headers.insert(Header {
                    key: key.as_str(),
                    value: Some(value.as_slice()),
                });
            }
            for (key, value) in [
                (headers::DLQ_ERROR, error_text.as_str()),
                (headers::DLQ_ERROR_KIND, failure.kind()),
                (headers::DLQ_ATTEMPTS, attempts_text.as_str()),
                (headers::DLQ_CONSUMER, self.config.name.as_str()),
                (headers::DLQ_SOURCE_TOPIC, event.topic.as_str()),
                (headers::DLQ_SOURCE_PARTITION, partition.as_str()),
                (headers::DLQ_SOURCE_OFFSET, offset.as_str()),
                (headers::DLQ_FAILED_AT, failed_at.as_str()),
            ] {
                headers = headers.insert(Header {
                    key,
                    value: Some(value),
                });
            }
            let mut record = FutureRecord::to(&self.config.dead_letter_topic)
                .payload(event.payload.as_slice())
                .headers(headers);
            if let Some(key) = &event.key {
                record = record.key(key.as_str());
            }
            match self
                .dead_letters
                .send(record, Timeout::After(Duration::from_secs(30)))
                .await
            {
                Ok(_) => break,
                Err((error, _)) => {
                    tracing::warn!(%error, "Publishing to the dead-letter topic failed; retrying.");
                    self.pause(self.config.retry.max_backoff, shutdown).await?;
                }
            }
        }
        loop {
            let recorded = sqlx::query(
                "INSERT INTO eventing_dead_letter \
                 (consumer, event_id, event_type, topic, kafka_partition, kafka_offset, dead_letter_topic, error, attempts) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING",
            )
            .bind(&self.config.name)
            .bind(&event.id)
            .bind(event.event_type.as_deref())
            .bind(&event.topic)
            .bind(event.partition)
            .bind(event.offset)
            .bind(&self.config.dead_letter_topic)
            .bind(&error_text)
            .bind(i32::try_from(attempts).unwrap_or(i32::MAX))
            .execute(&self.pool)
            .await;
            match recorded {
                Ok(_) => break,
                Err(error) => {
                    tracing::warn!(%error, "Database unavailable while recording a dead letter; retrying.");
                    self.pause(self.config.retry.max_backoff, shutdown).await?;
                }
            }
        }
        self.count(event, "dead_lettered");
        self.config
            .metrics
            .dead_letters
            .get_or_create(&DeadLetterLabels {
                group: self.config.group_id.clone(),
                topic: event.topic.clone(),
                dead_letter_topic: self.config.dead_letter_topic.clone(),
            })
            .inc();
        tracing::error!(
            event.id = %event.id, event.type = event.event_type.as_deref().unwrap_or(""),
            topic = %event.topic, partition = event.partition, offset = event.offset,
            dead_letter_topic = %self.config.dead_letter_topic, error = %failure, attempts,
            "Dead-lettered a record; the partition moves on."
        );
        Ok(())
    }

    fn count(&self, event: &InboundEvent, outcome: &'static str) {
        self.config
            .metrics
            .consumed
            .get_or_create(&OutcomeLabels {
                group: self.config.group_id.clone(),
                topic: event.topic.clone(),
                outcome,
            })
            .inc();
    }

    /// Counts and times records whose transaction committed.
    fn record_applied(&self, events: &[InboundEvent], applied: &[Applied], fetched: Instant) {
        let metrics = &self.config.metrics;
        let now = Utc::now();
        for (event, applied) in events.iter().zip(applied) {
            self.count(
                event,
                if applied.duplicate {
                    "duplicate"
                } else {
                    "applied"
                },
            );
            let labels = GroupTopicLabels {
                group: self.config.group_id.clone(),
                topic: event.topic.clone(),
            };
            metrics
                .process_duration
                .get_or_create(&labels)
                .observe(fetched.elapsed().as_secs_f64());
            if !applied.duplicate
                && let Some(appended) = event
                    .time
                    .as_deref()
                    .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            {
                let delay = (now - appended.with_timezone(&Utc)).as_seconds_f64();
                metrics
                    .event_delay
                    .get_or_create(&labels)
                    .observe(delay.max(0.0));
            }
        }
    }

    fn record_failure(&self, event: &InboundEvent, failure: &HandlerError) {
        self.config
            .metrics
            .handler_errors
            .get_or_create(&ErrorLabels {
                group: self.config.group_id.clone(),
                topic: event.topic.clone(),
                kind: failure.kind(),
            })
            .inc();
    }

    fn store_offsets(&self, events: &[InboundEvent]) {
        for event in events {
            // Fails only when the partition was revoked meanwhile; its new owner re-reads the
            // record and the inbox skips it.
            if let Err(error) =
                self.consumer
                    .store_offset(&event.topic, event.partition, event.offset)
            {
                tracing::debug!(%error, "Offset not stored (partition revoked).");
            }
        }
    }

    async fn pause(&self, delay: Duration, shutdown: &CancellationToken) -> Result<(), Stop> {
        tokio::select! {
            () = shutdown.cancelled() => Err(Stop::Shutdown),
            () = tokio::time::sleep(delay) => Ok(()),
        }
    }
}
