//! Outbox relay benchmark: backlog drain rate and commit-to-consume latency.
//!
//! ```text
//! deploy/bench-relay.sh                 # embedded mock cluster
//! deploy/bench-relay.sh --broker tansu  # tansu broker
//! ```
//! (or `cargo bench -p shop-eventing --bench relay` with `DATABASE_URL` and optionally
//! `KAFKA_BOOTSTRAP_SERVERS` set). Knobs: `BENCH_BACKLOG` (rows, default 100000),
//! `BENCH_RATE` (events/s, default 1000), `BENCH_SECONDS` (steady phase, default 20),
//! `BENCH_FETCH_WAIT_MS` (the measuring consumer's `fetch.wait.max.ms`, default 5).
//!
//! 1. **Drain**: fills the outbox with a backlog of 300-byte events over 1,000 keys, starts a
//!    relay and times how long until every row is published and deleted.
//! 2. **Steady latency**: commits events at a fixed rate (10 per transaction) while a relay runs,
//!    and a plain Kafka consumer measures the time from each transaction's commit to the
//!    record's arrival.
//! 3. **Broker alone**: the same rate sent straight to Kafka (no outbox, no relay), timed from
//!    the send to the arrival: the part of step 2's latency that is the broker's and the
//!    consumer's, so the relay's own share is the difference.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::message::{Headers, Message};
use shop_eventing::{KafkaConfig, NewEvent, Outbox, Relay, RelayConfig};
use shop_testkit::{TestDb, TestKafka};
use tokio_util::sync::CancellationToken;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // As in a service: spans are created (the relay's `send` span per event) though none is
    // exported, so their cost is part of what is measured.
    let _telemetry = shop_telemetry::init("relay-bench", "warn");
    let backlog = env_or("BENCH_BACKLOG", 100_000);
    let rate = env_or("BENCH_RATE", 1000);
    let seconds = env_or("BENCH_SECONDS", 20);

    let db = TestDb::create().await;
    shop_eventing::migrate(&db.pool).await?;
    let kafka = TestKafka::start();
    let broker = if kafka.is_mock() {
        "librdkafka mock cluster (in-process)"
    } else {
        "external broker"
    };
    let config = KafkaConfig::new(kafka.bootstrap_servers());
    let topic = TestKafka::unique_topic("bench");
    kafka.create_topic(&topic, 6).await;
    println!(
        "relay benchmark: broker = {broker} at {}, topic {topic} (6 partitions)",
        kafka.bootstrap_servers()
    );

    // --- 1. drain a backlog -------------------------------------------------------------------
    // The backlog is inserted with one statement (filling is not what is measured), in the same
    // shape the outbox writer produces.
    sqlx::query(
        "INSERT INTO eventing_outbox (event_id, topic, partition_key, event_type, source, payload, headers) \
         SELECT gen_random_uuid(), $1, 'order-' || (i % 1000), 'shop.bench.v1.Filler', '/shop/bench', \
                convert_to(repeat('x', 300), 'UTF8'), \
                '{\"traceparent\":\"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\"}'::jsonb \
         FROM generate_series(1, $2) AS i",
    )
    .bind(&topic)
    .bind(i64::try_from(backlog)?)
    .execute(&db.pool)
    .await?;
    sqlx::query("VACUUM ANALYZE eventing_outbox")
        .execute(&db.pool)
        .await?;

    let relay = Relay::new(db.connect_options(), &config, RelayConfig::default())?;
    let waker = relay.waker();
    let stop = CancellationToken::new();
    let started = Instant::now();
    let task = tokio::spawn({
        let stop = stop.clone();
        async move { relay.run(stop).await }
    });
    loop {
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM eventing_outbox")
            .fetch_one(&db.pool)
            .await?;
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drain = started.elapsed();
    #[allow(clippy::cast_precision_loss)]
    let drain_rate = backlog as f64 / drain.as_secs_f64();
    println!(
        "drain: {backlog} events published and deleted in {:.2} s = {drain_rate:.0} events/s",
        drain.as_secs_f64()
    );

    // --- 2. steady-rate latency ---------------------------------------------------------------
    // A fresh topic read from its start: no record is missed while the reader joins its group.
    let topic = TestKafka::unique_topic("bench-steady");
    kafka.create_topic(&topic, 6).await;
    let committed_at: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let consumer = bench_consumer(&kafka, &topic).await?;

    let total = rate * seconds;
    let per_tx = 10;
    // Woken after each commit, as the services' outboxes wake their relays.
    let outbox = Outbox::new("/shop/bench").waking(waker);
    let writer = tokio::spawn({
        let pool = db.pool.clone();
        let committed_at = committed_at.clone();
        let topic = topic.clone();
        async move {
            let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 * per_tx / rate));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let started = Instant::now();
            let mut sent = 0;
            while sent < total {
                tick.tick().await;
                let mut ids = Vec::with_capacity(usize::try_from(per_tx)?);
                shop_eventing::committing(async {
                    let mut tx = pool.begin().await?;
                    for _ in 0..per_tx {
                        let event = NewEvent::raw(
                            &topic,
                            format!("order-{}", sent % 1000),
                            "shop.bench.v1.Tick",
                            vec![b'x'; 300],
                        );
                        ids.push(outbox.append(&mut tx, event).await?.to_string());
                        sent += 1;
                    }
                    tx.commit().await
                })
                .await?;
                let now = Instant::now();
                let mut map = committed_at.lock().unwrap();
                for id in ids {
                    map.insert(id, now);
                }
            }
            anyhow::Ok(started.elapsed())
        }
    });

    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let steady_start = Instant::now();
    let deadline = steady_start + Duration::from_secs(seconds + 30);
    let mut early = Vec::new();
    while histogram.len() < total && Instant::now() < deadline {
        let Ok(Ok(message)) = tokio::time::timeout(Duration::from_secs(5), consumer.recv()).await
        else {
            continue;
        };
        let received = Instant::now();
        let Some(id) = message.headers().and_then(|h| {
            h.iter()
                .find(|h| h.key == "ce_id")
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
        }) else {
            continue;
        };
        // The writer records the commit instant just after COMMIT returns; a record can arrive
        // before that bookkeeping, which counts as 0.
        match committed_at.lock().unwrap().remove(&id) {
            Some(at) => {
                histogram.record(u64::try_from(received.duration_since(at).as_micros())?.max(1))?
            }
            None => early.push((id, received)),
        }
        let mut map = committed_at.lock().unwrap();
        early.retain(|(id, _)| map.remove(id).map(|_| histogram.record(1)).is_none());
    }
    let writing = writer.await??;
    #[allow(clippy::cast_precision_loss)]
    let achieved = total as f64 / writing.as_secs_f64();
    stop.cancel();
    task.await??;

    let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "steady: {} of {total} events received, committed at {achieved:.0}/s (target {rate}/s), commit-to-consume p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        histogram.len(),
        ms(0.5),
        ms(0.9),
        ms(0.99),
        histogram.max() as f64 / 1000.0
    );

    // --- 3. the broker alone --------------------------------------------------------------------
    // The same rate and batches sent straight to Kafka by the same kind of producer, timed from
    // the send to the arrival: what the broker and the consumer cost without outbox and relay.
    let baseline = broker_baseline(&kafka, rate, seconds.min(10)).await?;
    let bms = |q: f64| baseline.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "broker alone (no outbox, no relay): {} events, send-to-consume p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        baseline.len(),
        bms(0.5),
        bms(0.9),
        bms(0.99),
        baseline.max() as f64 / 1000.0
    );
    Ok(())
}

/// A plain consumer of `topic`, reading from its start, returned once it has joined its group
/// (a warm-up record has arrived), so that no measured record waits for the join.
async fn bench_consumer(kafka: &TestKafka, topic: &str) -> anyhow::Result<StreamConsumer> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka.bootstrap_servers())
        .set(
            "group.id",
            format!("bench-{}", uuid::Uuid::new_v4().simple()),
        )
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set(
            "fetch.wait.max.ms",
            std::env::var("BENCH_FETCH_WAIT_MS").unwrap_or_else(|_| "5".into()),
        )
        .create()?;
    consumer.subscribe(&[topic])?;
    // Measure only once the reader has joined its group: a warm-up record must arrive first.
    let warmup: rdkafka::producer::FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", kafka.bootstrap_servers())
        .create()?;
    warmup
        .send(
            rdkafka::producer::FutureRecord::<str, str>::to(topic).payload("warm-up"),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)?;
    tokio::time::timeout(Duration::from_secs(60), consumer.recv()).await??;
    Ok(consumer)
}

async fn broker_baseline(
    kafka: &TestKafka,
    rate: u64,
    seconds: u64,
) -> anyhow::Result<Histogram<u64>> {
    let topic = TestKafka::unique_topic("bench-baseline");
    kafka.create_topic(&topic, 6).await;
    let consumer = bench_consumer(kafka, &topic).await?;
    let producer: rdkafka::producer::FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", kafka.bootstrap_servers())
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "1")
        .create()?;
    let total = rate * seconds;
    let sender = tokio::spawn({
        let topic = topic.clone();
        async move {
            let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 * 10 / rate));
            let mut sent_at = HashMap::new();
            let mut n = 0_u64;
            while n < total {
                tick.tick().await;
                let mut deliveries = Vec::new();
                for _ in 0..10 {
                    let key = format!("order-{}", n % 1000);
                    let payload = n.to_string();
                    sent_at.insert(payload.clone(), Instant::now());
                    let record = rdkafka::producer::FutureRecord::to(&topic)
                        .key(&key)
                        .payload(&payload);
                    deliveries.push(producer.send_result(record).map_err(|(e, _)| e)?);
                    n += 1;
                }
                for d in deliveries {
                    d.await?.map_err(|(e, _)| e)?;
                }
            }
            anyhow::Ok(sent_at)
        }
    });
    let mut received = Vec::with_capacity(usize::try_from(total)?);
    let deadline = Instant::now() + Duration::from_secs(seconds + 30);
    while (received.len() as u64) < total && Instant::now() < deadline {
        if let Ok(Ok(message)) = tokio::time::timeout(Duration::from_secs(5), consumer.recv()).await
            && let Some(payload) = message.payload()
        {
            received.push((
                String::from_utf8_lossy(payload).into_owned(),
                Instant::now(),
            ));
        }
    }
    let sent_at = sender.await??;
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for (payload, at) in received {
        if let Some(sent) = sent_at.get(&payload) {
            histogram.record(u64::try_from(at.duration_since(*sent).as_micros())?.max(1))?;
        }
    }
    Ok(histogram)
}
