use rdkafka::Message;
use rdkafka::message::{Headers, OwnedMessage};

use crate::HandlerError;
use crate::headers;

/// A record received from Kafka, with its CloudEvents attributes read from the headers.
#[derive(Clone, Debug)]
pub struct InboundEvent {
    /// `ce_id`, or `topic/partition/offset` when the producer sent none. The inbox key.
    pub id: String,
    /// `ce_type`, when present.
    pub event_type: Option<String>,
    /// `ce_source`, when present.
    pub source: Option<String>,
    /// `ce_time`, when present (RFC 3339).
    pub time: Option<String>,
    /// The record key (the aggregate id), when present and UTF-8.
    pub key: Option<String>,
    /// The record value.
    pub payload: Vec<u8>,
    /// Where the record was read.
    pub topic: String,
    /// See [`InboundEvent::topic`].
    pub partition: i32,
    /// See [`InboundEvent::topic`].
    pub offset: i64,
    /// Every header, in order, as sent (values that are not UTF-8 are kept as bytes).
    pub headers: Vec<(String, Vec<u8>)>,
}

impl InboundEvent {
    pub(crate) fn from_message(message: &OwnedMessage) -> Self {
        let headers: Vec<(String, Vec<u8>)> = message
            .headers()
            .map(|hs| {
                hs.iter()
                    .map(|h| {
                        (
                            h.key.to_owned(),
                            h.value.map(<[u8]>::to_vec).unwrap_or_default(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let text = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .and_then(|(_, v)| std::str::from_utf8(v).ok())
                .map(str::to_owned)
        };
        let (topic, partition, offset) = (
            message.topic().to_owned(),
            message.partition(),
            message.offset(),
        );
        Self {
            id: text(headers::CE_ID)
                .filter(|id| !id.is_empty())
                .unwrap_or_else(|| format!("{topic}/{partition}/{offset}")),
            event_type: text(headers::CE_TYPE),
            source: text(headers::CE_SOURCE),
            time: text(headers::CE_TIME),
            key: message
                .key()
                .and_then(|k| std::str::from_utf8(k).ok())
                .map(str::to_owned),
            payload: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
            topic,
            partition,
            offset,
            headers,
        }
    }

    /// The first header named `name`, if it is UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    /// Whether this record carries event type `T` (its `ce_type` is `T`'s protobuf full name).
    pub fn is<T: prost::Name>(&self) -> bool {
        self.event_type.as_deref() == Some(T::full_name().as_str())
    }

    /// Decodes the payload as `T`.
    ///
    /// ```
    /// # use shop_eventing::{HandlerError, InboundEvent};
    /// use shop_proto::order::v1::OrderConfirmed;
    ///
    /// fn total(event: &InboundEvent) -> Result<Option<i64>, HandlerError> {
    ///     if !event.is::<OrderConfirmed>() {
    ///         return Ok(None); // not ours
    ///     }
    ///     let confirmed: OrderConfirmed = event.decode()?; // malformed: permanent
    ///     Ok(confirmed.total.map(|m| m.amount_minor))
    /// }
    /// ```
    ///
    /// # Errors
    /// A permanent [`HandlerError`] when `ce_type` is not `T` or the payload does not decode:
    /// retrying cannot fix a malformed record, so it goes to the dead-letter topic.
    pub fn decode<T: prost::Message + prost::Name + Default>(&self) -> Result<T, HandlerError> {
        if !self.is::<T>() {
            return Err(HandlerError::permanent(anyhow::anyhow!(
                "expected event type {}, got {:?}",
                T::full_name(),
                self.event_type
            )));
        }
        T::decode(self.payload.as_slice()).map_err(|e| {
            HandlerError::permanent(
                anyhow::Error::new(e).context(format!("malformed {} payload", T::full_name())),
            )
        })
    }
}
