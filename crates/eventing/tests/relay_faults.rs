//! The relay under faults that last: rows Kafka will not take, a producer that died, a broker
//! that rejects a batch, a leader whose database connection went dark, and what its commits
//! cost the writers.

mod common;

use std::time::{Duration, Instant};

use common::*;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use shop_eventing::{
    EventingMetrics, NewEvent, ParkedEvents, Relay, RelayConfig, RetryPolicy, drop_parked,
    parked_events, retry_parked,
};
use shop_testkit::{TcpProxy, eventually};

/// How long a test waits for events that should flow.
const FLOW: Duration = Duration::from_secs(20);

/// Small batches (so that stuck rows could fill one) and quick retries (so that rows are parked
/// within the test).
fn fast() -> RelayConfig {
    RelayConfig {
        batch_size: 5,
        retry: RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(200),
        },
        ..RelayConfig::default()
    }
}

/// [`fast`] counting into a registry the test reads.
fn counted() -> (RelayConfig, prometheus_client::registry::Registry) {
    let mut registry = prometheus_client::registry::Registry::default();
    let config = RelayConfig {
        metrics: EventingMetrics::new(&mut registry),
        ..fast()
    };
    (config, registry)
}

/// The value of a series in `registry`'s exposition, e.g.
/// `shop_outbox_publish_failures_total{topic="t",reason="unknown_topic"}`.
fn series(registry: &prometheus_client::registry::Registry, name: &str) -> Option<f64> {
    shop_telemetry::metrics::encode(registry)
        .lines()
        .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
}

/// Waits until exactly `count` events are parked, and returns them.
async fn parked(env: &Env, count: usize) -> Vec<shop_eventing::ParkedEvent> {
    eventually(&format!("{count} parked events"), FLOW, || async {
        let parked = parked_events(&env.db.pool).await.unwrap();
        (parked.len() == count).then_some(parked)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_too_large_to_publish_does_not_stop_the_other_keys() {
    let env = setup().await;
    let topic = env.topic("relay-too-large", 3).await;
    // Over librdkafka's `message.max.bytes` (1 MB): refused at enqueue, on every try.
    let big = NewEvent::raw(
        &topic,
        "big",
        "shop.test.v1.Sequenced",
        vec![b'x'; 1_100_000],
    );
    env.commit(vec![big]).await;
    env.commit(vec![sequenced(&topic, "big", 1)]).await;
    let others: Vec<_> = (0..4)
        .flat_map(|k| (0..3).map(move |s| (k, s)))
        .map(|(k, s)| sequenced(&topic, &format!("other-{k}"), s))
        .collect();
    env.commit(others).await;

    let (config, registry) = counted();
    let (stop, relay) = env.spawn_relay(config);
    let records = env.kafka.read(&topic, 12, FLOW).await;
    assert_eq!(records.len(), 12, "every other key's events were published");
    assert_per_key_order(&records, 4, 3);

    // Tried 3 times, then parked with its error; the key's later event waits behind it.
    let parked = parked(&env, 1).await;
    assert_eq!(parked[0].partition_key, "big");
    assert_eq!(parked[0].attempts, 3);
    assert_eq!(parked[0].waiting_behind, 1);
    let error = parked[0].last_error.as_deref().unwrap_or_default();
    assert!(error.contains("too large"), "{error}");
    let failures = format!(
        "shop_outbox_publish_failures_total{{topic=\"{topic}\",reason=\"message_too_large\"}}"
    );
    assert_eq!(series(&registry, &failures), Some(3.0));
    let all = env.read(&topic, 12).await;
    assert!(
        all.iter().all(|r| r.key.as_deref() != Some("big")),
        "the big key's later event never overtakes the one stuck before it"
    );

    // The operator drops the event that can never be published: the one behind it follows.
    let dropped = drop_parked(&env.db.pool, ParkedEvents::Ids(&[parked[0].id]))
        .await
        .unwrap();
    assert_eq!(dropped, 1);
    env.drained().await;
    let all = env.read(&topic, 13).await;
    let big: Vec<_> = all
        .iter()
        .filter(|r| r.key.as_deref() == Some("big"))
        .map(|r| seq_of(&r.payload).1)
        .collect();
    assert_eq!(big, [1]);
    stop.cancel();
    relay.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_for_a_topic_that_does_not_exist_do_not_stop_the_other_topics() {
    let env = setup().await;
    let missing = TestKafkaTopic::missing(&env, "relay-missing");
    let topic = env.topic("relay-present", 3).await;
    // More rows for the missing topic than one batch holds, all at the head of the table.
    env.commit(
        (0..8)
            .map(|k| sequenced(&missing.0, &format!("v2-{k}"), 0))
            .collect(),
    )
    .await;
    env.commit(
        (0..3)
            .map(|k| sequenced(&topic, &format!("order-{k}"), 0))
            .collect(),
    )
    .await;

    let (config, registry) = counted();
    let (stop, relay) = env.spawn_relay(config);
    let records = env.kafka.read(&topic, 3, FLOW).await;
    assert_eq!(
        records.len(),
        3,
        "the provisioned topic's events were published"
    );
    let parked = parked(&env, 8).await;
    assert!(parked.iter().all(|p| p.topic == missing.0));
    let failures = format!(
        "shop_outbox_publish_failures_total{{topic=\"{}\",reason=\"unknown_topic\"}}",
        missing.0
    );
    assert!(series(&registry, &failures).unwrap_or(0.0) >= 8.0);

    // The topic is created after all (the mock made it when told to refuse it, and now stops
    // refusing); the operator hands its events back to the relay.
    if !env
        .kafka
        .set_topic_error(&missing.0, RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR)
    {
        env.kafka.create_topic(&missing.0, 3).await;
    }
    let retried = retry_parked(&env.db.pool, ParkedEvents::Topic(&missing.0))
        .await
        .unwrap();
    assert_eq!(retried, 8);
    env.drained().await;
    assert_eq!(env.read(&missing.0, 8).await.len(), 8);
    stop.cancel();
    relay.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_the_broker_rejects_is_retried_without_reordering_its_keys() {
    let env = setup().await;
    let topic = env.topic("relay-rejected", 1).await;
    // One message per produce request, so that the rejected request is followed by others of
    // the same partition (and key) in flight.
    let config = env.config.clone().with("batch.num.messages", "1");
    let events: Vec<_> = (0..6)
        .map(|i| sequenced(&topic, &format!("order-{}", i % 2), i / 2))
        .collect();
    env.commit(events).await;
    // The next produce request is rejected for good, as a broker with
    // `log.message.timestamp.before.max.ms` rejects an old record.
    if !env.kafka.fail_requests(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_INVALID_TIMESTAMP],
    ) {
        eprintln!("skipped: an external broker cannot be told to reject a request");
        return;
    }

    let relay = Relay::new(env.db.connect_options(), &config, RelayConfig::default()).unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn({
        let stop = stop.clone();
        async move { relay.run(stop).await }
    });
    env.drained().await;
    let records = env.read(&topic, 6).await;
    stop.cancel();
    task.await.unwrap().unwrap();
    assert_per_key_order(&records, 2, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fatal_producer_error_is_survived_by_rebuilding_the_producer() {
    let env = setup().await;
    let topic = env.topic("relay-fatal", 1).await;
    env.commit((0..3).map(|i| sequenced(&topic, "order-1", i)).collect())
        .await;
    // A head-of-line OUT_OF_ORDER_SEQUENCE_NUMBER is fatal for an idempotent producer: the
    // broker and the producer disagree, and librdkafka refuses every later message.
    if !env.kafka.fail_requests(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER],
    ) {
        eprintln!("skipped: an external broker cannot be told to reject a request");
        return;
    }
    let (stop, relay) = env.spawn_relay(RelayConfig::default());
    let records = env.kafka.read(&topic, 3, FLOW).await;
    stop.cancel();
    relay.await.unwrap().unwrap();
    assert_eq!(records.len(), 3, "published once the producer was replaced");
    assert_per_key_order(&records, 1, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn properties_cannot_weaken_the_producers_delivery_guarantees() {
    let env = setup().await;
    for (key, value) in [
        ("acks", "1"),
        ("request.required.acks", "0"),
        ("enable.idempotence", "false"),
    ] {
        let config = env.config.clone().with(key, value);
        let result = Relay::new(env.db.connect_options(), &config, RelayConfig::default());
        let error = result
            .err()
            .unwrap_or_else(|| panic!("{key}={value} was accepted"));
        assert!(error.to_string().contains(key), "{error}");
    }
    // Other properties (security settings, client ids) are the deployment's business.
    for (key, value) in [
        ("acks", "all"),
        ("request.required.acks", "-1"),
        ("message.timeout.ms", "0"),
    ] {
        let config = env.config.clone().with(key, value);
        assert!(
            Relay::new(env.db.connect_options(), &config, RelayConfig::default()).is_ok(),
            "{key}={value} says what the relay does anyway"
        );
    }
    for (key, value) in [
        ("message.timeout.ms", "30000"),
        ("delivery.timeout.ms", "1000"),
    ] {
        let config = env.config.clone().with(key, value);
        assert!(
            Relay::new(env.db.connect_options(), &config, RelayConfig::default()).is_err(),
            "{key}={value} would let the producer give up on events by itself"
        );
    }
    let config = env.config.clone().with("client.id", "order-relay");
    assert!(Relay::new(env.db.connect_options(), &config, RelayConfig::default()).is_ok());
}

#[tokio::test]
async fn a_business_commit_sends_no_notification() {
    let env = setup().await;
    let topic = env.topic("relay-no-notify", 1).await;
    let mut listener = sqlx::postgres::PgListener::connect_with(&env.db.pool)
        .await
        .unwrap();
    listener.listen("eventing_outbox").await.unwrap();

    let mut tx = env.db.pool.begin().await.unwrap();
    let writer: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    env.outbox
        .append(&mut tx, sequenced(&topic, "order-1", 0))
        .await
        .unwrap();
    tx.commit().await.unwrap();

    // A NOTIFY in the business transaction makes its commit take PostgreSQL's cluster-wide
    // notify lock (held through the WAL flush): every outbox-writing commit would queue on it.
    let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
    while let Ok(notification) = tokio::time::timeout_at(deadline, listener.recv()).await {
        let notification = notification.unwrap();
        assert_ne!(
            i32::try_from(notification.process_id()).unwrap(),
            writer,
            "the business transaction notified {:?}",
            notification.channel()
        );
    }
}

/// A topic the broker does not have, with automatic creation off.
struct TestKafkaTopic(String);

impl TestKafkaTopic {
    fn missing(env: &Env, prefix: &str) -> Self {
        let topic = shop_testkit::TestKafka::unique_topic(prefix);
        // The mock cluster would create it on first use; make it answer as a broker with
        // `auto.create.topics.enable=false` does.
        env.kafka.set_topic_error(
            &topic,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART,
        );
        Self(topic)
    }
}

/// Waits until `relay` leads; returns when it did.
async fn leading(health: &shop_eventing::RelayHealth, within: Duration) -> Instant {
    eventually("the relay to lead", within, || async {
        health.status().leading.then(Instant::now)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_database_connection_is_black_holed_is_replaced_within_seconds() {
    let env = setup().await;
    let topic = env.topic("relay-black-hole", 3).await;
    let direct = env.db.connect_options();
    let upstream = tokio::net::lookup_host((direct.get_host(), direct.get_port()))
        .await
        .unwrap()
        .next()
        .unwrap();
    let proxy = TcpProxy::start(upstream).await.unwrap();
    let through_proxy = direct.clone().host("127.0.0.1").port(proxy.addr().port());

    // Relay A leads (it starts first), relay B stands by, connected directly. Both have the
    // default lease (5 s) and standby retry (1 s).
    let relay_a = Relay::new(through_proxy, &env.config, RelayConfig::default()).unwrap();
    let health_a = relay_a.health();
    let stop_a = tokio_util::sync::CancellationToken::new();
    let task_a = tokio::spawn({
        let stop = stop_a.clone();
        async move { relay_a.run(stop).await }
    });
    leading(&health_a, FLOW).await;
    let relay_b = env.relay(RelayConfig::default());
    let health_b = relay_b.health();
    let stop_b = tokio_util::sync::CancellationToken::new();
    let task_b = tokio::spawn({
        let stop = stop_b.clone();
        async move { relay_b.run(stop).await }
    });

    let (keys, per_key) = (6, 10);
    let before: Vec<_> = (0..keys)
        .map(|k| sequenced(&topic, &format!("order-{k}"), 0))
        .collect();
    env.commit(before).await;
    env.drained().await;
    assert!(health_a.status().leading && !health_b.status().leading);

    // A's database goes dark; it still reaches Kafka. Events keep being committed.
    proxy.black_hole();
    let cut_at = Instant::now();
    let writer = async {
        for seq in 1..per_key {
            let events = (0..keys)
                .map(|k| sequenced(&topic, &format!("order-{k}"), seq))
                .collect();
            env.commit(events).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let (took_over, ()) = tokio::join!(leading(&health_b, FLOW), writer);
    let failover = took_over - cut_at;
    env.drained().await;
    let drained = cut_at.elapsed();
    eprintln!(
        "black-holed leader: relay B took over {failover:?} after the cut, the backlog was drained {drained:?} after it"
    );
    assert!(!health_a.status().leading, "A stopped leading");

    // In key order, exactly once in effect: a consumer with its inbox applies each event once.
    let records = env.read(&topic, keys * per_key).await;
    assert_per_key_order(&records, keys, per_key);
    let recorder = Recorder::default();
    let (stop_consumer, consumer) =
        env.spawn_consumer(consumer_config("black-hole", &topic), recorder);
    let sentinel = sequenced(&topic, "sentinel", 0);
    let sentinel_id = sentinel.id.to_string();
    env.commit(vec![sentinel]).await;
    env.applied(&sentinel_id).await;
    stop_consumer.cancel();
    consumer.await.unwrap();
    let effects = env.effects().await;
    assert_eq!(effects.len(), keys * per_key + 1, "each event applied once");

    // The stated bound: the lease (5 s) plus a standby's retry (1 s), and a second of slack
    // for a loaded machine.
    assert!(
        failover < Duration::from_secs(7),
        "failover took {failover:?}"
    );
    stop_b.cancel();
    stop_a.cancel();
    task_b.await.unwrap().unwrap();
    tokio::time::timeout(Duration::from_secs(10), task_a)
        .await
        .expect("the black-holed relay stops when told to")
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_process_died_is_replaced_within_a_second_or_two() {
    let env = setup().await;
    let topic = env.topic("relay-killed", 1).await;
    let relay_a = env.relay(RelayConfig::default());
    let health_a = relay_a.health();
    let task_a = tokio::spawn(async move {
        relay_a
            .run(tokio_util::sync::CancellationToken::new())
            .await
    });
    leading(&health_a, FLOW).await;
    let relay_b = env.relay(RelayConfig::default());
    let health_b = relay_b.health();
    let (stop_b, task_b) = {
        let stop = tokio_util::sync::CancellationToken::new();
        let token = stop.clone();
        (stop, tokio::spawn(async move { relay_b.run(token).await }))
    };

    // As a killed process: no release of the lease, its sockets simply closed.
    task_a.abort();
    let killed_at = Instant::now();
    let took_over = leading(&health_b, FLOW).await - killed_at;
    eprintln!("relay B took over {took_over:?} after A's end");
    assert!(
        took_over < Duration::from_secs(3),
        "the lease of a dead session is taken before it expires: {took_over:?}"
    );
    env.commit(vec![sequenced(&topic, "order-1", 0)]).await;
    env.drained().await;
    stop_b.cancel();
    task_b.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_on_a_standby_replica_wakes_the_leader_without_waiting_for_its_poll() {
    let env = setup().await;
    let topic = env.topic("relay-cross-replica", 1).await;
    // The leader polls only every 30 s: what it publishes sooner, it was woken for.
    let slow_poll = RelayConfig {
        poll_interval: Duration::from_secs(30),
        ..RelayConfig::default()
    };
    let leader = Relay::new(env.db.connect_options(), &env.config, slow_poll).unwrap();
    let leader_health = leader.health();
    let stop = tokio_util::sync::CancellationToken::new();
    let leader_task = tokio::spawn({
        let stop = stop.clone();
        async move { leader.run(stop).await }
    });
    leading(&leader_health, FLOW).await;
    // The "other replica": its relay stands by, and its outbox wakes that relay only.
    let standby = Relay::new(
        env.db.connect_options(),
        &env.config,
        RelayConfig::default(),
    )
    .unwrap();
    let outbox = env.outbox.clone().waking(standby.waker());
    let standby_task = tokio::spawn({
        let stop = stop.clone();
        async move { standby.run(stop).await }
    });
    // Let the leader's first rounds pass, and the standby settle.
    tokio::time::sleep(Duration::from_secs(2)).await;

    for seq in 0..5 {
        let started = Instant::now();
        shop_eventing::committing(async {
            let mut tx = env.db.pool.begin().await?;
            outbox
                .append(&mut tx, sequenced(&topic, "order-1", seq))
                .await?;
            tx.commit().await
        })
        .await
        .unwrap();
        env.drained().await;
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(2),
            "published {took:?} after the commit on the standby's replica"
        );
    }
    stop.cancel();
    leader_task.await.unwrap().unwrap();
    standby_task.await.unwrap().unwrap();
}
