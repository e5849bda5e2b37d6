use std::collections::BTreeMap;

use rdkafka::ClientConfig;
use rdkafka::error::KafkaResult;
use rdkafka::producer::FutureProducer;

/// How to reach Kafka, plus any librdkafka properties to set on every client.
#[derive(Clone, Debug)]
pub struct KafkaConfig {
    /// Comma-separated `host:port` list.
    pub bootstrap_servers: String,
    /// Extra librdkafka properties (e.g. `security.protocol`), applied last.
    pub properties: BTreeMap<String, String>,
}

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

    /// An idempotent producer: the broker drops retried duplicates and keeps per-partition order
    /// across retries, so a relay batch lands once and in order however often librdkafka retries.
    pub(crate) fn idempotent_producer(&self) -> KafkaResult<FutureProducer> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.bootstrap_servers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            // A relay batch is enqueued at once, so batching does not need to wait; 1 ms keeps
            // the commit-to-consume latency low under steady load.
            .set("linger.ms", "1")
            // A delivery that cannot succeed within this bound fails, the rows stay in the
            // outbox and the relay retries them later: nothing is lost while the broker is down.
            .set("message.timeout.ms", "30000");
        for (k, v) in &self.properties {
            config.set(k, v);
        }
        config.create()
    }
}
