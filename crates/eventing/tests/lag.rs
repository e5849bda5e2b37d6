//! The consumer lag as the broker sees it: a consumer that makes no progress (its handler never
//! returns, its partition waits on a record that keeps failing, its process is gone) shows a
//! lag that grows with every record produced, measured apart from its poll loop. Real
//! PostgreSQL, a real Kafka-protocol broker.

mod common;

use std::time::Duration;

use common::*;
use prometheus_client::registry::Registry;
use shop_eventing::{
    EventingMetrics, Handler, HandlerError, InboundEvent, PartitionLag, group_lag,
};
use shop_testkit::eventually;
use sqlx::PgConnection;
use tokio::sync::watch;

/// Applies records as [`Recorder`] does, except those whose payload starts with `block`: their
/// handler does not return until the gate opens (a call to a dependency that hangs, a lock
/// held elsewhere for good).
#[derive(Clone)]
struct Gate {
    recorder: Recorder,
    open: watch::Receiver<bool>,
}

impl Handler for Gate {
    async fn handle(
        &self,
        tx: &mut PgConnection,
        event: &InboundEvent,
    ) -> Result<(), HandlerError> {
        if event.payload.starts_with(b"block") {
            let mut open = self.open.clone();
            let _ = open.wait_for(|open| *open).await;
        }
        self.recorder.handle(tx, event).await
    }
}

/// Produces one well-formed event to `partition` of `topic`; returns its id.
async fn produce(env: &Env, topic: &str, partition: i32, payload: &str) -> String {
    let id = uuid::Uuid::now_v7().to_string();
    produce_raw(
        &env.kafka,
        topic,
        partition,
        Some("order-1"),
        &borrowed(&event_headers(&id)),
        payload.as_bytes(),
    )
    .await;
    id
}

fn gauge(
    registry: &Registry,
    name: &str,
    group: &str,
    topic: &str,
    partition: &str,
) -> Option<f64> {
    metric(
        registry,
        name,
        &[("group", group), ("topic", topic), ("partition", partition)],
    )
}

/// Waits until the exported lag of partition 0 is `lag` and the broker, asked by a client of
/// this test, agrees.
async fn lag_is(env: &Env, registry: &Registry, group: &str, topic: &str, lag: i64) {
    eventually(
        &format!("an exported lag of {lag} on {topic}/0"),
        TIMEOUT,
        || async {
            let exported = gauge(registry, "shop_consumer_lag", group, topic, "0")?;
            let broker = env.kafka.group_lag(group, topic).await.ok()? as f64;
            (exported == lag as f64 && broker == exported).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_whose_handler_never_returns_shows_a_growing_lag() {
    let env = setup().await;
    let topic = env.topic("lag-hung-handler", 1).await;
    let mut registry = Registry::default();
    let mut config = consumer_config("lag-hung-handler", &topic);
    config.lag_interval = Duration::from_millis(200);
    config.metrics = EventingMetrics::new(&mut registry);
    let group = config.group_id.clone();
    let (open, gate) = watch::channel(false);
    let (stop, consumer) = env.spawn_consumer(
        config,
        Gate {
            recorder: Recorder::default(),
            open: gate,
        },
    );

    let first = produce(&env, &topic, 0, "order-1/0").await;
    env.applied(&first).await;
    lag_is(&env, &registry, &group, &topic, 0).await;

    // The next record's handler hangs: the loop waits on it, and nothing after it is applied.
    let hung = produce(&env, &topic, 0, "block").await;
    for i in 1..=3 {
        produce(&env, &topic, 0, &format!("order-1/{i}")).await;
    }
    lag_is(&env, &registry, &group, &topic, 4).await;
    for i in 4..=6 {
        produce(&env, &topic, 0, &format!("order-1/{i}")).await;
    }
    lag_is(&env, &registry, &group, &topic, 7).await;
    // The committed offset has not moved since the first record: what the no-progress alert
    // watches.
    assert_eq!(
        gauge(
            &registry,
            "shop_consumer_committed_offset",
            &group,
            &topic,
            "0"
        ),
        Some(1.0)
    );
    assert_eq!(effects_count(&env).await, 1);

    // The dependency answers again: the backlog is applied and the lag is back to 0.
    open.send_replace(true);
    env.applied(&hung).await;
    lag_is(&env, &registry, &group, &topic, 0).await;
    assert_eq!(
        gauge(
            &registry,
            "shop_consumer_committed_offset",
            &group,
            &topic,
            "0"
        ),
        Some(8.0)
    );
    stop.cancel();
    consumer.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_that_waits_on_a_failing_record_shows_a_growing_lag() {
    let env = setup().await;
    let topic = env.topic("lag-paused", 1).await;
    let mut registry = Registry::default();
    let mut config = consumer_config("lag-paused", &topic);
    config.lag_interval = Duration::from_millis(200);
    // The partition stays paused for seconds between tries (in production, up to the cap of
    // its backoff).
    config.retry.initial_backoff = Duration::from_secs(5);
    config.retry.max_backoff = Duration::from_secs(10);
    config.metrics = EventingMetrics::new(&mut registry);
    let group = config.group_id.clone();
    let recorder = Recorder::default();
    let (stop, consumer) = env.spawn_consumer(config, recorder.clone());

    let first = produce(&env, &topic, 0, "order-1/0").await;
    env.applied(&first).await;
    lag_is(&env, &registry, &group, &topic, 0).await;

    // Its dependency is down: the record fails transiently, and its partition is paused
    // until the next try.
    let id = uuid::Uuid::now_v7().to_string();
    recorder.block(&id);
    produce_raw(
        &env.kafka,
        &topic,
        0,
        Some("order-1"),
        &borrowed(&event_headers(&id)),
        b"order-1/1",
    )
    .await;
    eventually("the record failing", TIMEOUT, || async {
        (recorder.calls(&id) > 0).then_some(())
    })
    .await;
    for i in 2..=4 {
        produce(&env, &topic, 0, &format!("order-1/{i}")).await;
    }
    lag_is(&env, &registry, &group, &topic, 4).await;
    assert_eq!(
        gauge(
            &registry,
            "shop_consumer_committed_offset",
            &group,
            &topic,
            "0"
        ),
        Some(1.0)
    );
    // Back: the record applies at its next try, and the lag goes back to 0.
    recorder.unblock(&id);
    env.applied(&id).await;
    lag_is(&env, &registry, &group, &topic, 0).await;
    stop.cancel();
    consumer.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_whose_consumer_is_gone_shows_a_growing_lag_from_the_broker() {
    let env = setup().await;
    let topic = env.topic("lag-gone", 2).await;
    let config = consumer_config("lag-gone", &topic);
    let group = config.group_id.clone();
    let (_stop, consumer) = env.spawn_consumer(config, Recorder::default());
    let mut ids = Vec::new();
    for i in 0..2 {
        ids.push(produce(&env, &topic, 0, &format!("order-1/{i}")).await);
    }
    for id in &ids {
        env.applied(id).await;
    }
    let topics = vec![topic.clone()];
    eventually("the group's commit", TIMEOUT, || async {
        let lag = group_lag(&env.config, &group, &topics).await.ok()?;
        lag.iter()
            .any(|p| p.partition == 0 && p.committed == Some(2))
            .then_some(())
    })
    .await;

    // The consumer dies (its task is dropped mid-run, as a killed process's would be) and no
    // member is left. Records keep coming, on both partitions.
    consumer.abort();
    let _ = consumer.await;
    for i in 2..5 {
        produce(&env, &topic, 0, &format!("order-1/{i}")).await;
    }
    produce(&env, &topic, 1, "order-2/0").await;
    let mut lag = group_lag(&env.config, &group, &topics).await.unwrap();
    lag.sort_by_key(|p| p.partition);
    assert_eq!(
        lag,
        [
            PartitionLag {
                topic: topic.clone(),
                partition: 0,
                committed: Some(2),
                low_watermark: 0,
                high_watermark: 5,
            },
            // Never committed: everything retained is behind.
            PartitionLag {
                topic: topic.clone(),
                partition: 1,
                committed: None,
                low_watermark: 0,
                high_watermark: 1,
            },
        ]
    );
    assert_eq!(lag.iter().map(PartitionLag::lag).sum::<i64>(), 4);

    produce(&env, &topic, 0, "order-1/5").await;
    let lag = group_lag(&env.config, &group, &topics).await.unwrap();
    assert_eq!(lag.iter().map(PartitionLag::lag).sum::<i64>(), 5);
    assert_eq!(
        env.kafka.group_lag(&group, &topic).await.unwrap(),
        5,
        "the test kit's own reading of the broker agrees"
    );

    // A topic the broker does not know has no partitions to report.
    let unknown = vec![shop_testkit::TestKafka::unique_topic("lag-unknown")];
    assert_eq!(group_lag(&env.config, &group, &unknown).await.unwrap(), []);
}

async fn effects_count(env: &Env) -> i64 {
    count(&env.db.pool, "SELECT count(*) FROM effects").await
}
