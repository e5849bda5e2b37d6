//! Kafka header names: the CloudEvents Kafka protocol binding in binary content mode, plus W3C
//! trace context and the dead-letter metadata this crate adds.
//!
//! In binary mode the record value is the event payload itself (protobuf bytes) and every
//! CloudEvents attribute travels as a `ce_`-prefixed header; `content-type` carries
//! `datacontenttype`. Any Kafka client can read them without this crate.

/// Unique event id (a UUIDv7 for events of this suite). Consumers deduplicate on it.
pub const CE_ID: &str = "ce_id";
/// Event type: the fully qualified protobuf message name, e.g. `shop.order.v1.OrderPlaced`.
pub const CE_TYPE: &str = "ce_type";
/// The producing service, e.g. `/shop/order-service`.
pub const CE_SOURCE: &str = "ce_source";
/// CloudEvents spec version; always [`SPEC_VERSION`].
pub const CE_SPECVERSION: &str = "ce_specversion";
/// When the event happened (RFC 3339), i.e. when it was appended to the outbox.
pub const CE_TIME: &str = "ce_time";
/// The aggregate id, also the record key (CloudEvents `partitionkey` extension).
pub const CE_PARTITIONKEY: &str = "ce_partitionkey";
/// Media type of the record value.
pub const CONTENT_TYPE: &str = "content-type";
/// W3C trace context of the span that appended the event.
pub const TRACEPARENT: &str = "traceparent";

/// The CloudEvents version these headers follow.
pub const SPEC_VERSION: &str = "1.0";
/// Media type of protobuf payloads.
pub const PROTOBUF: &str = "application/protobuf";

/// Why the record was dead-lettered (the handler's error chain).
pub const DLQ_ERROR: &str = "dlq_error";
/// `permanent` (transient failures are retried until they succeed; older versions also wrote
/// `transient` when their retries ran out).
pub const DLQ_ERROR_KIND: &str = "dlq_error_kind";
/// How many times the record was tried.
pub const DLQ_ATTEMPTS: &str = "dlq_attempts";
/// The consumer (group) that gave up.
pub const DLQ_CONSUMER: &str = "dlq_consumer";
/// Where the record came from: topic, partition and offset.
pub const DLQ_SOURCE_TOPIC: &str = "dlq_source_topic";
/// See [`DLQ_SOURCE_TOPIC`].
pub const DLQ_SOURCE_PARTITION: &str = "dlq_source_partition";
/// See [`DLQ_SOURCE_TOPIC`].
pub const DLQ_SOURCE_OFFSET: &str = "dlq_source_offset";
/// When the consumer gave up (RFC 3339).
pub const DLQ_FAILED_AT: &str = "dlq_failed_at";

/// On a replayed record: the consumer (inbox name) it is replayed for. That consumer applies
/// it although it has a dead-letter row for it; every other consumer of the topic treats it as
/// the record it already applied or set aside.
pub const REPLAY_CONSUMER: &str = "shop_replay_consumer";
/// On a replayed record: which replay of it this is (1, 2, ...). See [`REPLAY_CONSUMER`].
pub const REPLAY_COUNT: &str = "shop_replay_count";
