//! `deploy/topology.yaml`, the one declaration of the suite's topics and processes, as typed
//! values: the local brokers create its topics, the run scripts and the process launcher take
//! ports and databases from it, and the drift test holds k8s and compose to it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Deserialize;

/// The whole declaration.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    /// The event topics.
    pub topics: Vec<TopicSpec>,
    /// How every `<group>.dlq` topic is made.
    pub dead_letter_topics: DeadLetterSpec,
    /// Every process of the suite.
    pub services: Vec<ServiceSpec>,
}

/// One event topic.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicSpec {
    pub name: String,
    /// The service whose outbox publishes to it.
    pub producer: String,
    pub partitions: i32,
    /// Production replication factor (a single local broker uses 1).
    pub replicas: i32,
    /// Production topic configuration (`spec.config` of the KafkaTopic).
    pub config: BTreeMap<String, String>,
}

/// The shape of every dead-letter topic.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterSpec {
    pub partitions: i32,
    pub replicas: i32,
    pub config: BTreeMap<String, String>,
}

/// One process.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    /// `order`, ..., `sales-analytics`.
    pub name: String,
    pub binary: String,
    /// Prefix of its own variables (`ORDER` → `ORDER_GRPC_ADDR`).
    pub env_prefix: String,
    /// Default gRPC port; none for a process without an API.
    #[serde(default)]
    pub grpc_port: Option<u16>,
    pub metrics_port: u16,
    /// Default admin API port (`shop.admin.v1.AdminService`); none for a process without one.
    #[serde(default)]
    pub admin_port: Option<u16>,
    /// The database the local run creates for it.
    pub database: String,
    /// Its consumer group and inbox name; dead letters go to `<group>.dlq`.
    pub consumer_group: String,
    pub produces: Vec<String>,
    pub consumes: Vec<String>,
    /// Part of `k8s/` and `docker-compose.yml` (the example subscriber is not).
    #[serde(default = "yes")]
    pub deployed: bool,
}

fn yes() -> bool {
    true
}

impl ServiceSpec {
    /// The Kafka user of this process (its KafkaUser in k8s, its SCRAM identity locally): the
    /// binary's name.
    pub fn kafka_user(&self) -> &str {
        &self.binary
    }

    /// What its Kafka identity may do, and nothing more: write the topics its outbox publishes
    /// and its own dead-letter topic, read the topics it consumes, join its consumer group.
    pub fn kafka_grants(&self) -> crate::apache::Grants {
        let mut write = self.produces.clone();
        write.push(format!("{}.dlq", self.consumer_group));
        crate::apache::Grants {
            user: self.kafka_user().to_owned(),
            write,
            read: self.consumes.clone(),
            groups: vec![self.consumer_group.clone()],
        }
    }
}

/// A topic as a broker should create it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicToCreate {
    pub name: String,
    pub partitions: i32,
    /// Production replication factor.
    pub replicas: i32,
    pub config: BTreeMap<String, String>,
}

impl Topology {
    /// The repository's `deploy/topology.yaml`.
    ///
    /// # Panics
    /// When it cannot be read or parsed (a broken checkout).
    pub fn of_repository() -> Self {
        Self::load(&Self::repository_file()).expect("deploy/topology.yaml")
    }

    /// Where the repository's declaration is (found from this crate's source directory).
    pub fn repository_file() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/topology.yaml")
    }

    /// Reads and parses `path`.
    ///
    /// # Errors
    /// When it cannot be read or is not a valid declaration.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        serde_norway::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }

    /// The process named `name`.
    ///
    /// # Panics
    /// When there is none (a typo in a caller).
    pub fn service(&self, name: &str) -> &ServiceSpec {
        self.services
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no service {name} in deploy/topology.yaml"))
    }

    /// Every topic to create: the event topics, then one dead-letter topic per consumer group
    /// (of the deployed services only, when `deployed_only`).
    pub fn topics_to_create(&self, deployed_only: bool) -> Vec<TopicToCreate> {
        let mut out: Vec<TopicToCreate> = self
            .topics
            .iter()
            .map(|t| TopicToCreate {
                name: t.name.clone(),
                partitions: t.partitions,
                replicas: t.replicas,
                config: t.config.clone(),
            })
            .collect();
        for service in &self.services {
            if deployed_only && !service.deployed {
                continue;
            }
            out.push(TopicToCreate {
                name: format!("{}.dlq", service.consumer_group),
                partitions: self.dead_letter_topics.partitions,
                replicas: self.dead_letter_topics.replicas,
                config: self.dead_letter_topics.config.clone(),
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_repository_declaration_parses_and_is_consistent() {
        let topology = Topology::of_repository();
        let topics: Vec<&str> = topology.topics.iter().map(|t| t.name.as_str()).collect();
        for service in &topology.services {
            for topic in service.produces.iter().chain(&service.consumes) {
                assert!(
                    topics.contains(&topic.as_str()),
                    "{} uses {topic}, which is not declared",
                    service.name
                );
            }
        }
        for topic in &topology.topics {
            let producers: Vec<&str> = topology
                .services
                .iter()
                .filter(|s| s.produces.contains(&topic.name))
                .map(|s| s.name.as_str())
                .collect();
            assert_eq!(
                producers,
                [topic.producer.as_str()],
                "producer of {}",
                topic.name
            );
        }
        let dlqs = topology.topics_to_create(false).len() - topology.topics.len();
        assert_eq!(dlqs, topology.services.len());
    }
}
