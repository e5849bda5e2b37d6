//! What the outbox, the relay and the consumers count and time, as Prometheus families.
//!
//! | Series | Meaning |
//! | --- | --- |
//! | `shop_outbox_backlog_events` | events committed but not yet acknowledged by Kafka |
//! | `shop_outbox_oldest_event_age_seconds` | age of the oldest of them that can still be published (0 when none): grows while the broker is down; parked events and those waiting behind them are left out (they have their own series) |
//! | `shop_outbox_parked_events` | events the relay gave up on (see [`retry_parked`](crate::retry_parked)) |
//! | `shop_outbox_held_events` | events waiting behind a parked event of their key |
//! | `shop_outbox_publish_failures_total{topic,reason}` | failed publishing attempts: `message_too_large`, `unknown_topic`, `invalid_timestamp`, `not_authorized`, `invalid_record`, `other` (the row's own; counted towards parking), `producer_fatal`, `purged`, `queue_full` (the producer's; not counted) |
//! | `shop_outbox_published_total{topic}` | events the relay published (and Kafka acknowledged) |
//! | `shop_outbox_publish_latency_seconds` | append (commit) to Kafka acknowledgement, per event |
//! | `shop_outbox_relay_batch_duration_seconds` | one relay round: read, publish, await acks, delete |
//! | `shop_outbox_relay_errors_total` | relay rounds that failed (database or Kafka) |
//! | `shop_outbox_relay_leader` | 1 on the replica that holds the relay lease |
//! | `shop_outbox_relay_stalled` | 1 while this replica leads, events wait and none was published for the relay's `stall_timeout` |
//! | `shop_consumer_messages_total{group,topic,outcome}` | records handled: `applied`, `duplicate` (skipped by the inbox), `dead_lettered`, `skipped` (it has a dead-letter row), `ignored` (a type the handler does not handle: no inbox row) |
//! | `shop_consumer_handler_errors_total{group,topic,kind}` | handler failures, `transient` or `permanent` |
//! | `shop_consumer_process_duration_seconds{group,topic}` | a record's fetch to its commit |
//! | `shop_consumer_event_delay_seconds{group,topic}` | the event's `ce_time` (its append) to its commit here: one saga hop |
//! | `shop_consumer_batch_size{group}` | records applied per database transaction |
//! | `shop_consumer_lag{group,topic,partition}` | records of the partition the group has not committed yet: its committed offset against the partition's end, read from the broker by the consumer's lag monitor, apart from its poll loop (see [`group_lag`](crate::group_lag)); every partition of the subscribed topics, whichever member has it |
//! | `shop_consumer_committed_offset{group,topic,partition}` | the group's committed offset (the next record it reads; the oldest retained one while it has committed none): flat while the group applies nothing |
//! | `shop_consumer_lag_errors_total{group}` | lag measurements that failed (the broker did not answer); the lag gauges keep their last values |
//! | `shop_dead_letters_total{group,topic,dead_letter_topic}` | records sent to a dead-letter topic |
//! | `shop_consumer_retrying_records{group,topic}` | partitions whose next record failed transiently and waits for its next try (the others flow) |
//! | `shop_eventing_table_rows{table}` | rows of `eventing_outbox`, `eventing_inbox`, `eventing_dead_letter` (PostgreSQL's live-row statistics, read at each scrape): the inbox stays within its retention window |
//! | `shop_consumer_retention_deleted_rows_total{group,table}` | inbox and dead-letter rows deleted past the retention window |
//! | `shop_consumer_retrying_seconds{group,topic}` | how long the longest-waiting of them has been failing (0 when none waits) |
//! | `shop_consumer_dead_letters_unpublished_total{group,topic}` | dead letters kept in the database only: the dead-letter topic could not be written |
//! | `shop_consumer_rebalances_total{group,kind}` | partitions `assigned` to or `revoked` from this member, one count per rebalance callback |

use prometheus_client::encoding::EncodeLabelSet;
use shop_telemetry::metrics::{
    Counter, Family, FloatGauge, Gauge, Histogram, HistogramFamily, Registry, batch_size_histogram,
    latency_family, latency_histogram,
};
use sqlx::PgPool;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct TopicLabels {
    pub(crate) topic: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct FailureLabels {
    pub(crate) topic: String,
    pub(crate) reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct GroupLabels {
    pub(crate) group: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct GroupTopicLabels {
    pub(crate) group: String,
    pub(crate) topic: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct OutcomeLabels {
    pub(crate) group: String,
    pub(crate) topic: String,
    pub(crate) outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ErrorLabels {
    pub(crate) group: String,
    pub(crate) topic: String,
    pub(crate) kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct PartitionLabels {
    pub(crate) group: String,
    pub(crate) topic: String,
    pub(crate) partition: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RebalanceLabels {
    pub(crate) group: String,
    pub(crate) kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct DeadLetterLabels {
    pub(crate) group: String,
    pub(crate) topic: String,
    pub(crate) dead_letter_topic: String,
}

/// The eventing families of one service process. Create it once with [`EventingMetrics::new`]
/// (registered) and give clones to the relay and the consumers through their configs; the
/// default is a set that counts but is exported nowhere.
#[derive(Clone, Debug)]
pub struct EventingMetrics {
    pub(crate) backlog: Gauge,
    pub(crate) oldest_age: FloatGauge,
    pub(crate) published: Family<TopicLabels, Counter>,
    pub(crate) publish_latency: Histogram,
    pub(crate) relay_batch: Histogram,
    pub(crate) relay_errors: Counter,
    pub(crate) relay_leader: Gauge,
    pub(crate) parked: Gauge,
    pub(crate) held: Gauge,
    pub(crate) publish_failures: Family<FailureLabels, Counter>,
    pub(crate) relay_stalled: Gauge,
    pub(crate) consumed: Family<OutcomeLabels, Counter>,
    pub(crate) handler_errors: Family<ErrorLabels, Counter>,
    pub(crate) process_duration: HistogramFamily<GroupTopicLabels>,
    pub(crate) event_delay: HistogramFamily<GroupTopicLabels>,
    pub(crate) batch_size: Family<GroupLabels, Histogram, fn() -> Histogram>,
    pub(crate) lag: Family<PartitionLabels, Gauge>,
    pub(crate) committed: Family<PartitionLabels, Gauge>,
    pub(crate) lag_errors: Family<GroupLabels, Counter>,
    pub(crate) dead_letters: Family<DeadLetterLabels, Counter>,
    pub(crate) retrying: Family<GroupTopicLabels, Gauge>,
    pub(crate) retrying_for: Family<GroupTopicLabels, FloatGauge>,
    pub(crate) dead_letters_unpublished: Family<GroupTopicLabels, Counter>,
    pub(crate) rebalances: Family<RebalanceLabels, Counter>,
    pub(crate) table_rows: Family<TableLabels, Gauge>,
    pub(crate) retention_deleted: Family<RetentionLabels, Counter>,
}

/// The tables `shop_eventing_table_rows` reports.
const TABLES: [&str; 3] = ["eventing_outbox", "eventing_inbox", "eventing_dead_letter"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct TableLabels {
    pub(crate) table: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RetentionLabels {
    pub(crate) group: String,
    pub(crate) table: &'static str,
}

impl Default for EventingMetrics {
    fn default() -> Self {
        Self {
            backlog: Gauge::default(),
            oldest_age: FloatGauge::default(),
            published: Family::default(),
            publish_latency: latency_histogram(),
            relay_batch: latency_histogram(),
            relay_errors: Counter::default(),
            relay_leader: Gauge::default(),
            parked: Gauge::default(),
            held: Gauge::default(),
            publish_failures: Family::default(),
            relay_stalled: Gauge::default(),
            consumed: Family::default(),
            handler_errors: Family::default(),
            process_duration: latency_family(),
            event_delay: latency_family(),
            batch_size: Family::new_with_constructor(batch_size_histogram),
            lag: Family::default(),
            committed: Family::default(),
            lag_errors: Family::default(),
            dead_letters: Family::default(),
            retrying: Family::default(),
            retrying_for: Family::default(),
            dead_letters_unpublished: Family::default(),
            rebalances: Family::default(),
            table_rows: Family::default(),
            retention_deleted: Family::default(),
        }
    }
}

impl EventingMetrics {
    /// The families, registered in `registry`.
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "shop_outbox_backlog_events",
            "Events committed to the outbox and not yet acknowledged by Kafka",
            m.backlog.clone(),
        );
        registry.register(
            "shop_outbox_oldest_event_age_seconds",
            "Age of the oldest event still in the outbox (0 when empty)",
            m.oldest_age.clone(),
        );
        registry.register(
            "shop_outbox_published",
            "Events the relay published and Kafka acknowledged",
            m.published.clone(),
        );
        registry.register(
            "shop_outbox_publish_latency_seconds",
            "From an event's append (its transaction's commit) to Kafka's acknowledgement",
            m.publish_latency.clone(),
        );
        registry.register(
            "shop_outbox_relay_batch_duration_seconds",
            "One relay round: read a batch, publish it, await the acks, delete it",
            m.relay_batch.clone(),
        );
        registry.register(
            "shop_outbox_relay_errors",
            "Relay rounds that failed (database or Kafka); the events stay in the outbox",
            m.relay_errors.clone(),
        );
        registry.register(
            "shop_outbox_relay_leader",
            "1 when this replica holds the relay lease and publishes the outbox",
            m.relay_leader.clone(),
        );
        registry.register(
            "shop_outbox_parked_events",
            "Events the relay gave up publishing; their key's later events wait behind them",
            m.parked.clone(),
        );
        registry.register(
            "shop_outbox_held_events",
            "Events waiting behind a parked event of their key",
            m.held.clone(),
        );
        registry.register(
            "shop_outbox_publish_failures",
            "Failed attempts to publish an outbox event, by reason",
            m.publish_failures.clone(),
        );
        registry.register(
            "shop_outbox_relay_stalled",
            "1 while this replica relays, events wait, and none was published for the stall timeout",
            m.relay_stalled.clone(),
        );
        registry.register(
            "shop_eventing_table_rows",
            "Rows of the eventing tables (eventing_outbox, eventing_inbox, eventing_dead_letter), from PostgreSQL's live-row statistics",
            m.table_rows.clone(),
        );
        registry.register(
            "shop_consumer_retention_deleted_rows",
            "Inbox and dead-letter rows deleted for being older than the consumer's retention window",
            m.retention_deleted.clone(),
        );
        registry.register(
            "shop_consumer_messages",
            "Records handled by a consumer group: applied, duplicate (skipped by the inbox), dead_lettered, skipped (it has a dead-letter row), or ignored (a type the handler does not handle: no inbox row)",
            m.consumed.clone(),
        );
        registry.register(
            "shop_consumer_handler_errors",
            "Handler failures by kind (transient ones are retried for as long as they last, permanent ones dead-lettered)",
            m.handler_errors.clone(),
        );
        registry.register(
            "shop_consumer_process_duration_seconds",
            "From a record's fetch to the commit of its effect",
            m.process_duration.clone(),
        );
        registry.register(
            "shop_consumer_event_delay_seconds",
            "From an event's append in its producer (ce_time) to the commit of its effect here",
            m.event_delay.clone(),
        );
        registry.register(
            "shop_consumer_batch_size",
            "Records applied in one database transaction",
            m.batch_size.clone(),
        );
        registry.register(
            "shop_consumer_lag",
            "Records of the partition the consumer group has not committed yet (its committed offset against the partition's end, read from the broker)",
            m.lag.clone(),
        );
        registry.register(
            "shop_consumer_committed_offset",
            "The consumer group's committed offset on the partition (the next record it reads; the oldest retained one while it has committed none)",
            m.committed.clone(),
        );
        registry.register(
            "shop_consumer_lag_errors",
            "Lag measurements of the consumer group that failed (the broker did not answer); the lag keeps its last value",
            m.lag_errors.clone(),
        );
        registry.register(
            "shop_dead_letters",
            "Records a consumer group set aside: sent to its dead-letter topic (or, when that cannot be written, kept in its database only)",
            m.dead_letters.clone(),
        );
        registry.register(
            "shop_consumer_retrying_records",
            "Partitions of a consumer group whose next record failed transiently and waits for its next try",
            m.retrying.clone(),
        );
        registry.register(
            "shop_consumer_retrying_seconds",
            "How long the longest-waiting record of a consumer group's topic has been failing transiently (0 when none waits)",
            m.retrying_for.clone(),
        );
        registry.register(
            "shop_consumer_dead_letters_unpublished",
            "Dead letters kept in the database only (eventing_dead_letter.published = false): the dead-letter topic could not be written",
            m.dead_letters_unpublished.clone(),
        );
        registry.register(
            "shop_consumer_rebalances",
            "Rebalance callbacks of this member: partitions assigned or revoked",
            m.rebalances.clone(),
        );
        m
    }

    /// Shows a consumer's counters from the start, at 0: a series that first appears at 1 hides
    /// that first increase from `rate()` and `increase()` (and so from the alerts).
    pub(crate) fn start_consumer(&self, group: &str, topics: &[String], dead_letter_topic: &str) {
        for topic in topics {
            for outcome in [
                "applied",
                "duplicate",
                "dead_lettered",
                "skipped",
                "ignored",
            ] {
                let _ = self.consumed.get_or_create(&OutcomeLabels {
                    group: group.to_owned(),
                    topic: topic.clone(),
                    outcome,
                });
            }
            for kind in ["transient", "permanent"] {
                let _ = self.handler_errors.get_or_create(&ErrorLabels {
                    group: group.to_owned(),
                    topic: topic.clone(),
                    kind,
                });
            }
            let _ = self.dead_letters.get_or_create(&DeadLetterLabels {
                group: group.to_owned(),
                topic: topic.clone(),
                dead_letter_topic: dead_letter_topic.to_owned(),
            });
            let labels = GroupTopicLabels {
                group: group.to_owned(),
                topic: topic.clone(),
            };
            let _ = self.dead_letters_unpublished.get_or_create(&labels);
            let _ = self.retrying.get_or_create(&labels);
            let _ = self.retrying_for.get_or_create(&labels);
        }
        let _ = self.lag_errors.get_or_create(&GroupLabels {
            group: group.to_owned(),
        });
        for kind in ["assigned", "revoked"] {
            let _ = self.rebalances.get_or_create(&RebalanceLabels {
                group: group.to_owned(),
                kind,
            });
        }
        for table in ["eventing_inbox", "eventing_dead_letter"] {
            let _ = self.retention_deleted.get_or_create(&RetentionLabels {
                group: group.to_owned(),
                table,
            });
        }
    }

    /// Reads the outbox's backlog, its parked and held events and the age of its oldest
    /// publishable event into the gauges. Called when `/metrics` is scraped, so the values are
    /// current and cost nothing between scrapes. Runs whether or not this replica relays: a
    /// broker outage shows as a growing age everywhere.
    ///
    /// # Errors
    /// Database errors (the gauges keep their previous values).
    pub async fn refresh_outbox(&self, pool: &PgPool) -> Result<(), sqlx::Error> {
        // The parked keys are few (the partial index holds only rows in trouble); the age leaves
        // them and the rows behind them out, so that `ShopOutboxEventsStuck` means "the relay
        // makes no progress" and `ShopOutboxEventsParked` "an operator must decide".
        let (backlog, parked, held, age): (i64, i64, i64, f64) = sqlx::query_as(
            "SELECT count(*), \
                    count(*) FILTER (WHERE o.parked_at IS NOT NULL), \
                    count(*) FILTER (WHERE o.parked_at IS NULL AND p.topic IS NOT NULL), \
                    coalesce(extract(epoch FROM clock_timestamp() - min(o.created_at) FILTER (WHERE p.topic IS NULL))::float8, 0) \
             FROM eventing_outbox AS o \
             LEFT JOIN (SELECT DISTINCT topic, partition_key FROM eventing_outbox \
                        WHERE attempts > 0 AND parked_at IS NOT NULL) AS p \
               ON p.topic = o.topic AND p.partition_key = o.partition_key",
        )
        .fetch_one(pool)
        .await?;
        self.backlog.set(backlog);
        self.parked.set(parked);
        self.held.set(held);
        self.oldest_age.set(age.max(0.0));
        // The statistics' live-row counts: kept current by every insert and delete (a backend
        // reports its counts within a second or so of its commits), reset exactly by each
        // vacuum. An exact count(*) of a big inbox at every scrape would cost more than the
        // figure is worth.
        let sizes: Vec<(String, i64)> = sqlx::query_as(
            "SELECT relname::text, n_live_tup FROM pg_stat_user_tables \
             WHERE schemaname = current_schema() \
               AND relname IN ('eventing_outbox', 'eventing_inbox', 'eventing_dead_letter')",
        )
        .fetch_all(pool)
        .await?;
        for (name, rows) in sizes {
            let Some(table) = TABLES.into_iter().find(|t| *t == name) else {
                continue;
            };
            self.table_rows
                .get_or_create(&TableLabels { table })
                .set(rows);
        }
        Ok(())
    }

    pub(crate) fn count_retention_deleted(&self, group: &str, table: &'static str, rows: u64) {
        self.retention_deleted
            .get_or_create(&RetentionLabels {
                group: group.to_owned(),
                table,
            })
            .inc_by(rows);
    }

    /// Shows the relay's failure counters from the start, at 0 (see [`Self::start_consumer`]).
    /// Topics appear as they fail; the reasons of a topic all appear with its first failure.
    pub(crate) fn count_publish_failure(&self, topic: &str, reason: &'static str) {
        for r in crate::relay::FAILURE_REASONS {
            let counter = self.publish_failures.get_or_create(&FailureLabels {
                topic: topic.to_owned(),
                reason: r,
            });
            if *r == reason {
                counter.inc();
            }
        }
    }
}
