//! What a [`Consumer`](crate::Consumer) is told, and the librdkafka settings it derives from
//! that: each one chosen for Apache Kafka and explained where it is set.

use std::time::Duration;

use rdkafka::ClientConfig;

use crate::{EventingMetrics, Failpoints, KafkaConfig, RetryPolicy};

/// Where a consumer group with no committed offset starts reading. A group that has committed
/// offsets always resumes from them; this only decides a new group's (or a reset group's) start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartPosition {
    /// From the oldest retained record: a new subscriber backfills history.
    Earliest,
    /// From records produced after it joined: live events only.
    Latest,
}

/// Settings of a [`Consumer`](crate::Consumer).
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
    /// Backoff between tries of a record that failed transiently: jittered, exponential from
    /// `initial_backoff`, capped at `max_backoff`. A transient failure is retried for as long
    /// as it lasts (its partition waits, the others flow; `shop_consumer_retrying_records`
    /// shows it), never dead-lettered: `max_attempts` does not apply to consumers.
    pub retry: RetryPolicy,
    /// Most records applied in one database transaction. Records already fetched are batched;
    /// the consumer never waits to fill a batch.
    pub max_batch: usize,
    /// Kafka group session timeout: how long the group waits for a dead member before its
    /// partitions move (`session.timeout.ms`; heartbeats go every third of it).
    pub session_timeout: Duration,
    /// Longest the consumer may go without polling Kafka before the group gives its partitions
    /// to another member (`max.poll.interval.ms`). Retries never count against it (a failing
    /// partition is paused and polling goes on); only one batch's transaction or one dead
    /// letter's publication (at most `dead_letter_timeout`) runs between polls.
    pub max_poll_interval: Duration,
    /// Longest a fetch waits on the broker for new records (`fetch.wait.max.ms`). Apache Kafka
    /// answers as soon as a record arrives, so there this only bounds idle polling (one fetch
    /// per partition leader per this interval while idle); brokers that hold fetches for the
    /// whole wait (librdkafka's mock cluster, tansu) add up to this much latency per hop.
    pub max_fetch_wait: Duration,
    /// How often the consumer's lag monitor reads the group's committed offsets and the
    /// partitions' ends from the broker (`shop_consumer_lag`, `shop_consumer_committed_offset`).
    /// Each time costs one metadata request per topic, one offset fetch from the group
    /// coordinator and one offset listing per partition leader.
    pub lag_interval: Duration,
    /// Longest the consumer tries to publish one dead letter. When the dead-letter topic
    /// cannot be written in that time (missing, not authorised, record too large), the dead
    /// letter is kept in `eventing_dead_letter` only (payload, key and headers included, for a
    /// later re-drive), `shop_consumer_dead_letters_unpublished_total` counts it, and the
    /// partition moves on.
    pub dead_letter_timeout: Duration,
    /// How long inbox rows (and published dead-letter rows) are kept; see [`Retention`].
    pub retention: Retention,
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
            // A dead replica's partitions move within 10 s. Heartbeats come from librdkafka's
            // own thread, so a busy handler never misses one; the broker's allowed range
            // (group.min.session.timeout.ms) starts at 6 s.
            session_timeout: Duration::from_secs(10),
            // Between two polls the loop runs one batch (normally milliseconds; the pool waits
            // at most 10 s for a connection) or one dead letter (at most 10 s). Two minutes is
            // far above that, and bounds how long a member wedged in a statement (a lock held
            // by a vanished peer) keeps its partitions from the other replicas.
            max_poll_interval: Duration::from_secs(120),
            // Kept low for the brokers that hold idle fetches (the mock cluster of the tests
            // and the run command): each hop would wait up to this long there. On Apache Kafka
            // it adds no latency and costs an idle consumer of 6 partitions 38 fetch requests/s
            // and ~7 % of a core of the broker, against 2/s at 500 ms (measured on this
            // project's 2-core machine with `cargo run -p shop-testkit --example idle_fetch --
            // 20 100 500`); a deployment with many idle groups on Kafka can raise it.
            max_fetch_wait: Duration::from_millis(20),
            lag_interval: Duration::from_secs(5),
            dead_letter_timeout: Duration::from_secs(10),
            retention: Retention::default(),
            metrics: EventingMetrics::default(),
            failpoints: Failpoints::from_env(),
        }
    }
}

/// How long a consumer keeps the rows that make it idempotent, and how it deletes the older
/// ones (every replica sweeps; they share the work).
///
/// An inbox row protects against a second delivery of its record, and every second delivery
/// comes from the topic: a redelivery after a crash or a rebalance, a relay that published
/// twice, a replay by an operator from what the topic still holds. Kafka deletes a topic's
/// records a segment at a time, once the segment's newest record is older than `retention.ms`;
/// a segment spans up to `segment.ms` (Kafka's default: 7 days). So a record can be read for up
/// to `retention.ms + segment.ms` after it was published, and its row is worth keeping that
/// long, and no longer. The suite's topics keep 7 days with Kafka's default segments
/// (`deploy/topology.yaml`): 14 days, and the default window adds a day for clocks (the
/// record's timestamp is the relay's, the row's the database's). Each service reads it from
/// `<SERVICE>_INBOX_RETENTION_MS`, which `crates/suite/tests/deployment.rs` holds to the
/// retention of the topics it consumes. Raise the window with a topic's retention (or
/// `segment.ms`): rows deleted while their records can still be replayed let a replay apply them
/// again.
///
/// Dead-letter rows, which make a replay of the source topic skip their record, follow the same
/// window once their copy reached the dead-letter topic (the dead-letter topic keeps its own
/// copy 30 days). Those kept only in the database (`published = false`) stay until re-driven or
/// dropped. Rows are deleted oldest first, `batch` at a time, each batch its own short
/// transaction, every `every`, through the indexes on `(consumer, processed_at)` and
/// `(consumer, failed_at)`: the sweep never holds many locks nor competes with the consumer
/// for long.
#[derive(Clone, Debug)]
pub struct Retention {
    /// Rows older than this are deleted.
    pub window: Duration,
    /// Time between two sweeps.
    pub every: Duration,
    /// Most rows one statement deletes.
    pub batch: u32,
}

impl Retention {
    /// Kafka's default `segment.ms` (`log.roll.hours` = 168), which the suite's topics keep.
    pub const KAFKA_DEFAULT_SEGMENT: Duration = Duration::from_secs(7 * 24 * 3600);
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            // retention.ms (7 d) + segment.ms (7 d) + a day.
            window: Duration::from_secs(15 * 24 * 3600),
            every: Duration::from_secs(60),
            batch: 1000,
        }
    }
}

/// Properties the consumer sets itself, with what rests on each: a [`KafkaConfig`] property
/// for one of them is ignored (with a warning), so that a setting meant for every client (or a
/// mistake) cannot break the consumer's guarantees.
const OWNED: &[(&str, &str)] = &[
    ("group.id", "the group is ConsumerConfig::group_id"),
    ("client.id", "the client id is ConsumerConfig::name"),
    (
        "enable.auto.offset.store",
        "an offset is stored only after its record's effect committed",
    ),
    (
        "enable.auto.commit",
        "stored offsets are committed in the background and on rebalance",
    ),
    (
        "enable.partition.eof",
        "the consumer does not expect end-of-partition events",
    ),
    (
        "partition.assignment.strategy",
        "pause and retry state follows incremental (cooperative) rebalances",
    ),
    (
        "group.protocol",
        "the classic group protocol (see below) is the one tested",
    ),
    ("auto.offset.reset", "the start is ConsumerConfig::start"),
    (
        "session.timeout.ms",
        "set it with ConsumerConfig::session_timeout",
    ),
    (
        "heartbeat.interval.ms",
        "derived from ConsumerConfig::session_timeout",
    ),
    (
        "max.poll.interval.ms",
        "set it with ConsumerConfig::max_poll_interval",
    ),
    (
        "fetch.wait.max.ms",
        "set it with ConsumerConfig::max_fetch_wait",
    ),
    (
        "statistics.interval.ms",
        "the lag is read from the broker every ConsumerConfig::lag_interval, not from statistics",
    ),
];

/// The librdkafka configuration of the consumer, and the [`KafkaConfig`] properties it
/// ignored (with why).
pub(super) fn client_config(
    kafka: &KafkaConfig,
    config: &ConsumerConfig,
) -> (ClientConfig, Vec<(String, &'static str)>) {
    // Every owned property is set below, after the deployment's: theirs is overridden.
    let mut client = kafka.client_config();
    let ignored = kafka
        .properties
        .keys()
        .filter_map(|key| {
            OWNED
                .iter()
                .find(|(owned, _)| owned == key)
                .map(|(_, why)| (key.clone(), *why))
        })
        .collect();
    let millis = |d: Duration| d.as_millis().to_string();
    client
        .set("group.id", &config.group_id)
        .set("client.id", &config.name)
        // Offsets are stored by hand after the database commit and committed in the
        // background (and for revoked partitions, on revocation); nothing is committed that
        // is not applied.
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        // Incremental rebalances: when a replica joins or leaves (an HPA scale, a rolling
        // restart) only the partitions that move stop; the others keep being consumed, their
        // paused-for-retry state included. The rebalance callbacks are then incremental
        // (assign and revoke name only the partitions that move), which the retry state and
        // the offset store handle (see `Consumer::run`).
        .set("partition.assignment.strategy", "cooperative-sticky")
        // Not KIP-848's `consumer` protocol: the bundled librdkafka is 2.12, whose
        // implementation of it can stall a member's assignment; the fixes came with 2.15.
        .set("group.protocol", "classic")
        .set("session.timeout.ms", millis(config.session_timeout))
        .set(
            "heartbeat.interval.ms",
            millis((config.session_timeout / 3).max(Duration::from_millis(500))),
        )
        .set("max.poll.interval.ms", millis(config.max_poll_interval))
        .set("fetch.wait.max.ms", millis(config.max_fetch_wait))
        // Statistics would only cost: nothing reads them (see `lag_interval`).
        .set("statistics.interval.ms", "0")
        .set(
            "auto.offset.reset",
            match config.start {
                StartPosition::Earliest => "earliest",
                StartPosition::Latest => "latest",
            },
        );
    (client, ignored)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_properties_cannot_override_what_the_consumer_relies_on() {
        let kafka = KafkaConfig::new("127.0.0.1:9092")
            .with("enable.auto.offset.store", "true")
            .with("enable.auto.commit", "false")
            .with("partition.assignment.strategy", "range")
            .with("group.protocol", "consumer")
            .with("max.poll.interval.ms", "10")
            .with("security.protocol", "SASL_SSL");
        let mut config = ConsumerConfig::new("billing", ["order.events.v1"]);
        config.max_poll_interval = Duration::from_secs(90);
        let (client, ignored) = client_config(&kafka, &config);
        assert_eq!(client.get("enable.auto.offset.store"), Some("false"));
        assert_eq!(client.get("enable.auto.commit"), Some("true"));
        assert_eq!(
            client.get("partition.assignment.strategy"),
            Some("cooperative-sticky")
        );
        assert_eq!(client.get("group.protocol"), Some("classic"));
        assert_eq!(client.get("max.poll.interval.ms"), Some("90000"));
        assert_eq!(client.get("group.id"), Some("billing"));
        // Everything else is passed on.
        assert_eq!(client.get("security.protocol"), Some("SASL_SSL"));
        let mut names: Vec<&str> = ignored.iter().map(|(k, _)| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "enable.auto.commit",
                "enable.auto.offset.store",
                "group.protocol",
                "max.poll.interval.ms",
                "partition.assignment.strategy"
            ]
        );
    }

    #[test]
    fn heartbeats_go_every_third_of_the_session_timeout() {
        let mut config = ConsumerConfig::new("billing", ["order.events.v1"]);
        config.session_timeout = Duration::from_secs(6);
        let (client, _) = client_config(&KafkaConfig::new("k:9092"), &config);
        assert_eq!(client.get("session.timeout.ms"), Some("6000"));
        assert_eq!(client.get("heartbeat.interval.ms"), Some("2000"));
    }
}
