//! Reliable eventing for the shop suite: every event leaves through a transactional outbox and
//! every consumer applies each event once.
//!
//! # The pieces
//!
//! - [`Outbox`] appends an event inside the caller's sqlx transaction, next to the state change
//!   that caused it. Nothing is ever published outside a transaction.
//! - [`Relay`] runs inside each service process, on connections of its own. The outbox wakes it
//!   in-process once an append's transaction committed (commits send no NOTIFY: PostgreSQL
//!   would serialise them all on its notify lock); a relay that stands by passes the wake-up on
//!   to the one that relays with a NOTIFY of its own, and the relay polls as a fallback. It
//!   publishes in batches through an idempotent Kafka producer with CloudEvents headers, a
//!   key's next event only once the previous one is acknowledged, and deletes rows only once
//!   Kafka acknowledged them. One replica at a time holds the relay lease, renewed every second
//!   and taken over within seconds when its holder dies or goes silent. A row Kafka refuses is
//!   retried with backoff and then parked ([`parked_events`], [`retry_parked`],
//!   [`drop_parked`]), with its key's later events waiting behind it while other keys flow.
//! - [`Consumer`] is a consumer-group loop around a [`Handler`]. Each record is applied in one
//!   database transaction together with its inbox row (so duplicates and replays are skipped);
//!   its offset is stored only after that transaction committed. A transient failure pauses
//!   its partition and retries the record with jittered exponential backoff for as long as it
//!   lasts, while the other partitions flow; a permanent one sends the record to a dead-letter
//!   topic and the partition moves on.
//!
//! # Delivery guarantee
//!
//! At-least-once on the wire, exactly-once in effect: the relay may publish an event twice (a
//! crash between Kafka's ack and the delete), and a consumer may receive it twice (a crash between
//! its commit and the offset commit, a rebalance, a replay); the inbox row makes the second
//! delivery a no-op.
//!
//! # Per-key order
//!
//! Events of one key are published in outbox `id` order, to one partition, by one producer at a
//! time. Writers of one aggregate must serialize on it (they do when they update the aggregate's
//! row in the same transaction), so that id order is also commit order for that key.
//!
//! # Writing a subscriber
//!
//! A new consumer of the suite's events writes its handlers and nothing else. Implement [`On<E>`]
//! for each event type it needs, register them on a [`Dispatcher`], and run a [`Consumer`]:
//!
//! ```no_run
//! use shop_eventing::{
//!     Consumer, ConsumerConfig, Dispatcher, EventingMetrics, HandlerError, InboundEvent,
//!     KafkaConfig, On, StartPosition,
//! };
//! use shop_proto::order::v1::OrderConfirmed;
//! use sqlx::PgConnection;
//! use tokio_util::sync::CancellationToken;
//!
//! /// The subscriber's state: clients, settings, metrics. Here, nothing.
//! #[derive(Debug)]
//! struct Fraud;
//!
//! impl On<OrderConfirmed> for Fraud {
//!     async fn on(
//!         &self,
//!         tx: &mut PgConnection,
//!         event: OrderConfirmed,
//!         _meta: &InboundEvent,
//!     ) -> Result<(), HandlerError> {
//!         if event.order_id.is_empty() {
//!             // Retrying cannot fix it: straight to the dead-letter topic.
//!             return Err(HandlerError::permanent(anyhow::anyhow!("no order id")));
//!         }
//!         let total = event.total.map_or(0, |m| m.amount_minor);
//!         sqlx::query("INSERT INTO scores (order_id, score) VALUES ($1, $2)")
//!             .bind(&event.order_id)
//!             .bind(i32::from(total > 100_000))
//!             .execute(&mut *tx)
//!             .await?; // connection trouble is transient (retried), a bad statement permanent
//!         Ok(())
//!     }
//! }
//!
//! # async fn run() -> anyhow::Result<()> {
//! let pool = sqlx::PgPool::connect("postgres://postgres@127.0.0.1:5432/fraud").await?;
//! shop_eventing::migrate(&pool).await?; // the inbox and dead-letter tables
//! let mut registry = prometheus_client::registry::Registry::default();
//!
//! // Group `fraud-check`, which is also the inbox name; dead letters go to `fraud-check.dlq`.
//! let mut config = ConsumerConfig::new("fraud-check", [shop_proto::topics::ORDER_EVENTS]);
//! config.start = StartPosition::Earliest; // a new group backfills the retained history
//! config.metrics = EventingMetrics::new(&mut registry); // serve `registry` as /metrics
//!
//! let handler = Dispatcher::new(Fraud).on::<OrderConfirmed>();
//! let consumer = Consumer::new(pool, &KafkaConfig::new("127.0.0.1:9092"), config, handler)?;
//! let shutdown = CancellationToken::new(); // cancel it on SIGTERM
//! consumer.run(shutdown).await?;
//! # Ok(())
//! # }
//! ```
//!
//! What comes for free, per record: the protobuf payload decoded into the type its `ce_type`
//! names (a malformed payload, or one whose text breaks `shop_proto::Untrusted`'s rules, is
//! dead-lettered; other event types are passed over, with no inbox row); deduplication by
//! `ce_id` in the inbox, in the same transaction as the handler's writes, its rows deleted once
//! older than the topics' retention ([`Retention`], so the tables stay bounded); retries of
//! [`HandlerError::Transient`] failures with jittered exponential backoff ([`RetryPolicy`]);
//! dead letters to `<name>.dlq` with the error and the record's origin in `dlq_*` headers
//! ([`headers`]); a `process <topic>` span that continues the producer's trace; the
//! `shop_consumer_*` metrics ([`EventingMetrics`]) and the group's lag, measured from the broker
//! by a task apart from the consumer's loop, so a stuck or dead consumer shows a growing lag
//! ([`group_lag`]); offsets committed only after the effect. A handler that needs the raw record implements [`Handler`] directly.
//!
//! # When things go wrong
//!
//! - **A dependency is down** (the database, a lock held elsewhere, a failover): the failure is
//!   transient. The record's partition is paused and the record tried again after a backoff
//!   capped at `retry.max_backoff`, however long it takes; the other partitions are consumed
//!   meanwhile and the group keeps the member (polling never stops).
//!   `shop_consumer_retrying_records` and `shop_consumer_retrying_seconds` show such
//!   partitions and how long they have waited; an alert fires after five minutes.
//! - **The record cannot be applied** (a malformed payload, a contract violation, a panic in
//!   the handler, a header the consumer cannot use, such as a `ce_id` with a NUL byte, data the
//!   database refuses): the failure is permanent and the record is dead-lettered at once. Every
//!   attribute read from the headers is checked before it reaches SQL or a log line (see
//!   [`InboundEvent`]).
//! - **The dead-letter topic cannot be written** (missing, not authorised, the record too
//!   large for it): after `dead_letter_timeout` the dead letter is kept in the database only
//!   (`eventing_dead_letter` with `published = false`, payload, key and headers included), with
//!   an error log and `shop_consumer_dead_letters_unpublished_total`, and the partition moves
//!   on.
//! - **Several replicas, contended rows**: a handler declares the rows it will lock
//!   ([`Handler::lock_keys`]); the consumer takes them for its whole batch first, in one global
//!   order, so the batches of two replicas never deadlock.
//! - **A COMMIT whose answer is lost**: the records are tried again; if the inbox shows the
//!   transaction committed after all, the [`after_commit`] effects it deferred run then (they
//!   are kept in memory meanwhile, so a process that dies in between loses them, like its other
//!   counters).
//!
//! # Replaying a topic
//!
//! The inbox remembers every `ce_id` a consumer *name* applied, whatever the Kafka group, and
//! `eventing_dead_letter` every record it set aside, for as long as the topic can still hand
//! the record out ([`Retention`]: its rows are deleted only past the topic's `retention.ms`
//! and `segment.ms`). So a replay from the topic is always safe: read the topic
//! again from the start and everything already applied is skipped, and so is every record with
//! a dead-letter row (counted as `skipped`: the saga may have moved on without it), while
//! records the consumer never saw are applied. To have a dead-lettered record applied, fix the
//! cause, take the record (from the dead-letter topic or, when the row's `published` is false,
//! from its `payload`, `record_key` and `header_names`/`header_values`), delete the row
//! (`DELETE FROM eventing_dead_letter WHERE consumer = $1 AND event_id = $2`) and deliver the
//! record again (a replay, or produced back to its source topic). Or, without deleting
//! anything, `shopctl dlq replay` ([`admin`]): the record goes back to its source topic with
//! replay headers naming the consumer, which applies it despite the row and deletes the row in
//! the same transaction (or, failing again, counts the replay on it).
//!
//! - **New group, same name** (no downtime): run a second consumer with
//!   [`ConsumerConfig::group_id`] set to a new group, `name` unchanged and
//!   [`StartPosition::Earliest`]; stop the old group once the new one caught up.
//! - **Offset reset** (same group): stop every member, then
//!   `kafka-consumer-groups.sh --group <group> --topic <topic> --reset-offsets --to-earliest --execute`
//!   (or `--to-datetime`: a record's Kafka timestamp is when the relay published it; the event's
//!   own time is its `ce_time`), then start again.
//!
//! Changing `name` instead starts a new inbox: every retained event is applied again, which is
//! what a *new* subscriber wants and what an existing one must not do.
//!
//! Records re-produced from outside the topic (an archive, a backup of the cluster) may be
//! older than the inbox remembers: those older than the [`Retention`] window are applied again.
//! Re-produce only what is younger than the window.

pub mod admin;
mod commit;
mod consumer;
mod dispatch;
mod failpoint;
pub mod headers;
mod inbound;
mod kafka;
mod lag;
mod lease;
mod metrics;
mod migrate;
mod outbox;
mod parked;
mod relay;
mod retry;

pub use commit::{after_commit, committing, count_on_commit};
pub use consumer::{
    Consumer, ConsumerConfig, Handler, HandlerError, LockKey, Retention, StartPosition,
};
pub use dispatch::{Dispatcher, On};
pub use failpoint::{FailpointAction, Failpoints};
pub use inbound::InboundEvent;
pub use kafka::KafkaConfig;
pub use lag::{PartitionLag, group_lag};
pub use metrics::EventingMetrics;
pub use migrate::migrate;
pub use outbox::{NewEvent, Outbox, Publisher};
pub use parked::{ParkedEvent, ParkedEvents, drop_parked, parked_events, retry_parked};
pub use relay::{Relay, RelayConfig, RelayError, RelayHealth, RelayStatus, RelayWaker};
pub use retry::RetryPolicy;
