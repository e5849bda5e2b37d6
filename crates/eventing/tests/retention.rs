//! Bounded tables: no inbox row for what a handler ignores, and inbox and dead-letter rows past
//! the retention window deleted while duplicates inside it are still caught.

mod common;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use common::{Recorder, consumer_config, count, sequenced, setup};
use shop_eventing::{
    EventingMetrics, Handler, HandlerError, InboundEvent, NewEvent, RelayConfig, Retention,
};

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

fn other(topic: &str, key: &str, i: usize) -> NewEvent {
    NewEvent::raw(
        topic,
        key,
        "shop.test.v1.Other",
        format!("other/{i}").into_bytes(),
    )
}

#[tokio::test]
async fn records_of_types_the_handler_ignores_leave_no_inbox_row_and_are_passed_over() {
    let env = setup().await;
    let topic = env.topic("retention-ignored", 1).await;
    // Interleaved on one partition: the ignored ones must not hold back the others.
    let mut events = Vec::new();
    for i in 0..10 {
        events.push(sequenced(&topic, "order-1", i));
        events.push(other(&topic, "order-1", i));
    }
    let last_handled = events[18].id.to_string();
    env.commit(events).await;
    let (stop_relay, relay) = env.spawn_relay(RelayConfig::default());
    let mut registry = prometheus_client::registry::Registry::default();
    let mut config = consumer_config("retention-ignored", &topic);
    config.metrics = EventingMetrics::new(&mut registry);
    let (stop, consumer) = env.spawn_consumer(config, SequencedOnly(Recorder::default()));
    env.applied(&last_handled).await;
    let ignored = |registry: &prometheus_client::registry::Registry| {
        common::metric(
            registry,
            "shop_consumer_messages_total",
            &[("outcome", "ignored")],
        )
    };
    shop_testkit::eventually(
        "the ten other records passed over",
        common::TIMEOUT,
        || async { (ignored(&registry) == Some(10.0)).then_some(()) },
    )
    .await;
    stop.cancel();
    consumer.await.unwrap();
    stop_relay.cancel();
    relay.await.unwrap().unwrap();

    assert_eq!(
        count(&env.db.pool, "SELECT count(*) FROM effects").await,
        10,
        "every handled record applied"
    );
    assert_eq!(
        count(&env.db.pool, "SELECT count(*) FROM eventing_inbox").await,
        10,
        "one inbox row per handled record, none for the ignored type"
    );
    assert_eq!(
        count(
            &env.db.pool,
            "SELECT count(*) FROM eventing_inbox WHERE event_type = 'shop.test.v1.Other'"
        )
        .await,
        0
    );
}

/// A batch of records the handler ignores has no effect to protect, so it needs no
/// transaction and no inbox look-up: it is passed over even while the consumer's database
/// connections are all taken (about 7 of the 16 consumptions of an order are such records).
#[tokio::test]
async fn records_of_types_the_handler_ignores_are_passed_over_without_the_database() {
    let env = setup().await;
    let topic = env.topic("retention-ignored-no-db", 1).await;
    // The consumer's own pool of one connection, held by the test throughout.
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect_with(env.db.connect_options())
        .await
        .unwrap();
    let held = pool.acquire().await.unwrap();
    env.commit((0..10).map(|i| other(&topic, "order-1", i)).collect())
        .await;
    let (stop_relay, relay) = env.spawn_relay(RelayConfig::default());
    let mut registry = prometheus_client::registry::Registry::default();
    let mut config = consumer_config("retention-ignored-no-db", &topic);
    config.metrics = EventingMetrics::new(&mut registry);
    let consumer = shop_eventing::Consumer::new(
        pool.clone(),
        &env.config,
        config,
        SequencedOnly(Recorder::default()),
    )
    .unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn({
        let stop = stop.clone();
        async move { consumer.run(stop).await.unwrap() }
    });
    shop_testkit::eventually(
        "the ten records passed over while the pool is held",
        Duration::from_secs(15),
        || async {
            (common::metric(
                &registry,
                "shop_consumer_messages_total",
                &[("outcome", "ignored")],
            ) == Some(10.0))
            .then_some(())
        },
    )
    .await;
    drop(held);
    stop.cancel();
    task.await.unwrap();
    stop_relay.cancel();
    relay.await.unwrap().unwrap();
    assert_eq!(
        count(&env.db.pool, "SELECT count(*) FROM eventing_inbox").await,
        0
    );
}

/// How long the stream of [`the_tables_stay_bounded_over_a_long_stream_and_duplicates_inside_the_window_are_caught`]
/// runs: `SHOP_RETENTION_TEST_SECONDS`, 10 by default (longer runs measure the rows over time).
fn stream_length() -> Duration {
    let seconds = std::env::var("SHOP_RETENTION_TEST_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    Duration::from_secs(seconds)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tables_stay_bounded_over_a_long_stream_and_duplicates_inside_the_window_are_caught() {
    const WINDOW: Duration = Duration::from_secs(2);
    const EVERY: Duration = Duration::from_millis(250);
    // Longer than this, a row outlived its window by more than a sweep and a loaded machine's
    // delays.
    const STALE: Duration = Duration::from_secs(4);

    let env = setup().await;
    let topic = env.topic("retention-window", 3).await;
    let mut config = consumer_config("retention-window", &topic);
    config.retention = Retention {
        window: WINDOW,
        every: EVERY,
        batch: 50,
    };
    env.kafka.create_topic(&config.dead_letter_topic, 1).await;
    let mut registry = prometheus_client::registry::Registry::default();
    config.metrics = EventingMetrics::new(&mut registry);
    let (stop_relay, relay) = env.spawn_relay(RelayConfig::default());
    let (stop, consumer) = env.spawn_consumer(config, SequencedOnly(Recorder::default()));

    // Rounds of 8 handled records, a poisoned one (dead-lettered: a dead-letter row) and one of
    // a type the handler ignores (no row), plus a copy of a record published about half a
    // window before (a duplicate inside the window: its row is a second old and the sweep has
    // run in between), until the stream's length has passed.
    let length = stream_length();
    let started = Instant::now();
    let mut handled = 0_i64;
    let mut poisoned = 0_i64;
    let mut recent: VecDeque<(Instant, NewEvent)> = VecDeque::new();
    let mut duplicated: Vec<String> = Vec::new();
    let mut samples: Vec<(f64, i64, i64, i64)> = Vec::new();
    let mut stale_rows = Vec::new();
    let mut last_sample = Instant::now();
    let mut round = 0;
    let mut first: Option<NewEvent> = None;
    while started.elapsed() < length {
        let mut events: Vec<NewEvent> = (0..8)
            .map(|i| sequenced(&topic, &format!("order-{round}-{i}"), 0))
            .collect();
        handled += 8;
        if first.is_none() {
            first = Some(events[0].clone());
        }
        for event in &events {
            recent.push_back((Instant::now(), event.clone()));
        }
        events.push(NewEvent::raw(
            &topic,
            format!("order-{round}-poisoned"),
            "shop.test.v1.Sequenced",
            format!("poison/{round}").into_bytes(),
        ));
        poisoned += 1;
        events.push(other(&topic, &format!("order-{round}-0"), round));
        while recent
            .front()
            .is_some_and(|(at, _)| at.elapsed() > WINDOW / 2)
        {
            let (_, old) = recent.pop_front().expect("front");
            if recent
                .front()
                .is_none_or(|(at, _)| at.elapsed() <= WINDOW / 2)
            {
                duplicated.push(old.id.to_string());
                events.push(old);
            }
        }
        env.commit(events).await;
        round += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;

        let inbox = count(&env.db.pool, "SELECT count(*) FROM eventing_inbox").await;
        let dead = count(&env.db.pool, "SELECT count(*) FROM eventing_dead_letter").await;
        let stale: i64 = sqlx::query_scalar(
            "SELECT (SELECT count(*) FROM eventing_inbox WHERE processed_at < now() - make_interval(secs => $1)) \
             + (SELECT count(*) FROM eventing_dead_letter WHERE failed_at < now() - make_interval(secs => $1))",
        )
        .bind(STALE.as_secs_f64())
        .fetch_one(&env.db.pool)
        .await
        .unwrap();
        if stale > 0 {
            stale_rows.push((started.elapsed().as_secs_f64(), stale));
        }
        samples.push((started.elapsed().as_secs_f64(), handled, inbox, dead));
        if last_sample.elapsed() >= Duration::from_secs(1) {
            eprintln!(
                "t={:>6.1}s handled records sent={handled:>6} inbox rows={inbox:>5} dead-letter rows={dead:>4}",
                started.elapsed().as_secs_f64()
            );
            last_sample = Instant::now();
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    // Every partition caught up (the last round's records are on all three).
    shop_testkit::eventually("every record applied", common::TIMEOUT, || async {
        (count(&env.db.pool, "SELECT count(*) FROM effects").await >= handled).then_some(())
    })
    .await;

    // Every record applied once (its effect committed once): the copies inside the window
    // were caught.
    let twice: Vec<String> =
        sqlx::query_scalar("SELECT event_id FROM effects GROUP BY event_id HAVING count(*) > 1")
            .fetch_all(&env.db.pool)
            .await
            .unwrap();
    assert!(
        twice.is_empty(),
        "applied twice although their copies came inside the window: {twice:?}"
    );
    assert!(
        duplicated.len() > 10,
        "the stream sent only {} duplicates",
        duplicated.len()
    );
    assert_eq!(
        count(&env.db.pool, "SELECT count(*) FROM effects").await,
        handled,
        "{handled} records applied once each ({} copies caught)",
        duplicated.len()
    );
    shop_testkit::eventually("the copies counted", common::TIMEOUT, || async {
        let duplicates = common::metric(
            &registry,
            "shop_consumer_messages_total",
            &[("outcome", "duplicate")],
        )?;
        (duplicates >= duplicated.len() as f64).then_some(())
    })
    .await;

    // Bounded: no row outlived its window by more than a sweep, and the tables held a window's
    // worth of rows (plus a few sweeps), not the stream.
    assert!(
        stale_rows.is_empty(),
        "rows older than {STALE:?} (a {WINDOW:?} window, a sweep every {EVERY:?}) at (seconds, rows): {stale_rows:?}"
    );
    let rate = handled as f64 / elapsed;
    let bound = (rate * (WINDOW + STALE).as_secs_f64()).ceil() as i64;
    let largest_inbox = samples.iter().map(|s| s.2).max().unwrap_or(0);
    let largest_dead = samples.iter().map(|s| s.3).max().unwrap_or(0);
    eprintln!(
        "{handled} records handled, {poisoned} dead-lettered, {} duplicates caught in {elapsed:.1} s ({rate:.0} handled/s); at most {largest_inbox} inbox rows and {largest_dead} dead-letter rows (bound {bound})",
        duplicated.len()
    );
    assert!(
        largest_inbox <= bound,
        "the inbox held {largest_inbox} rows, more than {bound} ({rate:.0} records/s for {:?})",
        WINDOW + STALE
    );
    assert!(
        largest_dead * 8 <= bound,
        "the dead-letter table held {largest_dead} rows, more than a window's worth"
    );
    // The sweeps deleted most of what the stream wrote: a stream of five windows leaves at most
    // about two windows' worth (the last one, and the slack of a loaded machine). Counted by
    // the sweeps themselves, not by the peak (the consumer applies in bursts when it lags,
    // and a burst of young rows says nothing about old ones).
    let swept = common::metric(
        &registry,
        "shop_consumer_retention_deleted_rows_total",
        &[("table", "eventing_inbox")],
    )
    .unwrap_or(0.0);
    assert!(
        swept * 2.0 > handled as f64,
        "the sweeps deleted {swept} inbox rows of {handled}: old rows were not deleted (at most {largest_inbox} at once)"
    );

    // A copy older than the window is applied again: the inbox forgot it, as it forgets what
    // the topic no longer holds (why the window must outlast the topic's retention).
    let forgotten = first.expect("a first round");
    let id = forgotten.id.to_string();
    shop_testkit::eventually("the first rows deleted", common::TIMEOUT, || async {
        let left: i64 =
            sqlx::query_scalar("SELECT count(*) FROM eventing_inbox WHERE event_id = $1")
                .bind(&id)
                .fetch_one(&env.db.pool)
                .await
                .ok()?;
        (left == 0).then_some(())
    })
    .await;
    env.commit(vec![forgotten]).await;
    shop_testkit::eventually("the forgotten copy applied", common::TIMEOUT, || async {
        let effects: i64 = sqlx::query_scalar("SELECT count(*) FROM effects WHERE event_id = $1")
            .bind(&id)
            .fetch_one(&env.db.pool)
            .await
            .ok()?;
        (effects == 2).then_some(())
    })
    .await;

    // Once the stream stops, every row ages out.
    shop_testkit::eventually(
        "the inbox and dead-letter tables emptied by the sweep",
        Duration::from_secs(20),
        || async {
            let left: i64 = sqlx::query_scalar(
                "SELECT (SELECT count(*) FROM eventing_inbox) + (SELECT count(*) FROM eventing_dead_letter)",
            )
            .fetch_one(&env.db.pool)
            .await
            .ok()?;
            (left == 0).then_some(())
        },
    )
    .await;
    let deleted =
        common::metric(&registry, "shop_consumer_retention_deleted_rows_total", &[]).unwrap_or(0.0);
    assert!(
        deleted >= (handled + poisoned) as f64,
        "the sweep counted {deleted} deleted rows of {}",
        handled + poisoned
    );
    stop.cancel();
    consumer.await.unwrap();
    stop_relay.cancel();
    relay.await.unwrap().unwrap();
}
