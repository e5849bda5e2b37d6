//! Setting a record aside: a copy on the dead-letter topic with why, and a row in
//! `eventing_dead_letter` that makes replays skip it (an operator's replay of it for this
//! consumer excepted: failing again, it updates the row, which then counts that replay).

use std::time::{Duration, Instant};

use chrono::{SecondsFormat, Utc};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use rdkafka::util::Timeout;
use tokio_util::sync::CancellationToken;

use super::{Consumer, Handler, Stop};
use crate::inbound::printable;
use crate::metrics::{DeadLetterLabels, GroupTopicLabels};
use crate::{HandlerError, InboundEvent, headers};

/// After the dead-letter topic could not be written, how long later dead letters skip trying
/// (and go to the database at once), so that a missing topic does not cost every poison record
/// the full `dead_letter_timeout` of stalled consumption.
const UNWRITABLE_FOR: Duration = Duration::from_secs(60);

/// Longest error text kept in a header and in the database.
const MAX_ERROR: usize = 4096;

/// Why a record could not be dead-lettered.
pub(super) enum NotSetAside {
    /// Shutting down (the record is read again after the restart).
    Stop(Stop),
    /// The database did not record it: the record is tried again later.
    Database(sqlx::Error),
}

impl<H: Handler> Consumer<H> {
    /// Publishes `event` to the dead-letter topic with the error and its origin (within
    /// `dead_letter_timeout`), and records it in `eventing_dead_letter` (with the payload, key
    /// and headers, and whether the topic got its copy): replays skip it from then on.
    pub(super) async fn dead_letter(
        &self,
        event: &InboundEvent,
        failure: &HandlerError,
        attempts: u32,
        shutdown: &CancellationToken,
    ) -> Result<(), NotSetAside> {
        let error_text = printable(&format!("{failure}"), MAX_ERROR);
        let published = match self.dead_letter_topic_down.get() {
            Some(until) if Instant::now() < until => false,
            _ => {
                let published = tokio::select! {
                    () = shutdown.cancelled() => return Err(NotSetAside::Stop(Stop::Shutdown)),
                    published = tokio::time::timeout(
                        self.config.dead_letter_timeout,
                        self.publish_dead_letter(event, failure, &error_text, attempts),
                    ) => published,
                };
                match published {
                    Ok(Ok(())) => true,
                    Ok(Err(error)) => {
                        self.dead_letter_unwritable(event, &error);
                        false
                    }
                    Err(_) => {
                        self.dead_letter_unwritable(
                            event,
                            &format!(
                                "no acknowledgement within {:?}",
                                self.config.dead_letter_timeout
                            ),
                        );
                        false
                    }
                }
            }
        };

        let (names, values): (Vec<&str>, Vec<&[u8]>) = event
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_slice()))
            .unzip();
        sqlx::query(
            "INSERT INTO eventing_dead_letter \
             (consumer, event_id, event_type, topic, kafka_partition, kafka_offset, dead_letter_topic, \
              error, attempts, published, record_key, payload, header_names, header_values, replays) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) \
             ON CONFLICT (consumer, event_id) DO UPDATE SET \
               event_type = EXCLUDED.event_type, topic = EXCLUDED.topic, \
               kafka_partition = EXCLUDED.kafka_partition, kafka_offset = EXCLUDED.kafka_offset, \
               dead_letter_topic = EXCLUDED.dead_letter_topic, error = EXCLUDED.error, \
               attempts = EXCLUDED.attempts, failed_at = now(), published = EXCLUDED.published, \
               record_key = EXCLUDED.record_key, payload = EXCLUDED.payload, \
               header_names = EXCLUDED.header_names, header_values = EXCLUDED.header_values, \
               replays = EXCLUDED.replays \
             WHERE eventing_dead_letter.replays < EXCLUDED.replays",
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
        .bind(published)
        .bind(event.raw_key.as_deref())
        .bind(event.payload.as_slice())
        .bind(&names)
        .bind(&values)
        // A replay that failed again: the row now counts it (the admin API's loop guard).
        .bind(event.replay_for(&self.config.name).unwrap_or(0))
        .execute(&self.pool)
        .await
        .map_err(NotSetAside::Database)?;

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
        if published {
            tracing::error!(
                event.id = %event.id, event.type = event.event_type.as_deref().unwrap_or(""),
                topic = %event.topic, partition = event.partition, offset = event.offset,
                dead_letter_topic = %self.config.dead_letter_topic, error = %error_text, attempts,
                "Dead-lettered a record; the partition moves on."
            );
        } else {
            self.config
                .metrics
                .dead_letters_unpublished
                .get_or_create(&GroupTopicLabels {
                    group: self.config.group_id.clone(),
                    topic: event.topic.clone(),
                })
                .inc();
            tracing::error!(
                event.id = %event.id, event.type = event.event_type.as_deref().unwrap_or(""),
                topic = %event.topic, partition = event.partition, offset = event.offset,
                dead_letter_topic = %self.config.dead_letter_topic, error = %error_text, attempts,
                "Dead-lettered a record in the database only (eventing_dead_letter, published = false: payload, key and headers kept for a re-drive); the dead-letter topic could not be written. The partition moves on."
            );
        }
        Ok(())
    }

    fn dead_letter_unwritable(&self, event: &InboundEvent, error: &str) {
        self.dead_letter_topic_down
            .set(Some(Instant::now() + UNWRITABLE_FOR));
        tracing::error!(
            event.id = %event.id, dead_letter_topic = %self.config.dead_letter_topic, %error,
            "The dead-letter topic cannot be written; dead letters go to the database only for the next minute."
        );
    }

    /// One publication of the dead-letter copy; librdkafka retries it internally.
    async fn publish_dead_letter(
        &self,
        event: &InboundEvent,
        failure: &HandlerError,
        error_text: &str,
        attempts: u32,
    ) -> Result<(), String> {
        let partition = event.partition.to_string();
        let offset = event.offset.to_string();
        let failed_at = Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true);
        let attempts_text = attempts.to_string();
        let mut headers = OwnedHeaders::new_with_capacity(event.headers.len() + 8);
        for (key, value) in &event.headers {
            headers = headers.insert(Header {
                key: key.as_str(),
                value: Some(value.as_slice()),
            });
        }
        for (key, value) in [
            (headers::DLQ_ERROR, error_text),
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
        if let Some(key) = &event.raw_key {
            record = record.key(key.as_slice());
        }
        self.dead_letters
            .send(record, Timeout::After(self.config.dead_letter_timeout))
            .await
            .map(|_| ())
            .map_err(|(error, _)| error.to_string())
    }
}
