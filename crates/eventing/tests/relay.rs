//! The transactional outbox and its relay, against real PostgreSQL and a real Kafka-protocol
//! broker (the mock cluster by default, tansu in CI).

mod common;

use std::time::Duration;

use common::*;
use shop_eventing::{FailpointAction, Failpoints, NewEvent, RelayConfig, RelayError};
use tracing::Instrument;

#[tokio::test]
async fn committed_events_reach_the_topic_in_key_order_with_cloudevents_headers() {
    let env = setup().await;
    let topic = env.topic("relay-order", 3).await;
    let (keys, per_key) = (6, 10);

    // Appended under a span, so the events carry its trace context.
    let span = tracing::info_span!("place orders");
    let trace_id = span
        .in_scope(shop_telemetry::current_trace_id)
        .expect("test spans have trace ids");
    async {
        for seq in 0..per_key {
            let events = (0..keys)
                .map(|k| sequenced(&topic, &format!("order-{k}"), seq))
                .collect();
            env.commit(events).await;
        }
        // A rolled-back transaction: its events must never be published.
        let mut tx = env.db.pool.begin().await.unwrap();
        for seq in 0..5 {
            env.outbox
                .append(&mut tx, sequenced(&topic, "rolled-back", seq))
                .await
                .unwrap();
        }
        tx.rollback().await.unwrap();
    }
    .instrument(span)
    .await;

    let (stop, relay) = env.spawn_relay(RelayConfig::default());
    let records = env.read(&topic, keys * per_key).await;
    env.drained().await;
    stop.cancel();
    relay.await.unwrap().unwrap();

    assert_eq!(
        records.len(),
        keys * per_key,
        "every committed event exactly once, none rolled back"
    );
    assert!(
        records
            .iter()
            .all(|r| r.key.as_deref() != Some("rolled-back"))
    );
    assert_per_key_order(&records, keys, per_key);
    for record in &records {
        let id = record.header("ce_id").expect("ce_id");
        assert!(uuid::Uuid::parse_str(id).is_ok(), "ce_id is a UUID: {id}");
        assert_eq!(record.header("ce_type"), Some("shop.test.v1.Sequenced"));
        assert_eq!(record.header("ce_source"), Some("/shop/test"));
        assert_eq!(record.header("ce_specversion"), Some("1.0"));
        assert_eq!(record.header("content-type"), Some("application/protobuf"));
        assert_eq!(record.header("ce_partitionkey"), record.key.as_deref());
        let time = record.header("ce_time").expect("ce_time");
        assert!(
            chrono::DateTime::parse_from_rfc3339(time).is_ok(),
            "ce_time is RFC 3339: {time}"
        );
        let traceparent = record.header("traceparent").expect("traceparent");
        assert!(
            traceparent.starts_with(&format!("00-{trace_id}-")),
            "{traceparent} continues {trace_id}"
        );
    }
    // Same key, same partition.
    let mut partition_of = std::collections::HashMap::new();
    for record in &records {
        let p = *partition_of
            .entry(record.key.clone())
            .or_insert(record.partition);
        assert_eq!(
            p, record.partition,
            "all events of {:?} in one partition",
            record.key
        );
    }
}

#[tokio::test]
async fn protobuf_events_keep_their_type_and_payload() {
    use prost::Message;
    use shop_proto::payment::v1::PaymentCaptured;

    let env = setup().await;
    let topic = env.topic("relay-proto", 1).await;
    let captured = PaymentCaptured {
        order_id: "order-1".into(),
        customer_id: "alice".into(),
        amount: Some(shop_proto::common::v1::Money {
            amount_minor: 1999,
            currency: "EUR".into(),
        }),
    };
    env.commit(vec![NewEvent::new(&topic, "order-1", &captured)])
        .await;

    let (stop, relay) = env.spawn_relay(RelayConfig::default());
    let records = env.read(&topic, 1).await;
    stop.cancel();
    relay.await.unwrap().unwrap();

    assert_eq!(records.len(), 1);
    assert_eq!(
        records[0].header("ce_type"),
        Some("shop.payment.v1.PaymentCaptured")
    );
    assert_eq!(
        PaymentCaptured::decode(records[0].payload.as_slice()).unwrap(),
        captured
    );
}

#[tokio::test]
async fn a_relay_killed_after_the_ack_republishes_and_the_consumer_applies_once() {
    let env = setup().await;
    // One partition: the consumer's progress past the last record proves it saw every one.
    let topic = env.topic("relay-crash", 1).await;
    let events: Vec<_> = (0..20)
        .map(|i| sequenced(&topic, &format!("order-{}", i % 4), i / 4))
        .collect();
    env.commit(events).await;

    // Crash right after Kafka acknowledged the batch, before the rows are deleted.
    let failpoints = Failpoints::default();
    failpoints.arm("relay.after_publish", FailpointAction::Crash);
    let crashed = env.relay(RelayConfig {
        failpoints,
        ..RelayConfig::default()
    });
    let result = crashed
        .run(tokio_util::sync::CancellationToken::new())
        .await;
    assert!(matches!(result, Err(RelayError::Crashed(_))), "{result:?}");
    drop(crashed);
    assert_eq!(
        env.outbox_len().await,
        20,
        "nothing deleted: the events are not lost"
    );
    assert_eq!(
        env.read(&topic, 20).await.len(),
        20,
        "the batch was published before the crash"
    );

    // After restart the same events go out again.
    let (stop, relay) = env.spawn_relay(RelayConfig::default());
    env.drained().await;
    let records = env.read(&topic, 40).await;
    assert_eq!(records.len(), 40, "published twice: at-least-once");
    assert_per_key_order(&records, 4, 5);

    // The consumer sees 40 records and applies 20.
    let recorder = Recorder::default();
    let (stop_consumer, consumer) =
        env.spawn_consumer(consumer_config("crash-consumer", &topic), recorder.clone());
    let sentinel = sequenced(&topic, "sentinel", 0);
    let sentinel_id = sentinel.id.to_string();
    env.commit(vec![sentinel]).await;
    env.applied(&sentinel_id).await;
    stop_consumer.cancel();
    consumer.await.unwrap();
    stop.cancel();
    relay.await.unwrap().unwrap();

    let effects = env.effects().await;
    assert_eq!(effects.len(), 21, "each event applied once");
    let distinct: std::collections::HashSet<_> = effects.iter().map(|(id, _)| id).collect();
    assert_eq!(distinct.len(), 21);
    assert_eq!(
        count(&env.db.pool, "SELECT count(*) FROM eventing_inbox").await,
        21
    );
}

#[tokio::test]
async fn two_relays_at_once_deliver_every_event_in_key_order() {
    let env = setup().await;
    let topic = env.topic("relay-pair", 3).await;
    let fast = || RelayConfig {
        standby_retry: Duration::from_millis(50),
        batch_size: 50,
        ..RelayConfig::default()
    };
    let (stop_a, relay_a) = env.spawn_relay(fast());
    let (stop_b, relay_b) = env.spawn_relay(fast());
    let (keys, per_key) = (10, 40);

    // Writers commit while both relays run; halfway, one relay stops and the other carries on.
    for seq in 0..per_key {
        let events = (0..keys)
            .map(|k| sequenced(&topic, &format!("order-{k}"), seq))
            .collect();
        env.commit(events).await;
        if seq == per_key / 2 {
            stop_a.cancel();
        }
    }
    env.drained().await;
    let records = env.read(&topic, keys * per_key).await;
    stop_b.cancel();
    relay_a.await.unwrap().unwrap();
    relay_b.await.unwrap().unwrap();

    assert_per_key_order(&records, keys, per_key);
}

#[tokio::test]
async fn a_transaction_that_commits_late_with_an_earlier_id_is_not_skipped() {
    let env = setup().await;
    let topic = env.topic("relay-late", 1).await;
    let (stop, relay) = env.spawn_relay(RelayConfig::default());

    // `early` takes the lower id but commits after `late`.
    let mut early_tx = env.db.pool.begin().await.unwrap();
    env.outbox
        .append(&mut early_tx, sequenced(&topic, "early", 0))
        .await
        .unwrap();
    env.commit(vec![sequenced(&topic, "late", 0)]).await;

    let first = env.kafka.read(&topic, 1, TIMEOUT).await;
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].key.as_deref(), Some("late"));
    // The open transaction's row is invisible: the relay has nothing left it can see.
    env.drained().await;

    early_tx.commit().await.unwrap();
    env.drained().await;
    let records = env.read(&topic, 2).await;
    stop.cancel();
    relay.await.unwrap().unwrap();

    let keys: Vec<_> = records.iter().map(|r| r.key.clone().unwrap()).collect();
    assert_eq!(keys, ["late", "early"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_stopping_while_the_broker_is_down_stops_promptly_and_keeps_the_events() {
    let env = setup().await;
    let topic = env.topic("relay-broker-down", 1).await;
    if !env.kafka.set_brokers_down(true) {
        eprintln!("skipped: an external broker cannot be stopped by the test");
        return;
    }
    env.commit((0..3).map(|i| sequenced(&topic, "order-1", i)).collect())
        .await;
    let (stop, relay) = env.spawn_relay(RelayConfig::default());
    // Let it read the batch and wait for acknowledgements that cannot come.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = std::time::Instant::now();
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), relay)
        .await
        .expect("the relay's shutdown waited for a dead broker")
        .unwrap()
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        env.outbox_len().await,
        3,
        "unacknowledged events stay in the outbox"
    );

    // The broker comes back: another relay publishes them.
    assert!(env.kafka.set_brokers_down(false));
    let (stop, relay) = env.spawn_relay(RelayConfig::default());
    env.drained().await;
    stop.cancel();
    relay.await.unwrap().unwrap();
    assert_eq!(env.read(&topic, 3).await.len(), 3);
}

#[tokio::test]
async fn a_relay_killed_after_reading_before_publishing_loses_nothing() {
    let env = setup().await;
    let topic = env.topic("relay-before-publish", 1).await;
    env.commit((0..5).map(|i| sequenced(&topic, "order-1", i)).collect())
        .await;
    let failpoints = Failpoints::default();
    failpoints.arm("relay.before_publish", FailpointAction::Crash);
    let crashed = env.relay(RelayConfig {
        failpoints,
        ..RelayConfig::default()
    });
    let result = crashed
        .run(tokio_util::sync::CancellationToken::new())
        .await;
    assert!(matches!(result, Err(RelayError::Crashed(_))), "{result:?}");
    drop(crashed);
    assert_eq!(
        env.outbox_len().await,
        5,
        "read, not published, not deleted"
    );

    let (stop, relay) = env.spawn_relay(RelayConfig::default());
    env.drained().await;
    let records = env.read(&topic, 5).await;
    stop.cancel();
    relay.await.unwrap().unwrap();
    assert_eq!(records.len(), 5, "published once, after the restart");
    assert_per_key_order(&records, 1, 5);
}
