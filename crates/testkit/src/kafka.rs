use std::sync::{Mutex, mpsc};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::{RDKafkaApiKey, RDKafkaErrorCode, RDKafkaRespErr};
use rdkafka::{Offset, TopicPartitionList};

use crate::apache::{ApacheKafka, LIBS_VAR};

/// A Kafka-protocol broker for one test.
///
/// - [`TestKafka::start`]: the shared broker of the run. With `KAFKA_BOOTSTRAP_SERVERS` set, that
///   external broker (the Apache Kafka of `deploy/test.sh --broker kafka`); otherwise a private
///   librdkafka mock cluster, listening on loopback ports, alive as long as this value.
/// - [`TestKafka::own`]: a broker of this test's own, which it may take down and bring back: a
///   mock cluster, or in the Apache Kafka run (`SHOP_TEST_BROKER=kafka`) a private Apache Kafka
///   process killed with SIGKILL and restarted on the same log directory.
#[derive(Debug)]
pub struct TestKafka {
    bootstrap: String,
    // The mock cluster is not `Send`, so a thread owns it and serves requests.
    mock: Option<mpsc::Sender<MockRequest>>,
    /// A private Apache Kafka process, and the directory it lives in (removed on drop).
    apache: Option<(Mutex<ApacheKafka>, std::path::PathBuf)>,
}

impl Drop for TestKafka {
    fn drop(&mut self) {
        if let Some((broker, dir)) = self.apache.take() {
            drop(broker);
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Which broker `deploy/test.sh` runs the tests against: `SHOP_TEST_BROKER` (`mock` or `kafka`).
pub fn test_broker_is_apache() -> bool {
    std::env::var("SHOP_TEST_BROKER").is_ok_and(|b| b == "kafka")
}

/// A request to the mock-cluster thread, with where to answer.
enum MockRequest {
    CreateTopic(String, i32, mpsc::Sender<Result<(), String>>),
    /// Every broker down (true) or up again (false).
    BrokersDown(bool, mpsc::Sender<Result<(), String>>),
    /// The next requests of this kind fail with these errors, one each.
    RequestErrors(
        RDKafkaApiKey,
        Vec<RDKafkaRespErr>,
        mpsc::Sender<Result<(), String>>,
    ),
    /// Metadata requests for the topic answer with this error.
    TopicError(String, RDKafkaRespErr, mpsc::Sender<Result<(), String>>),
}

/// A record read back from a topic.
#[derive(Clone, Debug)]
pub struct Record {
    pub key: Option<String>,
    pub payload: Vec<u8>,
    pub partition: i32,
    pub offset: i64,
    pub headers: Vec<(String, String)>,
}

impl Record {
    /// The first header named `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Where a consumer group stands on one partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartitionOffsets {
    pub partition: i32,
    /// The oldest retained offset.
    pub low: i64,
    /// The offset the next record gets.
    pub high: i64,
    /// The group's committed offset (the next record it will read), if any.
    pub committed: Option<i64>,
}

/// A client speaking for consumer group `group` without joining it (offset fetches and commits
/// only), as Kafka's own `kafka-consumer-groups` tool does.
fn group_client(bootstrap: &str, group: &str) -> anyhow::Result<BaseConsumer> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()?)
}

impl TestKafka {
    /// The external broker, or a new mock cluster.
    ///
    /// # Panics
    /// When the mock cluster cannot start.
    pub fn start() -> Self {
        if let Ok(bootstrap) = std::env::var("KAFKA_BOOTSTRAP_SERVERS")
            && !bootstrap.trim().is_empty()
        {
            return Self {
                bootstrap,
                mock: None,
                apache: None,
            };
        }
        Self::mock(1)
    }

    /// A broker of this test's own, which it may take down ([`TestKafka::set_brokers_down`]):
    /// in the Apache Kafka run a private Apache Kafka process, otherwise a mock cluster.
    ///
    /// # Panics
    /// When the broker cannot start (in the Apache Kafka run: Java or the jars are missing).
    pub async fn own() -> Self {
        if test_broker_is_apache() {
            return Self::apache().await;
        }
        Self::mock(1)
    }

    /// A private Apache Kafka broker from the jars in `SHOP_KAFKA_LIBS`, whatever the run.
    ///
    /// # Panics
    /// When `SHOP_KAFKA_LIBS` is unset or the broker does not start.
    pub async fn apache() -> Self {
        let libs = ApacheKafka::libs_from_env().unwrap_or_else(|| {
            panic!("{LIBS_VAR} is unset: run the tests through deploy/test.sh --broker kafka")
        });
        let dir =
            std::env::temp_dir().join(format!("shop-test-kafka-{}", uuid::Uuid::new_v4().simple()));
        let mut broker = ApacheKafka::new(libs, &dir, "384m");
        if let Err(error) = broker.start().await {
            panic!("a private Apache Kafka for this test did not start: {error:#}");
        }
        Self {
            bootstrap: broker.bootstrap_servers(),
            mock: None,
            apache: Some((Mutex::new(broker), dir)),
        }
    }

    /// A new mock cluster with `brokers` brokers, whatever the environment says.
    ///
    /// # Panics
    /// When the mock cluster cannot start.
    pub fn mock(brokers: i32) -> Self {
        let (ready_tx, ready_rx) = mpsc::channel();
        let (cmd_tx, cmd_rx) = mpsc::channel::<MockRequest>();
        std::thread::Builder::new()
            .name("mock-kafka".into())
            .spawn(move || {
                let cluster = match MockCluster::new(brokers) {
                    Ok(cluster) => cluster,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(cluster.bootstrap_servers()));
                for request in cmd_rx {
                    match request {
                        MockRequest::CreateTopic(topic, partitions, reply) => {
                            let _ = reply.send(
                                cluster
                                    .create_topic(&topic, partitions, 1)
                                    .map_err(|e| e.to_string()),
                            );
                        }
                        MockRequest::BrokersDown(down, reply) => {
                            let result = (1..=brokers).try_for_each(|id| {
                                if down {
                                    cluster.broker_down(id)
                                } else {
                                    cluster.broker_up(id)
                                }
                            });
                            let _ = reply.send(result.map_err(|e| e.to_string()));
                        }
                        MockRequest::RequestErrors(api, errors, reply) => {
                            cluster.request_errors(api, &errors);
                            let _ = reply.send(Ok(()));
                        }
                        MockRequest::TopicError(topic, error, reply) => {
                            let _ = reply.send(
                                cluster
                                    .topic_error(&topic, error)
                                    .map_err(|e| e.to_string()),
                            );
                        }
                    }
                }
                // The TestKafka is gone, but clients of it may still be closing (a consumer
                // leaving its group waits for the coordinator's answer, and blocks forever
                // once the cluster is destroyed). Keep the cluster until the process exits.
                loop {
                    std::thread::park();
                }
            })
            .expect("spawn mock-kafka thread");
        let bootstrap = ready_rx
            .recv()
            .expect("mock thread died")
            .expect("mock cluster failed to start");
        Self {
            bootstrap,
            mock: Some(cmd_tx),
            apache: None,
        }
    }

    /// `host:port` list to give clients.
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }

    /// Whether this is the in-process mock cluster.
    pub fn is_mock(&self) -> bool {
        self.mock.is_some()
    }

    /// Whether this is a private Apache Kafka process.
    pub fn is_apache(&self) -> bool {
        self.apache.is_some()
    }

    /// Takes the broker down (`true`) or brings it back (`false`). A mock cluster's brokers
    /// refuse connections while down; a private Apache Kafka is killed with SIGKILL and started
    /// again on the same log directory (without waiting for it to serve: clients reconnect by
    /// themselves). Returns `false` for the shared external broker, which a test cannot stop.
    ///
    /// # Panics
    /// When the mock cluster refuses or the Apache Kafka process cannot be started again.
    pub fn set_brokers_down(&self, down: bool) -> bool {
        if let Some((broker, _)) = &self.apache {
            let mut broker = broker
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if down {
                broker.kill();
            } else {
                broker
                    .spawn()
                    .unwrap_or_else(|e| panic!("restarting Apache Kafka: {e:#}"));
            }
            return true;
        }
        if self.mock.is_none() {
            return false;
        }
        self.ask_mock(|reply| MockRequest::BrokersDown(down, reply))
            .expect("mock broker_down failed");
        true
    }

    /// The JVM's pid of a private Apache Kafka, while it runs.
    pub fn apache_pid(&self) -> Option<u32> {
        let (broker, _) = self.apache.as_ref()?;
        broker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pid()
    }

    /// Makes the mock cluster answer the next `errors.len()` requests of kind `api` with these
    /// errors, one request each (e.g. a Produce request rejected with `INVALID_TIMESTAMP`, as a
    /// broker with `log.message.timestamp.before.max.ms` rejects an old record). Returns `false`
    /// for an external broker, which a test cannot program.
    ///
    /// # Panics
    /// When the mock cluster refuses.
    pub fn fail_requests(&self, api: RDKafkaApiKey, errors: &[RDKafkaRespErr]) -> bool {
        if self.mock.is_none() {
            return false;
        }
        self.ask_mock(|reply| MockRequest::RequestErrors(api, errors.to_vec(), reply))
            .expect("mock request_errors failed");
        true
    }

    /// Makes the mock cluster answer metadata requests for `topic` with `error`; with
    /// `UNKNOWN_TOPIC_OR_PART` it behaves as a broker with automatic topic creation off does for
    /// a topic nobody created (the mock itself creates topics on first use).
    /// `RD_KAFKA_RESP_ERR_NO_ERROR` clears it. Returns `false` for an external broker.
    ///
    /// # Panics
    /// When the mock cluster refuses.
    pub fn set_topic_error(&self, topic: &str, error: RDKafkaRespErr) -> bool {
        if self.mock.is_none() {
            return false;
        }
        self.ask_mock(|reply| MockRequest::TopicError(topic.to_owned(), error, reply))
            .expect("mock topic_error failed");
        true
    }

    fn ask_mock(
        &self,
        request: impl FnOnce(mpsc::Sender<Result<(), String>>) -> MockRequest,
    ) -> Result<(), String> {
        let mock = self.mock.as_ref().ok_or("not a mock cluster")?;
        let (reply_tx, reply_rx) = mpsc::channel();
        mock.send(request(reply_tx)).expect("mock thread gone");
        reply_rx.recv().expect("mock thread gone")
    }

    /// A topic name no other test uses.
    pub fn unique_topic(prefix: &str) -> String {
        format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
    }

    /// Creates `topic` with `partitions` partitions (an existing topic is fine).
    ///
    /// # Panics
    /// When the broker refuses.
    pub async fn create_topic(&self, topic: &str, partitions: i32) {
        if self.mock.is_some() {
            self.ask_mock(|reply| MockRequest::CreateTopic(topic.to_owned(), partitions, reply))
                .expect("mock create_topic failed");
            return;
        }
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .create()
            .expect("admin client");
        let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
        let results = admin
            .create_topics(
                [&new],
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
            )
            .await
            .expect("CreateTopics failed");
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => panic!("creating topic {name} failed: {code}"),
            }
        }
    }

    /// Produces one record, as any client on the network could (no CloudEvents headers but
    /// those given), and waits for the broker's acknowledgement. Returns its partition and offset.
    ///
    /// # Errors
    /// When the broker does not acknowledge it within 30 s.
    pub async fn produce(
        &self,
        topic: &str,
        key: Option<&str>,
        payload: &[u8],
        headers: &[(String, Vec<u8>)],
    ) -> anyhow::Result<(i32, i64)> {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("message.timeout.ms", "30000")
            .create()?;
        let mut owned = OwnedHeaders::new_with_capacity(headers.len());
        for (name, value) in headers {
            owned = owned.insert(Header {
                key: name.as_str(),
                value: Some(value.as_slice()),
            });
        }
        let mut record = FutureRecord::to(topic).payload(payload).headers(owned);
        if let Some(key) = key {
            record = record.key(key);
        }
        let delivery = producer
            .send(record, Duration::from_secs(30))
            .await
            .map_err(|(error, _)| anyhow::anyhow!("producing to {topic}: {error}"))?;
        Ok((delivery.partition, delivery.offset))
    }

    /// How many records of `topic` consumer group `group` has not committed yet, summed over
    /// the partitions (a partition without a committed offset counts from its oldest record).
    ///
    /// # Errors
    /// When the broker does not answer.
    pub async fn group_lag(&self, group: &str, topic: &str) -> anyhow::Result<i64> {
        let offsets = self.group_offsets(group, topic).await?;
        Ok(offsets
            .iter()
            .map(|p| (p.high - p.committed.unwrap_or(p.low)).max(0))
            .sum())
    }

    /// Per partition of `topic`: its oldest and next offsets and `group`'s committed offset.
    ///
    /// # Errors
    /// When the broker does not answer.
    pub async fn group_offsets(
        &self,
        group: &str,
        topic: &str,
    ) -> anyhow::Result<Vec<PartitionOffsets>> {
        let (bootstrap, group, topic) =
            (self.bootstrap.clone(), group.to_owned(), topic.to_owned());
        tokio::task::spawn_blocking(move || {
            let consumer = group_client(&bootstrap, &group)?;
            let timeout = Duration::from_secs(10);
            let metadata = consumer.fetch_metadata(Some(&topic), timeout)?;
            let partitions: Vec<i32> = metadata
                .topics()
                .iter()
                .flat_map(|t| t.partitions().iter().map(|p| p.id()))
                .collect();
            let mut list = TopicPartitionList::new();
            for partition in &partitions {
                list.add_partition(&topic, *partition);
            }
            let committed = consumer.committed_offsets(list, timeout)?;
            partitions
                .iter()
                .map(|&partition| {
                    let (low, high) = consumer.fetch_watermarks(&topic, partition, timeout)?;
                    let committed =
                        committed.find_partition(&topic, partition).and_then(|p| {
                            match p.offset() {
                                Offset::Offset(o) => Some(o),
                                _ => None,
                            }
                        });
                    Ok(PartitionOffsets {
                        partition,
                        low,
                        high,
                        committed,
                    })
                })
                .collect()
        })
        .await?
    }

    /// The state of consumer group `group` as the broker's coordinator reports it (`Stable`,
    /// `PreparingRebalance`, `CompletingRebalance`, `Empty`, ...), when it answers: Apache
    /// Kafka does, the mock cluster does not (no DescribeGroups).
    pub async fn group_state(&self, group: &str) -> Option<String> {
        let (bootstrap, group) = (self.bootstrap.clone(), group.to_owned());
        tokio::task::spawn_blocking(move || {
            let consumer = group_client(&bootstrap, &group).ok()?;
            let list = consumer
                .fetch_group_list(Some(&group), Duration::from_secs(5))
                .ok()?;
            list.groups().first().map(|g| g.state().to_owned())
        })
        .await
        .ok()
        .flatten()
    }

    /// Commits `group`'s offsets of every partition of `topic` back to the oldest record: the
    /// offset reset of a replay (`kafka-consumer-groups --reset-offsets --to-earliest`). Every
    /// member must have left the group first. It joins the group to commit (the mock cluster
    /// takes commits from members only), and leaves it again.
    ///
    /// # Errors
    /// When the broker refuses, or the group is not handed every partition within 60 s (some
    /// other member is still in it).
    pub async fn reset_group_to_earliest(&self, group: &str, topic: &str) -> anyhow::Result<()> {
        let offsets = self.group_offsets(group, topic).await?;
        let (bootstrap, group, topic) =
            (self.bootstrap.clone(), group.to_owned(), topic.to_owned());
        tokio::task::spawn_blocking(move || {
            let consumer: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", &bootstrap)
                .set("group.id", &group)
                .set("enable.auto.commit", "false")
                .set("session.timeout.ms", "6000")
                .create()?;
            consumer.subscribe(&[&topic])?;
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            loop {
                // Polling drives the join; records it hands out are left uncommitted.
                let _ = consumer.poll(Duration::from_millis(100));
                let assigned = consumer.assignment()?.count();
                if assigned == offsets.len() {
                    break;
                }
                anyhow::ensure!(
                    std::time::Instant::now() < deadline,
                    "group {group} was handed {assigned} of the {} partitions of {topic}: is a member still in it?",
                    offsets.len()
                );
            }
            let mut list = TopicPartitionList::new();
            for p in &offsets {
                list.add_partition_offset(&topic, p.partition, Offset::Offset(p.low))?;
            }
            consumer.commit(&list, CommitMode::Sync)?;
            consumer.unsubscribe();
            Ok(())
        })
        .await?
    }

    /// Reads `topic` from the beginning with a fresh consumer group until `count` records
    /// arrived or `timeout` passed, and returns them (in per-partition order).
    pub async fn read(&self, topic: &str, count: usize, timeout: Duration) -> Vec<Record> {
        self.read_until(topic, count, timeout, Duration::ZERO).await
    }

    /// Like [`TestKafka::read`], then keeps reading until no record came for `quiet`, to catch
    /// records that should not be there (duplicates, rolled-back events).
    pub async fn read_all(
        &self,
        topic: &str,
        count: usize,
        timeout: Duration,
        quiet: Duration,
    ) -> Vec<Record> {
        self.read_until(topic, count, timeout, quiet).await
    }

    async fn read_until(
        &self,
        topic: &str,
        count: usize,
        timeout: Duration,
        quiet: Duration,
    ) -> Vec<Record> {
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set(
                "group.id",
                format!("reader-{}", uuid::Uuid::new_v4().simple()),
            )
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .create()
            .expect("reader consumer");
        consumer.subscribe(&[topic]).expect("subscribe");
        let mut records = Vec::new();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let until = if records.len() < count {
                deadline
            } else {
                tokio::time::Instant::now() + quiet
            };
            if records.len() >= count && quiet.is_zero() {
                break;
            }
            let Ok(received) = tokio::time::timeout_at(until, consumer.recv()).await else {
                break;
            };
            let Ok(message) = received else { continue };
            records.push(Record {
                key: message
                    .key()
                    .map(|k| String::from_utf8_lossy(k).into_owned()),
                payload: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                partition: message.partition(),
                offset: message.offset(),
                headers: message
                    .headers()
                    .map(|hs| {
                        hs.iter()
                            .map(|h| {
                                (
                                    h.key.to_owned(),
                                    String::from_utf8_lossy(h.value.unwrap_or_default())
                                        .into_owned(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            });
        }
        records
    }
}
