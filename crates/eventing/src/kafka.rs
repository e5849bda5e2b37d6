use std::collections::BTreeMap;

use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::producer::FutureProducer;

/// How to reach Kafka, plus any librdkafka properties to set on every client.
#[derive(Clone, Debug)]
pub struct KafkaConfig {
    /// Comma-separated `host:port` list.
    pub bootstrap_servers: String,
    /// Extra librdkafka properties (e.g. `security.protocol`), applied last. The properties the
    /// producers' delivery guarantees rest on cannot be changed here: a producer built with a
    /// different `enable.idempotence` or `acks` (and, for the relay, `message.timeout.ms`) is
    /// refused with an error naming the property.
    pub properties: BTreeMap<String, String>,
}

/// A property a producer sets itself, the values it accepts from [`KafkaConfig::properties`]
/// (the same setting, spelled as librdkafka allows), and why it must have it.
struct Guarantee {
    names: &'static [&'static str],
    value: &'static str,
    accepted: &'static [&'static str],
    why: &'static str,
}

/// What every producer of the crate keeps: the broker writes each record once and in order per
/// partition however often librdkafka retries, and only once all in-sync replicas have it.
const IDEMPOTENT: [Guarantee; 2] = [
    Guarantee {
        names: &["enable.idempotence"],
        value: "true",
        accepted: &["true"],
        why: "retries must neither duplicate nor reorder a partition's records",
    },
    Guarantee {
        names: &["acks", "request.required.acks"],
        value: "all",
        accepted: &["all", "-1"],
        why: "an acknowledged event must survive the loss of the partition leader",
    },
];

/// What the relay adds (see `relay_producer`).
const RELAY: [Guarantee; 1] = [Guarantee {
    names: &["message.timeout.ms", "delivery.timeout.ms"],
    value: "0",
    accepted: &["0"],
    why: "a message that times out leaves a gap that a later message fills first",
}];

impl KafkaConfig {
    /// A configuration for the given bootstrap servers.
    pub fn new(bootstrap_servers: impl Into<String>) -> Self {
        Self {
            bootstrap_servers: bootstrap_servers.into(),
            properties: BTreeMap::new(),
        }
    }

    /// Sets a librdkafka property on every client built from this configuration.
    #[must_use]
    pub fn with(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.insert(key.into(), value.into());
        self
    }

    pub(crate) fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.bootstrap_servers);
        for (k, v) in &self.properties {
            config.set(k, v);
        }
        config
    }

    /// A producer with `defaults` (which [`KafkaConfig::properties`] may change), then the
    /// properties, then `guarantees` (which they may only repeat).
    ///
    /// A conflicting property is refused rather than ignored: whoever set `acks=1` meant
    /// something by it, and a service that starts with other guarantees than its configuration
    /// says is worse than one that does not start and says why.
    fn producer(
        &self,
        defaults: &[(&str, &str)],
        guarantees: &[&[Guarantee]],
    ) -> KafkaResult<FutureProducer> {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.bootstrap_servers);
        for (k, v) in defaults {
            config.set(*k, *v);
        }
        for (k, v) in &self.properties {
            config.set(k, v);
        }
        for guarantee in guarantees.iter().flat_map(|g| g.iter()) {
            for name in guarantee.names {
                if let Some(value) = self.properties.get(*name)
                    && !guarantee
                        .accepted
                        .iter()
                        .any(|a| a.eq_ignore_ascii_case(value.trim()))
                {
                    return Err(KafkaError::ClientCreation(format!(
                        "Kafka property {name}={value} is refused: the producer needs {}={} ({})",
                        guarantee.names[0], guarantee.value, guarantee.why
                    )));
                }
            }
            config.set(guarantee.names[0], guarantee.value);
        }
        config.create()
    }

    /// An idempotent producer: the broker drops retried duplicates and keeps per-partition order
    /// across retries, so a batch lands once and in order however often librdkafka retries.
    pub(crate) fn idempotent_producer(&self) -> KafkaResult<FutureProducer> {
        self.producer(
            &[
                ("linger.ms", "1"),
                // A delivery that cannot succeed within this bound fails and is retried by the
                // caller.
                ("message.timeout.ms", "30000"),
            ],
            &[&IDEMPOTENT],
        )
    }

    /// The outbox relay's producer: idempotent (no duplicates from its own retries, a partition
    /// written in order), and never giving up on a message by itself.
    ///
    /// - `message.timeout.ms=0` (infinite). With idempotence, queued messages that time out are
    ///   skipped and the later ones written (librdkafka INTRODUCTION.md, "Message timeout
    ///   considerations": 1, 4, 5): a failure that says nothing about the message, only about
    ///   the wait, and that would leave the relay guessing whether it was written. Nothing is
    ///   lost by waiting: while the broker is away the relay keeps its round in flight (and
    ///   reports itself stalled after its `stall_timeout`), and a stopping relay waits for it only
    ///   for its shutdown grace (3 s) before dropping the producer; whatever was not acknowledged
    ///   stays in the outbox for the next leader. (The relay keeps a key in order by itself: it
    ///   produces a key's next event only once the previous one is acknowledged.)
    /// - `allow.auto.create.topics=false`: topics are provisioned with their partitions,
    ///   replication and retention; one created on first use with the broker's defaults is a
    ///   worse outcome than an event that waits (and is parked) until the topic exists.
    /// - `topic.metadata.propagation.max.ms=1000`: how long a topic the broker does not know is
    ///   given before its messages fail. A relay round waits for its slowest delivery, so this is
    ///   how long a missing topic holds up the other topics' events once per producer; a topic
    ///   created moments ago and reported missing only costs a retry.
    ///   (librdkafka asks for a missing topic's metadata again every second, so a topic created
    ///   later is seen within a second, and its events' next try succeeds.)
    pub(crate) fn relay_producer(&self) -> KafkaResult<FutureProducer> {
        self.producer(
            &[
                // A relay batch is enqueued at once, so batching does not need to wait; 1 ms
                // keeps the commit-to-consume latency low under steady load.
                ("linger.ms", "1"),
                ("allow.auto.create.topics", "false"),
                ("topic.metadata.propagation.max.ms", "1000"),
            ],
            &[&IDEMPOTENT, &RELAY],
        )
    }
}
