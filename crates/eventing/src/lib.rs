//! Reliable eventing for the shop suite: every event leaves through a transactional outbox and
//! every consumer applies each event once.
//!
//! # The pieces
//!
//! - [`Outbox`] appends an event inside the caller's sqlx transaction, next to the state change
//!   that caused it. Nothing is ever published outside a transaction.
//! - [`Relay`] runs inside each service process. It is woken by `LISTEN/NOTIFY` when events are
//!   committed (and polls as a fallback), publishes them in batches through an idempotent Kafka
//!   producer with CloudEvents headers, and deletes them only once Kafka acknowledged them. One
//!   replica at a time holds the relay lock, so two replicas never reorder a key's events.
//! - [`Consumer`] is a consumer-group loop around a [`Handler`]. Each record is applied in one
//!   database transaction together with its inbox row (so duplicates and replays are skipped);
//!   its offset is stored only after that transaction committed. Transient failures are retried
//!   with jittered exponential backoff; permanent or exhausted ones go to a dead-letter topic and
//!   the partition moves on.
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

mod commit;
mod consumer;
mod failpoint;
pub mod headers;
mod inbound;
mod kafka;
mod metrics;
mod migrate;
mod outbox;
mod relay;
mod retry;

pub use commit::{after_commit, committing, count_on_commit};
pub use consumer::{Consumer, ConsumerConfig, Handler, HandlerError, StartPosition};
pub use failpoint::{FailpointAction, Failpoints};
pub use inbound::InboundEvent;
pub use kafka::KafkaConfig;
pub use metrics::EventingMetrics;
pub use migrate::migrate;
pub use outbox::{NewEvent, Outbox};
pub use relay::{Relay, RelayConfig, RelayError};
pub use retry::RetryPolicy;
