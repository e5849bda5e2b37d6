//! Bounded tables: no inbox row for what a handler ignores, and rows past the retention window
//! deleted while duplicates inside it are still caught.

mod common;

use std::time::{Duration, Instant};

use common::{Recorder, consumer_config, count, sequenced, setup};
use shop_eventing::{Handler, HandlerError, InboundEvent, NewEvent, RelayConfig, Retention};

/// Handles `shop.test.v1.Sequenced` only, as a service handles its saga's types only.
struct SequencedOnly(Recorder);

impl Handler for SequencedOnly {
    async fn handle(
        &self,
        tx: &mut sqlx::PgConnection,
        event: &InboundEvent,
    ) -> Result<(), HandlerError> {
        self.0.handle(tx, event).await
    }

    fn handles(&self, event: &InboundEvent) -> bool {
        event.event_type.as_deref() == Some("shop.test.v1.Sequenced")
    }
}

#[tokio::test]
async fn records_of_types_the_handler_ignores_leave_no_inbox_row_and_are_passed_over() {
    let env = setup().await;
    let topic = env.topic("retention-ignored", 1).await;
    // Interleaved on one partition: the ignored ones must not hold back the others' offsets.
    let mut events = Vec::new();
    for i in 0..10 {
        events.push(sequenced(&topic, "order-1", i));
        events.push(NewEvent::raw(
            &topic,
            "order-1",
            "shop.test.v1.Other",
            format!("other/{i}").into_bytes(),
        ));
    }
    let last_handled = events[18].id.to_string();
    env.commit(events).await;
    let (stop_relay, relay) = env.spawn_relay(RelayConfig::default());
    let mut registry = prometheus_client::registry::Registry::default();
    let mut config = consumer_config("ignored", &topic);
    config.metrics = shop_eventing::EventingMetrics::new(&mut registry);
    let (stop, consumer) = env.spawn_consumer(config, SequencedOnly(Recorder::default()));
    env.applied(&last_handled).await;
    stop.cancel();
    consumer.await.unwrap();
    stop_relay.cancel();
    relay.await.unwrap().unwrap();

    assert_eq!(
        count(&env.db.pool, "SELECT count(*) FROM effects").await,
        10
    );
    assert_eq!(
        count(&env.db.pool, "SELECT count(*) FROM eventing_inbox").await,
        10,
        "one inbox row per handled record, none for the ignored type"
    );
    let ignored = common::metric(
        &registry,
        "shop_consumer_messages_total",
        &[("outcome", "ignored")],
    );
    assert_eq!(ignored, Some(10.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inbox_stays_bounded_over_a_long_stream_and_still_catches_duplicates_in_its_window() {
    let env = setup().await;
    let topic = env.topic("retention-window", 3).await;
    let mut config = consumer_config("window", &topic);
    config.retention = Retention {
        window: Duration::from_secs(2),
        every: Duration::from_millis(250),
        batch: 50,
    };
    let (stop_relay, relay) = env.spawn_relay(RelayConfig::default());
    let (stop, consumer) = env.spawn_consumer(config, Recorder::default());

    // Up to 100 records a second for 8 s: four windows' worth.
    let started = Instant::now();
    let mut sent = 0;
    let mut largest = 0;
    let mut last = String::new();
    while started.elapsed() < Duration::from_secs(8) {
        let round: Vec<NewEvent> = (0..10)
            .map(|i| sequenced(&topic, &format!("order-{}", sent + i), 0))
            .collect();
        last = round[9].id.to_string();
        sent += round.len();
        env.commit(round.clone()).await;
        // A duplicate inside the window: the round's first record, published again (as a
        // relay does that crashed between Kafka's ack and its delete) once the original left.
        env.drained().await;
        env.commit(vec![round[0].clone()]).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        largest = largest.max(count(&env.db.pool, "SELECT count(*) FROM eventing_inbox").await);
    }
    env.applied(&last).await;
    assert_eq!(
        count(&env.db.pool, "SELECT count(*) FROM effects").await,
        i64::try_from(sent).unwrap(),
        "every record applied once: the duplicates inside the window were caught"
    );
    // 100 records/s kept for the 2 s window, plus a sweep interval and a batch of slack.
    assert!(
        largest <= 350,
        "the inbox held {largest} rows of {sent}: it does not stay within its window"
    );
    assert!(
        largest * 2 < i64::try_from(sent).unwrap(),
        "the inbox held {largest} rows of {sent} at once: old rows were not deleted"
    );

    // Once the stream stops, every row ages out.
    shop_testkit::eventually(
        "the inbox emptied by the sweep",
        Duration::from_secs(10),
        || {
            let pool = env.db.pool.clone();
            async move {
                let left: i64 = sqlx::query_scalar("SELECT count(*) FROM eventing_inbox")
                    .fetch_one(&pool)
                    .await
                    .ok()?;
                (left == 0).then_some(())
            }
        },
    )
    .await;
    stop.cancel();
    consumer.await.unwrap();
    stop_relay.cancel();
    relay.await.unwrap().unwrap();
}
