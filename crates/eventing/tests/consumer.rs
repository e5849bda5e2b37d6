//! The idempotent consumer: inbox deduplication, retries, dead letters and shutdown, against
//! real PostgreSQL and a real Kafka-protocol broker.

mod common;

use std::time::Duration;

use common::*;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use shop_eventing::{
    Consumer, ConsumerConfig, Handler, HandlerError, InboundEvent, NewEvent, RelayConfig,
};
use shop_testkit::TestKafka;

#[tokio::test]
async fn a_replayed_topic_changes_nothing() {
    let env = setup().await;
    let topic = env.topic("consumer-replay", 1).await;
    let (stop_relay, relay) = env.spawn_relay(RelayConfig::default());
    let events: Vec<_> = (0..10)
        .map(|i| sequenced(&topic, &format!("order-{}", i % 3), i / 3))
        .collect();
    let last = events[9].id.to_string();
    env.commit(events).await;

    let recorder = Recorder::default();
    let (stop, consumer) = env.spawn_consumer(consumer_config("replay", &topic), recorder.clone());
    env.applied(&last).await;
    stop.cancel();
    consumer.await.unwrap();
    let before = env.effects().await;
    assert_eq!(before.len(), 10);

    // Replay: the same consumer (inbox name) reads the whole topic again under a new group,
    // as after an offset reset. A sentinel appended afterwards proves it got to the end.
    let mut replay = consumer_config("replay", &topic);
    replay.group_id = "replay-from-earliest".into();
    let (stop, consumer) = env.spawn_consumer(replay, recorder.clone());
    let sentinel = sequenced(&topic, "sentinel", 0);
    let sentinel_id = sentinel.id.to_string();
    env.commit(vec![sentinel]).await;
    env.applied(&sentinel_id).await;
    stop.cancel();
    consumer.await.unwrap();
    stop_relay.cancel();
    relay.await.unwrap().unwrap();

    let after = env.effects().await;
    assert_eq!(after.len(), 11, "only the sentinel is new");
    assert_eq!(&after[..10], &before[..]);
    for (id, _) in &before {
        assert_eq!(
            recorder.calls(id),
            1,
            "the handler never saw the replayed copy of {id}"
        );
    }
}

#[tokio::test]
async fn the_same_message_delivered_twice_is_applied_once() {
    let env = setup().await;
    let topic = env.topic("consumer-dup", 1).await;
    let event = sequenced(&topic, "order-1", 0);
    let id = event.id.to_string();
    env.commit(vec![event]).await;

    // The relay publishes it twice (crash after the ack), so Kafka holds two identical records.
    let failpoints = shop_eventing::Failpoints::default();
    failpoints.arm("relay.after_publish", shop_eventing::FailpointAction::Crash);
    let _ = env
        .relay(RelayConfig {
            failpoints,
            ..RelayConfig::default()
        })
        .run(Default::default())
        .await;
    let (stop_relay, relay) = env.spawn_relay(RelayConfig::default());
    env.drained().await;
    assert_eq!(env.read(&topic, 2).await.len(), 2);

    let recorder = Recorder::default();
    let (stop, consumer) = env.spawn_consumer(consumer_config("dup", &topic), recorder.clone());
    let sentinel = sequenced(&topic, "sentinel", 0);
    let sentinel_id = sentinel.id.to_string();
    env.commit(vec![sentinel]).await;
    env.applied(&sentinel_id).await;
    stop.cancel();
    consumer.await.unwrap();
    stop_relay.cancel();
    relay.await.unwrap().unwrap();

    let applied: Vec<_> = env
        .effects()
        .await
        .into_iter()
        .filter(|(e, _)| *e == id)
        .collect();
    assert_eq!(applied.len(), 1);
    assert_eq!(recorder.calls(&id), 1);
}

#[tokio::test]
async fn a_handler_failing_twice_then_succeeding_applies_once() {
    let env = setup().await;
    let topic = env.topic("consumer-flaky", 1).await;
    let flaky = sequenced(&topic, "order-1", 0);
    let next = sequenced(&topic, "order-2", 0);
    let (flaky_id, next_id) = (flaky.id.to_string(), next.id.to_string());
    env.commit(vec![flaky, next]).await;
    let (stop_relay, relay) = env.spawn_relay(RelayConfig::default());

    let recorder = Recorder::default();
    recorder.fail_transiently(&flaky_id, 2);
    let (stop, consumer) = env.spawn_consumer(consumer_config("flaky", &topic), recorder.clone());
    env.applied(&next_id).await;
    stop.cancel();
    consumer.await.unwrap();
    stop_relay.cancel();
    relay.await.unwrap().unwrap();

    assert_eq!(recorder.calls(&flaky_id), 3, "two failures, then success");
    let effects = env.effects().await;
    assert_eq!(
        effects.iter().filter(|(e, _)| *e == flaky_id).count(),
        1,
        "the failed tries' writes were rolled back"
    );
    assert_eq!(effects.len(), 2);
    assert_eq!(
        count(&env.db.pool, "SELECT count(*) FROM eventing_dead_letter").await,
        0
    );
}

#[tokio::test]
async fn a_poison_message_is_dead_lettered_and_a_stubborn_one_retried_until_it_applies() {
    let env = setup().await;
    let topic = env.topic("consumer-poison", 1).await;
    let config = consumer_config("poison", &topic);
    let dlq = config.dead_letter_topic.clone();
    env.kafka.create_topic(&dlq, 1).await;

    let poison = NewEvent::raw(
        &topic,
        "order-1",
        "shop.test.v1.Sequenced",
        b"poison!".to_vec(),
    );
    let stubborn = sequenced(&topic, "order-2", 0);
    let healthy = sequenced(&topic, "order-3", 0);
    let (poison_id, stubborn_id, healthy_id) = (
        poison.id.to_string(),
        stubborn.id.to_string(),
        healthy.id.to_string(),
    );
    env.commit(vec![poison, stubborn, healthy]).await;
    let (stop_relay, relay) = env.spawn_relay(RelayConfig::default());

    let recorder = Recorder::default();
    // More failures than `max_attempts` (3): a transient failure is never dead-lettered.
    recorder.fail_transiently(&stubborn_id, 6);
    let (stop, consumer) = env.spawn_consumer(config, recorder.clone());
    env.applied(&healthy_id).await;
    env.applied(&stubborn_id).await;
    let dead = env.read(&dlq, 1).await;
    stop.cancel();
    consumer.await.unwrap();
    stop_relay.cancel();
    relay.await.unwrap().unwrap();

    assert_eq!(
        recorder.calls(&poison_id),
        1,
        "a permanent failure is not retried"
    );
    assert_eq!(
        recorder.calls(&stubborn_id),
        7,
        "a transient failure is retried until it succeeds"
    );
    let mut effects: Vec<String> = env.effects().await.into_iter().map(|(id, _)| id).collect();
    effects.sort();
    let mut expected = vec![healthy_id, stubborn_id];
    expected.sort();
    assert_eq!(effects, expected, "the poison record has no effect");

    assert_eq!(dead.len(), 1);
    let poisoned = &dead[0];
    assert_eq!(poisoned.header("ce_id"), Some(poison_id.as_str()));
    assert_eq!(poisoned.payload, b"poison!");
    assert_eq!(poisoned.key.as_deref(), Some("order-1"));
    assert!(
        poisoned
            .header("dlq_error")
            .unwrap()
            .contains("poison payload")
    );
    assert_eq!(poisoned.header("dlq_error_kind"), Some("permanent"));
    assert_eq!(poisoned.header("dlq_attempts"), Some("1"));
    assert_eq!(poisoned.header("dlq_source_topic"), Some(topic.as_str()));
    assert_eq!(poisoned.header("dlq_source_partition"), Some("0"));
    assert_eq!(poisoned.header("dlq_source_offset"), Some("0"));
    assert_eq!(poisoned.header("dlq_consumer"), Some("poison"));
    assert_eq!(
        poisoned.header("ce_type"),
        Some("shop.test.v1.Sequenced"),
        "original headers kept"
    );
    assert_eq!(
        count(&env.db.pool, "SELECT count(*) FROM eventing_dead_letter").await,
        1
    );
}

/// Decodes a typed event; a payload that does not decode is a permanent failure.
struct Typed;

impl Handler for Typed {
    async fn handle(
        &self,
        tx: &mut sqlx::PgConnection,
        event: &InboundEvent,
    ) -> Result<(), HandlerError> {
        let captured: shop_proto::payment::v1::PaymentCaptured = event.decode()?;
        sqlx::query("INSERT INTO effects (event_id, key) VALUES ($1, $2)")
            .bind(&event.id)
            .bind(&captured.order_id)
            .execute(tx)
            .await?;
        Ok(())
    }
}

#[tokio::test]
async fn a_malformed_protobuf_payload_is_dead_lettered() {
    let env = setup().await;
    let topic = env.topic("consumer-malformed", 1).await;
    let config = consumer_config("malformed", &topic);
    env.kafka.create_topic(&config.dead_letter_topic, 1).await;
    let dlq = config.dead_letter_topic.clone();
    let type_name = "shop.payment.v1.PaymentCaptured";
    let garbage = NewEvent::raw(&topic, "order-1", type_name, vec![0xff, 0xff, 0xff]);
    let valid = NewEvent::new(
        &topic,
        "order-2",
        &shop_proto::payment::v1::PaymentCaptured {
            order_id: "order-2".into(),
            ..Default::default()
        },
    );
    let valid_id = valid.id.to_string();
    env.commit(vec![garbage, valid]).await;
    let (stop_relay, relay) = env.spawn_relay(RelayConfig::default());
    let (stop, consumer) = env.spawn_consumer(config, Typed);
    env.applied(&valid_id).await;
    let dead = env.read(&dlq, 1).await;
    stop.cancel();
    consumer.await.unwrap();
    stop_relay.cancel();
    relay.await.unwrap().unwrap();

    assert_eq!(dead.len(), 1);
    assert!(
        dead[0]
            .header("dlq_error")
            .unwrap()
            .contains("malformed shop.payment.v1.PaymentCaptured")
    );
}

/// A record that decodes, but whose text no column, log line or terminal should take: written
/// by a client that could write to the topic, not by the suite's own producer.
#[tokio::test]
async fn a_payload_with_hostile_text_is_dead_lettered_before_the_handler_sees_it() {
    let env = setup().await;
    let topic = env.topic("consumer-hostile", 1).await;
    // A name of its own: on a shared Apache Kafka the dead-letter topic is `<name>.dlq`.
    let config = consumer_config("hostile-text", &topic);
    env.kafka.create_topic(&config.dead_letter_topic, 1).await;
    let dlq = config.dead_letter_topic.clone();
    let captured = |order_id: &str, currency: &str| {
        NewEvent::new(
            &topic,
            "order-1",
            &shop_proto::payment::v1::PaymentCaptured {
                order_id: order_id.into(),
                amount: Some(shop_proto::common::v1::Money {
                    amount_minor: 100,
                    currency: currency.into(),
                }),
                ..Default::default()
            },
        )
    };
    let forged_log_line = captured("order-1\n{\"level\":\"INFO\",\"msg\":\"refund ok\"}", "EUR");
    let terminal_escape = captured("order-2", "\u{1b}[2J");
    let oversized = captured(&"x".repeat(4096), "EUR");
    let valid = captured("order-3", "EUR");
    let valid_id = valid.id.to_string();
    env.commit(vec![forged_log_line, terminal_escape, oversized, valid])
        .await;
    let (stop_relay, relay) = env.spawn_relay(RelayConfig::default());
    let (stop, consumer) = env.spawn_consumer(config, Typed);
    env.applied(&valid_id).await;
    let dead = env.read(&dlq, 3).await;
    stop.cancel();
    consumer.await.unwrap();
    stop_relay.cancel();
    relay.await.unwrap().unwrap();

    let errors: Vec<&str> = dead
        .iter()
        .map(|d| d.header("dlq_error").unwrap())
        .collect();
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert!(
        errors[0].contains("field order_id: contains a control character"),
        "{}",
        errors[0]
    );
    assert!(
        errors[1].contains("field amount.currency: contains a control character"),
        "{}",
        errors[1]
    );
    assert!(
        errors[2].contains("field order_id: longer than 1024 bytes"),
        "{}",
        errors[2]
    );
    assert!(
        errors
            .iter()
            .all(|e| !e.contains("refund ok") && !e.contains("xxxx")),
        "the hostile values are not repeated: {errors:?}"
    );
    // Only the valid record reached the handler.
    assert_eq!(count(&env.db.pool, "SELECT count(*) FROM effects").await, 1);
}

#[tokio::test]
async fn shutdown_drains_and_commits_offsets_before_leaving_the_group() {
    let env = setup().await;
    let topic = env.topic("consumer-shutdown", 1).await;
    let events: Vec<_> = (0..25).map(|i| sequenced(&topic, "order-1", i)).collect();
    let last = events[24].id.to_string();
    env.commit(events).await;
    let (stop_relay, relay) = env.spawn_relay(RelayConfig::default());

    let (stop, consumer) =
        env.spawn_consumer(consumer_config("drain", &topic), Recorder::default());
    env.applied(&last).await;
    stop.cancel();
    consumer.await.unwrap();
    stop_relay.cancel();
    relay.await.unwrap().unwrap();

    // The group's committed offset is past the last record: a restart re-reads nothing.
    let probe: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", env.kafka.bootstrap_servers())
        .set("group.id", "drain")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(&topic, 0);
    let committed = probe
        .committed_offsets(tpl, Duration::from_secs(10))
        .unwrap();
    let offset = committed.find_partition(&topic, 0).unwrap().offset();
    assert_eq!(offset, Offset::Offset(25));
}

#[tokio::test]
async fn a_consumer_of_a_missing_topic_does_not_die() {
    // A subscriber may start before the producer created its topic.
    let env = setup().await;
    let topic = TestKafka::unique_topic("consumer-missing");
    let consumer = Consumer::new(
        env.db.pool.clone(),
        &env.config,
        ConsumerConfig::new("early", [&topic]),
        Recorder::default(),
    )
    .unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn({
        let stop = stop.clone();
        async move { consumer.run(stop).await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!task.is_finished());
    stop.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_within_the_session_timeout_when_the_broker_is_gone() {
    let env = setup().await;
    let topic = env.topic("consumer-broker-gone", 1).await;
    let events: Vec<_> = (0..5).map(|i| sequenced(&topic, "order-1", i)).collect();
    let last = events[4].id.to_string();
    env.commit(events).await;
    let (stop_relay, relay) = env.spawn_relay(RelayConfig::default());
    let (stop, consumer) =
        env.spawn_consumer(consumer_config("broker-gone", &topic), Recorder::default());
    env.applied(&last).await;
    stop_relay.cancel();
    relay.await.unwrap().unwrap();

    // The brokers die; then the service is asked to stop (a node drained during an outage).
    if !env.kafka.set_brokers_down(true) {
        eprintln!("skipped: an external broker cannot be stopped by the test");
        stop.cancel();
        consumer.await.unwrap();
        return;
    }
    let started = std::time::Instant::now();
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(20), consumer)
        .await
        .expect("the consumer's shutdown waited for a dead broker")
        .unwrap();
    // session.timeout.ms (6 s) bounds the close, plus a margin.
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        env.effects().await.len(),
        5,
        "what was applied stays applied"
    );
}

#[tokio::test]
async fn a_failure_inside_a_batch_keeps_the_records_around_it_applied_once() {
    let env = setup().await;
    let topic = env.topic("consumer-batch-failure", 1).await;
    let config = consumer_config("batch-failure", &topic);
    let dlq = config.dead_letter_topic.clone();
    env.kafka.create_topic(&dlq, 1).await;
    let before = sequenced(&topic, "order-1", 0);
    let poison = NewEvent::raw(
        &topic,
        "order-2",
        "shop.test.v1.Sequenced",
        b"poison".to_vec(),
    );
    let after = sequenced(&topic, "order-3", 0);
    let ids: Vec<String> = [&before, &poison, &after]
        .iter()
        .map(|e| e.id.to_string())
        .collect();
    env.commit(vec![before, poison, after]).await;
    let (stop_relay, relay) = env.spawn_relay(RelayConfig::default());
    // All three are on the topic before the consumer starts, so it fetches them together.
    assert_eq!(env.read(&topic, 3).await.len(), 3);

    let recorder = Recorder::default();
    let (stop, consumer) = env.spawn_consumer(config, recorder.clone());
    env.applied(&ids[2]).await;
    let dead = env.read(&dlq, 1).await;
    stop.cancel();
    consumer.await.unwrap();
    stop_relay.cancel();
    relay.await.unwrap().unwrap();

    let mut applied: Vec<String> = env.effects().await.into_iter().map(|(id, _)| id).collect();
    applied.sort();
    let mut expected = vec![ids[0].clone(), ids[2].clone()];
    expected.sort();
    assert_eq!(
        applied, expected,
        "the records around the failure, once each"
    );
    assert_eq!(recorder.calls(&ids[1]), 1, "the failing handler ran once");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].header("ce_id"), Some(ids[1].as_str()));
    assert_eq!(
        count(&env.db.pool, "SELECT count(*) FROM eventing_inbox").await,
        2,
        "the dead-lettered record has no inbox row"
    );
}
