use rdkafka::Message;
use rdkafka::message::{Headers, OwnedMessage};
use sha2::{Digest, Sha256};

use crate::HandlerError;
use crate::headers;

/// Longest `ce_id` accepted, in bytes. The suite's ids are UUIDs (36); CloudEvents allows any
/// string, and this leaves room for other producers' schemes while staying far below
/// PostgreSQL's btree limit for the inbox key (about 2.7 kB).
const MAX_ID: usize = 256;
/// Longest `ce_type` accepted, in bytes (a protobuf full name).
const MAX_TYPE: usize = 256;
/// Longest `ce_source` and record key kept, in bytes.
const MAX_TEXT: usize = 1024;

/// A record received from Kafka, with its CloudEvents attributes read from the headers.
///
/// Every attribute is checked before it reaches SQL or a log line: text without control
/// characters (a NUL byte, which PostgreSQL refuses, included), of a bounded size. An
/// attribute the consumer depends on that fails the check (`ce_id`, `ce_type`) makes the record
/// unusable: it is dead-lettered as permanent, never applied and never retried. The others
/// (`ce_source`, `ce_time`, the key) are then absent (`None`).
#[derive(Clone, Debug)]
pub struct InboundEvent {
    /// The inbox key: `ce_id` when it is a valid id (UTF-8 text of at most 256 bytes without
    /// control characters). A record without `ce_id` gets
    /// `<topic>/<partition>/<offset>/<digest>`, where the digest (SHA-256 of the record's
    /// timestamp, key and value, 16 hex digits) keeps a recreated topic's new records at old
    /// offsets from passing for duplicates. A record whose `ce_id` is not a valid id gets
    /// `invalid-ce_id/<SHA-256 of ce_id, key and value>` and is dead-lettered.
    pub id: String,
    /// `ce_type`, when present and valid.
    pub event_type: Option<String>,
    /// `ce_source`, when present and valid.
    pub source: Option<String>,
    /// `ce_time`, when present and an RFC 3339 timestamp.
    pub time: Option<String>,
    /// The record key (the aggregate id), when present and valid text.
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
    /// The key as sent, for the dead-letter copy.
    pub(crate) raw_key: Option<Vec<u8>>,
    /// Why the record cannot be applied whatever the handler does (a hostile `ce_id`, ...).
    pub(crate) rejected: Option<String>,
}

/// `text` is usable as an attribute: at most `max` bytes, no control characters.
fn valid_text(text: &str, max: usize) -> bool {
    text.len() <= max && !text.chars().any(char::is_control)
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// SHA-256 over `parts`, each prefixed by its length so that no two sequences collide.
fn digest(parts: &[&[u8]]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    hex(&hasher.finalize())
}

impl InboundEvent {
    pub(crate) fn from_message(message: &OwnedMessage) -> Self {
        let mut rejected = None;
        // rust-rdkafka panics on a header *name* that is not UTF-8: any client can send one.
        let headers: Vec<(String, Vec<u8>)> =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                message
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
                    .unwrap_or_default()
            }))
            .unwrap_or_else(|_| {
                rejected = Some("a header name is not UTF-8".to_owned());
                Vec::new()
            });
        let raw = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_slice())
        };
        let text = |name: &str, max: usize| {
            raw(name)
                .and_then(|v| std::str::from_utf8(v).ok())
                .filter(|t| valid_text(t, max))
                .map(str::to_owned)
        };
        let (topic, partition, offset) = (
            message.topic().to_owned(),
            message.partition(),
            message.offset(),
        );
        let raw_key = message.key().map(<[u8]>::to_vec);
        let payload = message.payload().map(<[u8]>::to_vec).unwrap_or_default();
        let key_bytes = raw_key.as_deref().unwrap_or_default();

        let id = match raw(headers::CE_ID).filter(|v| !v.is_empty()) {
            None => {
                let timestamp = message.timestamp().to_millis().unwrap_or(-1);
                let digest = digest(&[&timestamp.to_be_bytes(), key_bytes, &payload]);
                format!("{topic}/{partition}/{offset}/{}", &digest[..16])
            }
            Some(id) => match std::str::from_utf8(id) {
                Ok(id) if valid_text(id, MAX_ID) => id.to_owned(),
                _ => {
                    rejected.get_or_insert_with(|| {
                        format!(
                            "the ce_id header is not a valid event id (UTF-8 text of at most {MAX_ID} bytes without control characters; got {} bytes)",
                            id.len()
                        )
                    });
                    format!("invalid-ce_id/{}", digest(&[id, key_bytes, &payload]))
                }
            },
        };
        let event_type = text(headers::CE_TYPE, MAX_TYPE);
        if event_type.is_none() && raw(headers::CE_TYPE).is_some() {
            rejected.get_or_insert_with(|| {
                format!(
                    "the ce_type header is not a valid type name (UTF-8 text of at most {MAX_TYPE} bytes without control characters)"
                )
            });
        }
        let time =
            text(headers::CE_TIME, 64).filter(|t| chrono::DateTime::parse_from_rfc3339(t).is_ok());
        Self {
            id,
            event_type,
            source: text(headers::CE_SOURCE, MAX_TEXT),
            time,
            key: raw_key
                .as_deref()
                .and_then(|k| std::str::from_utf8(k).ok())
                .filter(|k| valid_text(k, MAX_TEXT))
                .map(str::to_owned),
            payload,
            topic,
            partition,
            offset,
            headers,
            raw_key,
            rejected,
        }
    }

    /// The first header named `name`, if it is UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    /// Which replay of a dead letter of `consumer` this record is (its
    /// [`headers::REPLAY_COUNT`], when [`headers::REPLAY_CONSUMER`] names `consumer`): such a
    /// record is applied although `consumer` has a dead-letter row for it, as long as the row
    /// counts fewer replays.
    pub fn replay_for(&self, consumer: &str) -> Option<i32> {
        if self.header(headers::REPLAY_CONSUMER)? != consumer {
            return None;
        }
        self.header(headers::REPLAY_COUNT)?
            .parse::<i32>()
            .ok()
            .filter(|n| *n > 0)
    }

    /// Whether this record carries event type `T` (its `ce_type` is `T`'s protobuf full name).
    pub fn is<T: prost::Name>(&self) -> bool {
        self.event_type.as_deref() == Some(T::full_name().as_str())
    }

    /// Decodes the payload as `T` when the record carries event type `T`, `None` when it
    /// carries another: one line per event type a handler applies.
    ///
    /// ```
    /// # use shop_eventing::{HandlerError, InboundEvent};
    /// use shop_proto::order::v1::OrderConfirmed;
    ///
    /// fn total(event: &InboundEvent) -> Result<Option<i64>, HandlerError> {
    ///     let Some(confirmed) = event.decode_if::<OrderConfirmed>()? else {
    ///         return Ok(None); // not ours
    ///     };
    ///     Ok(confirmed.total.map(|m| m.amount_minor))
    /// }
    /// ```
    ///
    /// # Errors
    /// As [`InboundEvent::decode`], for a record of type `T` that is malformed.
    pub fn decode_if<T: prost::Message + prost::Name + Default + shop_proto::Untrusted>(
        &self,
    ) -> Result<Option<T>, HandlerError> {
        if self.is::<T>() {
            self.decode().map(Some)
        } else {
            Ok(None)
        }
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
    /// The decoded message is checked before it is returned ([`shop_proto::Untrusted`]): every
    /// string at most 1 KiB and free of control characters, every repeated field bounded. A
    /// record on the topic may come from any client that could write there, so none of its
    /// text reaches SQL or a log line unchecked.
    ///
    /// # Errors
    /// A permanent [`HandlerError`] when `ce_type` is not `T`, the payload does not decode, or a
    /// field breaks those rules (the error names the field, never its value): retrying cannot
    /// fix a malformed record, so it goes to the dead-letter topic.
    pub fn decode<T: prost::Message + prost::Name + Default + shop_proto::Untrusted>(
        &self,
    ) -> Result<T, HandlerError> {
        if !self.is::<T>() {
            return Err(HandlerError::permanent(anyhow::anyhow!(
                "expected event type {}, got {:?}",
                T::full_name(),
                self.event_type
            )));
        }
        let decoded = T::decode(self.payload.as_slice()).map_err(|e| {
            HandlerError::permanent(
                anyhow::Error::new(e).context(format!("malformed {} payload", T::full_name())),
            )
        })?;
        decoded.check_text().map_err(|violation| {
            HandlerError::permanent(
                anyhow::Error::new(violation)
                    .context(format!("untrusted {} payload refused", T::full_name())),
            )
        })?;
        Ok(decoded)
    }
}

/// `text` made safe for a PostgreSQL `text` column and a log line: control characters other
/// than newlines and tabs replaced, cut to at most `max` bytes (on a character boundary).
pub(crate) fn printable(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max));
    for c in text.chars() {
        let c = if c.is_control() && c != '\n' && c != '\t' {
            '\u{fffd}'
        } else {
            c
        };
        if out.len() + c.len_utf8() > max {
            break;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::{Header, OwnedHeaders, Timestamp};

    fn message(headers: &[(&str, &[u8])], key: Option<&[u8]>, offset: i64) -> OwnedMessage {
        let mut owned = OwnedHeaders::new();
        for (k, v) in headers {
            owned = owned.insert(Header {
                key: k,
                value: Some(*v),
            });
        }
        OwnedMessage::new(
            Some(b"payload".to_vec()),
            key.map(<[u8]>::to_vec),
            "order.events.v1".into(),
            Timestamp::CreateTime(1_700_000_000_000),
            3,
            offset,
            Some(owned),
        )
    }

    #[test]
    fn a_canonical_ce_id_is_the_inbox_key() {
        let event = InboundEvent::from_message(&message(
            &[
                ("ce_id", b"0192-abc"),
                ("ce_type", b"shop.order.v1.OrderPlaced"),
                ("ce_time", b"2026-01-02T03:04:05.678Z"),
            ],
            Some(b"order-1"),
            7,
        ));
        assert_eq!(event.id, "0192-abc");
        assert_eq!(
            event.event_type.as_deref(),
            Some("shop.order.v1.OrderPlaced")
        );
        assert_eq!(event.key.as_deref(), Some("order-1"));
        assert!(event.time.is_some());
        assert!(event.rejected.is_none());
    }

    #[test]
    fn hostile_ids_and_types_are_rejected_with_a_safe_stable_id() {
        for id in [
            b"a\0b".as_slice(),
            &[b'x'; 3000],
            &[0xff, 0xfe],
            b"line\nbreak",
        ] {
            let event = InboundEvent::from_message(&message(&[("ce_id", id)], Some(b"order-1"), 0));
            assert!(event.rejected.is_some(), "{id:?}");
            assert!(event.id.starts_with("invalid-ce_id/"), "{}", event.id);
            assert!(valid_text(&event.id, MAX_ID));
            let again = InboundEvent::from_message(&message(&[("ce_id", id)], Some(b"order-1"), 9));
            assert_eq!(event.id, again.id, "a replayed copy has the same id");
        }
        let event = InboundEvent::from_message(&message(
            &[
                ("ce_id", b"ok"),
                ("ce_type", b"shop.order.v1.OrderPlaced\0"),
            ],
            None,
            0,
        ));
        assert!(event.rejected.is_some());
        assert_eq!(event.event_type, None);
    }

    #[test]
    fn attributes_that_are_only_informative_are_dropped_when_invalid() {
        let event = InboundEvent::from_message(&message(
            &[
                ("ce_id", b"ok"),
                ("ce_time", b"yesterday"),
                ("ce_source", b"\x07bell"),
            ],
            Some(b"key\0with nul"),
            0,
        ));
        assert!(event.rejected.is_none());
        assert_eq!((event.time, event.source, event.key), (None, None, None));
        assert_eq!(event.raw_key.as_deref(), Some(b"key\0with nul".as_slice()));
    }

    #[test]
    fn records_without_ce_id_get_ids_that_differ_across_topic_incarnations() {
        let first = InboundEvent::from_message(&message(&[], Some(b"order-1"), 0));
        assert!(first.id.starts_with("order.events.v1/3/0/"), "{}", first.id);
        assert_eq!(
            first.id,
            InboundEvent::from_message(&message(&[], Some(b"order-1"), 0)).id
        );
        let recreated = InboundEvent::from_message(&message(&[], Some(b"order-2"), 0));
        assert_ne!(first.id, recreated.id);
        assert!(first.rejected.is_none());
    }

    #[test]
    fn printable_text_is_bounded_and_free_of_nul_bytes() {
        assert_eq!(printable("a\0b\nc", 100), "a\u{fffd}b\nc");
        assert_eq!(printable("ééé", 5), "éé");
    }
}
