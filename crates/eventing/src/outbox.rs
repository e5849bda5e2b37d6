use sqlx::PgConnection;
use uuid::Uuid;

use crate::RelayWaker;

/// An event to append to the outbox.
#[derive(Clone, Debug)]
pub struct NewEvent {
    /// `ce_id`; a fresh UUIDv7 unless set with [`NewEvent::with_id`].
    pub id: Uuid,
    /// Kafka topic.
    pub topic: String,
    /// Record key: the aggregate id.
    pub key: String,
    /// `ce_type`.
    pub event_type: String,
    /// Record value.
    pub payload: Vec<u8>,
}

impl NewEvent {
    /// A protobuf event: `ce_type` is the message's fully qualified name, the value its encoding.
    pub fn new<M: prost::Message + prost::Name>(
        topic: impl Into<String>,
        key: impl Into<String>,
        message: &M,
    ) -> Self {
        Self::raw(topic, key, M::full_name(), message.encode_to_vec())
    }

    /// An event with an explicit type and payload.
    pub fn raw(
        topic: impl Into<String>,
        key: impl Into<String>,
        event_type: impl Into<String>,
        payload: Vec<u8>,
    ) -> Self {
        Self {
            id: Uuid::now_v7(),
            topic: topic.into(),
            key: key.into(),
            event_type: event_type.into(),
            payload,
        }
    }

    /// Uses a caller-chosen event id (e.g. derived from a request's idempotency key).
    #[must_use]
    pub fn with_id(mut self, id: Uuid) -> Self {
        self.id = id;
        self
    }
}

/// Appends events to the transactional outbox of one service's database.
///
/// Give it the process's relay with [`Outbox::waking`]: each append then wakes that relay once
/// its transaction has committed, so the event leaves within a round trip or two instead of at
/// the relay's next poll.
#[derive(Clone, Debug)]
pub struct Outbox {
    source: String,
    wakes: Vec<RelayWaker>,
}

impl Outbox {
    /// An outbox whose events carry `ce_source = source` (e.g. `/shop/order-service`).
    pub fn new(source: impl Into<String>) -> Self {
        Self {
            source: source.into(),
            wakes: Vec::new(),
        }
    }

    /// Wakes `relay` (the [`Relay::waker`](crate::Relay::waker) of this process's relay of the
    /// same database) after each commit of an append. A relay that stands by passes the wake-up
    /// on to the replica that relays (see [`Relay`](crate::Relay)).
    #[must_use]
    pub fn waking(mut self, relay: RelayWaker) -> Self {
        self.wakes.push(relay);
        self
    }

    /// Appends `event` in the caller's transaction: it is published if and only if that
    /// transaction commits. The current span's trace context is stored with it, so the consumer's
    /// span continues this trace.
    ///
    /// The relay is woken once the transaction commits ([`after_commit`](crate::after_commit)):
    /// append inside a [`Handler`](crate::Handler) or under [`committing`](crate::committing),
    /// as the services do. Elsewhere the wake-up comes at once, before the caller commits, and
    /// the relay may only find the event at its next poll.
    ///
    /// # Errors
    /// Database errors; the caller's transaction should then be rolled back.
    #[tracing::instrument(
        name = "outbox append",
        skip_all,
        fields(
            messaging.destination.name = %event.topic,
            messaging.message.id = %event.id,
            event.type = %event.event_type,
        )
    )]
    pub async fn append(
        &self,
        conn: &mut PgConnection,
        event: NewEvent,
    ) -> Result<Uuid, sqlx::Error> {
        let headers: serde_json::Map<String, serde_json::Value> =
            shop_telemetry::current_trace_headers()
                .into_iter()
                .map(|(k, v)| (k, serde_json::Value::String(v)))
                .collect();
        sqlx::query(
            "INSERT INTO eventing_outbox (event_id, topic, partition_key, event_type, source, payload, headers) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(event.id)
        .bind(&event.topic)
        .bind(&event.key)
        .bind(&event.event_type)
        .bind(&self.source)
        .bind(&event.payload)
        .bind(serde_json::Value::Object(headers))
        .execute(conn)
        .await?;
        // No NOTIFY here: it would make this commit take PostgreSQL's cluster-wide notify lock
        // (see migrations/3_relay.sql). The wake-up happens in this process, after the commit.
        for wake in &self.wakes {
            let wake = wake.clone();
            crate::after_commit(move || wake.wake());
        }
        Ok(event.id)
    }
}

/// One topic a service publishes to through its outbox: what its use cases append their events
/// with, each keyed by its aggregate's id (so that one aggregate's events keep their order on
/// one partition).
#[derive(Clone, Debug)]
pub struct Publisher {
    outbox: Outbox,
    topic: String,
}

impl Publisher {
    /// Events of `outbox` to `topic`.
    pub fn new(outbox: Outbox, topic: impl Into<String>) -> Self {
        Self {
            outbox,
            topic: topic.into(),
        }
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Appends `event` about aggregate `key` in the caller's transaction ([`Outbox::append`]).
    ///
    /// # Errors
    /// Database errors; the caller's transaction should then be rolled back.
    pub async fn append<M: prost::Message + prost::Name>(
        &self,
        conn: &mut PgConnection,
        key: impl std::fmt::Display,
        event: &M,
    ) -> Result<(), sqlx::Error> {
        self.outbox
            .append(conn, NewEvent::new(&self.topic, key.to_string(), event))
            .await
            .map(|_| ())
    }
}
