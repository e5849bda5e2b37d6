//! Shared set-up of the eventing tests: a database and a broker of their own per test, the
//! eventing tables migrated, and a recording handler whose effects the tests count.

#![allow(dead_code, unreachable_pub)]

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shop_eventing::{
    Consumer, ConsumerConfig, Handler, HandlerError, InboundEvent, KafkaConfig, NewEvent, Outbox,
    Relay, RelayConfig, RelayError, RelayWaker, RetryPolicy,
};
use shop_testkit::{Record, TestDb, TestKafka};
use sqlx::{PgConnection, PgPool};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const TIMEOUT: Duration = Duration::from_secs(30);

pub struct Env {
    pub db: TestDb,
    pub kafka: TestKafka,
    pub config: KafkaConfig,
    /// An outbox that wakes no relay (its events are found by the relay's poll).
    pub outbox: Outbox,
    /// The relays started by [`Env::relay`], which [`Env::commit`] wakes as a service's writes do.
    wakers: Mutex<Vec<RelayWaker>>,
}

pub async fn setup() -> Env {
    shop_telemetry::init_for_tests();
    let db = TestDb::create().await;
    shop_eventing::migrate(&db.pool)
        .await
        .expect("eventing migrations");
    sqlx::query(
        "CREATE TABLE effects (event_id text NOT NULL, key text, payload bytea, \
         applied_at timestamptz NOT NULL DEFAULT clock_timestamp())",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let kafka = TestKafka::start();
    let config = KafkaConfig::new(kafka.bootstrap_servers());
    Env {
        db,
        kafka,
        config,
        outbox: Outbox::new("/shop/test"),
        wakers: Mutex::default(),
    }
}

impl Env {
    pub async fn topic(&self, prefix: &str, partitions: i32) -> String {
        let topic = TestKafka::unique_topic(prefix);
        self.kafka.create_topic(&topic, partitions).await;
        topic
    }

    /// An outbox that wakes this test's relays after each commit.
    pub fn waking_outbox(&self) -> Outbox {
        let wakers = self.wakers.lock().unwrap();
        wakers
            .iter()
            .fold(Outbox::new("/shop/test"), |outbox, waker| {
                outbox.waking(waker.clone())
            })
    }

    /// Appends `events` in one committed transaction, as a service's API call does (the relays
    /// are woken after the commit).
    pub async fn commit(&self, events: Vec<NewEvent>) {
        let outbox = self.waking_outbox();
        shop_eventing::committing(async {
            let mut tx = self.db.pool.begin().await?;
            for event in events {
                outbox.append(&mut tx, event).await?;
            }
            tx.commit().await
        })
        .await
        .unwrap();
    }

    /// A relay of this test's outbox; [`Env::commit`] wakes it.
    pub fn relay(&self, config: RelayConfig) -> Relay {
        let relay = Relay::new(self.db.connect_options(), &self.config, config).unwrap();
        self.wakers.lock().unwrap().push(relay.waker());
        relay
    }

    pub fn spawn_relay(
        &self,
        config: RelayConfig,
    ) -> (CancellationToken, JoinHandle<Result<(), RelayError>>) {
        let relay = self.relay(config);
        let stop = CancellationToken::new();
        let token = stop.clone();
        (stop, tokio::spawn(async move { relay.run(token).await }))
    }

    pub fn spawn_consumer<H: Handler>(
        &self,
        config: ConsumerConfig,
        handler: H,
    ) -> (CancellationToken, JoinHandle<()>) {
        let consumer = Consumer::new(self.db.pool.clone(), &self.config, config, handler).unwrap();
        let stop = CancellationToken::new();
        let token = stop.clone();
        (
            stop,
            tokio::spawn(async move { consumer.run(token).await.unwrap() }),
        )
    }

    pub async fn outbox_len(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM eventing_outbox")
            .fetch_one(&self.db.pool)
            .await
            .unwrap()
    }

    pub async fn effects(&self) -> Vec<(String, String)> {
        sqlx::query_as("SELECT event_id, key FROM effects ORDER BY applied_at")
            .fetch_all(&self.db.pool)
            .await
            .unwrap()
    }

    pub async fn read(&self, topic: &str, count: usize) -> Vec<Record> {
        self.kafka
            .read_all(topic, count, TIMEOUT, Duration::from_millis(1500))
            .await
    }

    /// Waits until the outbox is empty.
    pub async fn drained(&self) {
        shop_testkit::eventually("the outbox to drain", TIMEOUT, || async {
            (self.outbox_len().await == 0).then_some(())
        })
        .await;
    }

    /// Waits until an effect of event `id` exists.
    pub async fn applied(&self, id: &str) {
        shop_testkit::eventually(&format!("event {id} to be applied"), TIMEOUT, || async {
            let n: i64 = sqlx::query_scalar("SELECT count(*) FROM effects WHERE event_id = $1")
                .bind(id)
                .fetch_one(&self.db.pool)
                .await
                .unwrap();
            (n > 0).then_some(())
        })
        .await;
    }
}

/// Consumer settings for tests: short session timeout (a restarted member rejoins quickly) and
/// fast retries.
pub fn consumer_config(name: &str, topic: &str) -> ConsumerConfig {
    let mut config = ConsumerConfig::new(name, [topic]);
    config.session_timeout = Duration::from_secs(6);
    config.retry = RetryPolicy {
        max_attempts: 3,
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
    };
    config
}

/// An event whose payload is `key/seq`, so tests can check per-key order.
pub fn sequenced(topic: &str, key: &str, seq: usize) -> NewEvent {
    NewEvent::raw(
        topic,
        key,
        "shop.test.v1.Sequenced",
        format!("{key}/{seq}").into_bytes(),
    )
}

pub fn seq_of(payload: &[u8]) -> (String, usize) {
    let text = std::str::from_utf8(payload).unwrap();
    let (key, seq) = text.split_once('/').unwrap();
    (key.to_owned(), seq.parse().unwrap())
}

/// Checks that, ignoring repeated ce_ids, every key's records carry 0..n in order.
pub fn assert_per_key_order(records: &[Record], keys: usize, per_key: usize) {
    let mut seen = std::collections::HashSet::new();
    let mut by_key: HashMap<String, Vec<usize>> = HashMap::new();
    for record in records {
        if !seen.insert(record.header("ce_id").unwrap().to_owned()) {
            continue;
        }
        let (key, seq) = seq_of(&record.payload);
        assert_eq!(
            record.key.as_deref(),
            Some(key.as_str()),
            "record key is the aggregate id"
        );
        by_key.entry(key).or_default().push(seq);
    }
    assert_eq!(by_key.len(), keys, "every key delivered");
    for (key, seqs) in by_key {
        assert_eq!(seqs, (0..per_key).collect::<Vec<_>>(), "order of key {key}");
    }
}

/// Records every event it applies in the `effects` table, inside the consumer's transaction.
/// Events listed in `fail` fail that many times first (after writing, so a leaked write would
/// show); payloads starting with `poison` fail permanently, those starting with `panic` panic.
/// Events in `poisoned` fail permanently and those in `blocked` transiently, until removed
/// (a bug fixed, a dependency back).
#[derive(Clone, Default)]
pub struct Recorder {
    pub fail: Arc<Mutex<HashMap<String, u32>>>,
    pub calls: Arc<Mutex<HashMap<String, u32>>>,
    pub poisoned: Arc<Mutex<HashSet<String>>>,
    pub blocked: Arc<Mutex<HashSet<String>>>,
}

impl Recorder {
    /// `id` fails transiently `times` times before succeeding.
    pub fn fail_transiently(&self, id: &str, times: u32) {
        self.fail.lock().unwrap().insert(id.to_owned(), times);
    }

    /// `id` fails permanently until [`Recorder::heal`].
    pub fn poison(&self, id: &str) {
        self.poisoned.lock().unwrap().insert(id.to_owned());
    }

    /// The cause of `id`'s permanent failure is fixed.
    pub fn heal(&self, id: &str) {
        self.poisoned.lock().unwrap().remove(id);
    }

    /// `id` fails transiently until [`Recorder::unblock`]: its dependency is down.
    pub fn block(&self, id: &str) {
        self.blocked.lock().unwrap().insert(id.to_owned());
    }

    /// `id`'s dependency is back.
    pub fn unblock(&self, id: &str) {
        self.blocked.lock().unwrap().remove(id);
    }

    pub fn calls(&self, id: &str) -> u32 {
        self.calls.lock().unwrap().get(id).copied().unwrap_or(0)
    }
}

impl Handler for Recorder {
    async fn handle(
        &self,
        tx: &mut PgConnection,
        event: &InboundEvent,
    ) -> Result<(), HandlerError> {
        *self
            .calls
            .lock()
            .unwrap()
            .entry(event.id.clone())
            .or_default() += 1;
        sqlx::query("INSERT INTO effects (event_id, key, payload) VALUES ($1, $2, $3)")
            .bind(&event.id)
            .bind(&event.key)
            .bind(&event.payload)
            .execute(&mut *tx)
            .await?;
        if event.payload.starts_with(b"poison") {
            return Err(HandlerError::permanent(anyhow::anyhow!("poison payload")));
        }
        if event.payload.starts_with(b"panic") {
            panic!("the handler has a bug");
        }
        if self.poisoned.lock().unwrap().contains(&event.id) {
            return Err(HandlerError::permanent(anyhow::anyhow!(
                "a bug in the handler"
            )));
        }
        if self.blocked.lock().unwrap().contains(&event.id) {
            return Err(HandlerError::transient(anyhow::anyhow!("dependency down")));
        }
        let mut fail = self.fail.lock().unwrap();
        if let Some(left) = fail.get_mut(&event.id)
            && *left > 0
        {
            *left -= 1;
            return Err(HandlerError::transient(anyhow::anyhow!("flaky dependency")));
        }
        Ok(())
    }
}

pub async fn count(pool: &PgPool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

/// Produces one record the way any client of the broker could, with exactly these headers (no
/// outbox, no relay): how hostile or foreign records reach a consumer.
pub async fn produce_raw(
    kafka: &TestKafka,
    topic: &str,
    partition: i32,
    key: Option<&str>,
    headers: &[(&str, &[u8])],
    payload: &[u8],
) -> i64 {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", kafka.bootstrap_servers())
        .create()
        .expect("producer");
    let mut owned = OwnedHeaders::new();
    for (key, value) in headers {
        owned = owned.insert(Header {
            key,
            value: Some(*value),
        });
    }
    let mut record = FutureRecord::to(topic)
        .partition(partition)
        .payload(payload)
        .headers(owned);
    if let Some(key) = key {
        record = record.key(key);
    }
    let delivered = producer
        .send(record, Duration::from_secs(10))
        .await
        .map_err(|(e, _)| e)
        .expect("produce");
    delivered.offset
}

/// Headers of a well-formed suite event.
pub fn event_headers(id: &str) -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("ce_id", id.as_bytes().to_vec()),
        ("ce_type", b"shop.test.v1.Sequenced".to_vec()),
        ("ce_source", b"/shop/test".to_vec()),
        ("ce_specversion", b"1.0".to_vec()),
    ]
}

/// Borrows `headers` the way [`produce_raw`] takes them.
pub fn borrowed<'a>(headers: &'a [(&'static str, Vec<u8>)]) -> Vec<(&'static str, &'a [u8])> {
    headers.iter().map(|(k, v)| (*k, v.as_slice())).collect()
}

/// The value of the sample of `name` whose labels include every `labels` pair, summed over
/// the matching series; `None` when there is none. Reads the text exposition format.
pub fn metric(
    registry: &prometheus_client::registry::Registry,
    name: &str,
    labels: &[(&str, &str)],
) -> Option<f64> {
    let text = shop_telemetry::metrics::encode(registry);
    let mut found = None;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let (series, value) = match line.rsplit_once(' ') {
            Some(split) => split,
            None => continue,
        };
        let (series_name, series_labels) = match series.split_once('{') {
            Some((n, l)) => (n, l.trim_end_matches('}')),
            None => (series, ""),
        };
        if series_name != name {
            continue;
        }
        if labels.iter().all(|(k, v)| {
            series_labels
                .split(',')
                .any(|l| l == format!("{k}=\"{v}\""))
        }) {
            let value: f64 = value.parse().unwrap_or(f64::NAN);
            found = Some(found.unwrap_or(0.0) + value);
        }
    }
    found
}
