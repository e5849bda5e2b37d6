use sqlx::PgConnection;
use uuid::Uuid;

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
#[derive(Clone, Debug)]
pub struct Outbox {
    source: String,
}

impl Outbox {
    /// An outbox whose events carry `ce_source = source` (e.g. `/shop/order-service`).
    pub fn new(source: impl Into<String>) -> Self {
        Self {
            source: source.into(),
        }
    }

    /// Appends `event` in the caller's transaction: it is published if and only if that
    /// transaction commits. The current span's trace context is stored with it, so the consumer's
    /// span continues this trace.
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
        Ok(event.id)
    }
}
