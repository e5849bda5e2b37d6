//! Idempotent consumer benchmark: backlog drain rate and produce-to-applied latency.
//!
//! ```text
//! deploy/bench-relay.sh                 # embedded mock cluster (after the relay benchmark)
//! deploy/bench-relay.sh --broker kafka  # Apache Kafka
//! ```
//! (or `cargo bench -p shop-eventing --bench consumer` with `DATABASE_URL` and optionally
//! `KAFKA_BOOTSTRAP_SERVERS` set). Knobs: `BENCH_BACKLOG` (records, default 100000),
//! `BENCH_RATE` (records/s, default 1000), `BENCH_SECONDS` (steady phase, default 20).
//!
//! What runs is the shop's real [`Consumer`], built as `shop_runtime::skeleton` builds a
//! service's: its default [`ConsumerConfig`] (batches of up to 200 records per transaction,
//! `fetch.wait.max.ms` 20), registered [`EventingMetrics`], a pool of its own of 3 connections
//! (the services' `<SERVICE>_CONSUMER_DB_CONNECTIONS` default), and a handler written as the
//! services write theirs ([`Handler`] with `decode_if` and `handles`). The records are what the
//! relay publishes: a `shop.order.v1.OrderPlaced` protobuf payload of about 300 bytes, keyed by
//! one of 1,000 order ids, with the CloudEvents headers (`ce_id` a UUIDv7, `ce_type`, `ce_time`,
//! ...) and a `traceparent`, so per-record decoding, the `Untrusted` check, the `process` span
//! continuing the producer's trace and the metrics are all part of what is measured. The
//! handler's effect is one saga-step-like UPSERT of the order's row (`bench_orders`, keyed by
//! the record's key), written through the transaction that also holds the record's inbox row.
//!
//! 1. **Drain**: produces a backlog of records to a 6-partition topic (straight with an rdkafka
//!    producer: all enqueued, then the deliveries awaited; not timed), then starts the consumer,
//!    in a group of its own reading from the start, and times until every record's transaction
//!    committed. The time includes joining the group (printed apart, with the rate after the
//!    first commit), since a consumer that restarts behind a backlog pays it too. The inbox rows
//!    and the effects are counted afterwards, to check that what was timed is what was applied.
//! 2. **Steady latency**: with the consumer caught up, records are produced at a fixed rate (10
//!    per tick, each tick's deliveries awaited, as a relay round does), each carrying its send
//!    instant in a `bench_sent_us` header; the latency is from the producer's send to the moment
//!    the consumer's transaction applying the record committed.
//! 3. **Broker alone**: the same sends read by a plain Kafka consumer with the consumer's
//!    `fetch.wait.max.ms`, timed from the send to the arrival: the part of step 2's latency that
//!    is the broker's and the fetch's, so the consumer's own share (batching, the database
//!    transaction, the bookkeeping) is the difference.
//!
//! # Why "applied" is timed with `after_commit`
//!
//! The handler registers [`shop_eventing::after_commit`] for each record, which the consumer
//! runs right after the COMMIT of the batch's transaction returned, and never for a
//! transaction that rolled back: the instant the record's effect and inbox row are durable and
//! visible, with nothing added. Polling the inbox for the rows instead would add the polling
//! interval to every sample and load the two-core database server with the polls, and timing
//! inside the handler would stop the clock before the commit (the fsync is a large part of the
//! cost). The consumer stores the record's offset only after that, so the offset commit, which
//! no caller waits for, is not in the figure. The same callbacks count the drained records, so
//! the drain's end is not found by polling either.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use chrono::SecondsFormat;
use hdrhistogram::Histogram;
use prost::{Message as _, Name as _};
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use shop_eventing::{
    Consumer, ConsumerConfig, EventingMetrics, Handler, HandlerError, InboundEvent, KafkaConfig,
    headers,
};
use shop_proto::common::v1::Money;
use shop_proto::order::v1::{OrderLine, OrderPlaced};
use shop_testkit::{TestDb, TestKafka};
use sqlx::PgConnection;
use sqlx::postgres::PgPoolOptions;
use tokio_util::sync::CancellationToken;

/// The header carrying a steady-phase record's send instant, in microseconds since
/// [`Shared::base`].
const SENT_US: &str = "bench_sent_us";
/// Distinct record keys (order ids), as in the relay benchmark.
const KEYS: u64 = 1000;
/// Target size of a record's value.
const PAYLOAD_BYTES: usize = 300;
/// Records sent per tick in steady phases.
const PER_TICK: u64 = 10;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What the handler's after-commit callbacks report to the benchmark.
#[derive(Debug)]
struct Shared {
    /// The clock of the `bench_sent_us` headers.
    base: Instant,
    /// Records whose transaction committed.
    applied: AtomicU64,
    /// When the first record's transaction committed.
    first_applied: OnceLock<Instant>,
    /// Send-to-commit latencies (µs) of the records that carry `bench_sent_us`.
    latencies: Mutex<Histogram<u64>>,
}

/// The consumer's handler: a saga step's worth of work per `OrderPlaced`.
#[derive(Debug)]
struct OrderSteps {
    shared: Arc<Shared>,
}

impl Handler for OrderSteps {
    async fn handle(
        &self,
        tx: &mut PgConnection,
        event: &InboundEvent,
    ) -> Result<(), HandlerError> {
        let Some(placed) = event.decode_if::<OrderPlaced>()? else {
            return Ok(());
        };
        let total = placed.total.as_ref().map_or(0, |m| m.amount_minor);
        sqlx::query(
            "INSERT INTO bench_orders (order_id, customer_id, total_minor, lines, last_event, events) \
             VALUES ($1, $2, $3, $4, $5, 1) \
             ON CONFLICT (order_id) DO UPDATE SET customer_id = excluded.customer_id, \
                 total_minor = excluded.total_minor, lines = excluded.lines, \
                 last_event = excluded.last_event, events = bench_orders.events + 1",
        )
        .bind(&placed.order_id)
        .bind(&placed.customer_id)
        .bind(total)
        .bind(i32::try_from(placed.lines.len()).unwrap_or(i32::MAX))
        .bind(&event.id)
        .execute(&mut *tx)
        .await?;
        let sent = event.header(SENT_US).and_then(|v| v.parse::<u64>().ok());
        let shared = self.shared.clone();
        shop_eventing::after_commit(move || {
            let now = Instant::now();
            shared.first_applied.get_or_init(|| now);
            if let Some(sent) = sent {
                let at =
                    u64::try_from(now.duration_since(shared.base).as_micros()).unwrap_or(u64::MAX);
                shared
                    .latencies
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .saturating_record(at.saturating_sub(sent).max(1));
            }
            shared.applied.fetch_add(1, Ordering::Relaxed);
        });
        Ok(())
    }

    /// Only the order step's event type, as the services declare theirs.
    fn handles(&self, event: &InboundEvent) -> bool {
        event.is::<OrderPlaced>()
    }
}

/// An `OrderPlaced` of order `key`, encoded, of [`PAYLOAD_BYTES`] bytes (give or take one).
fn payload(key: &str) -> Vec<u8> {
    let line = |i: u32| OrderLine {
        sku: format!("SKU-{:05}", 1000 + i),
        quantity: 1 + i % 3,
        unit_price: Some(Money {
            amount_minor: 1999 + i64::from(i) * 100,
            currency: "EUR".into(),
        }),
    };
    let mut placed = OrderPlaced {
        order_id: key.to_owned(),
        customer_id: format!("customer-{key}"),
        lines: Vec::new(),
        total: None,
    };
    let mut i = 0;
    while placed.encoded_len() + 40 < PAYLOAD_BYTES {
        placed.lines.push(line(i));
        i += 1;
    }
    let total = placed
        .lines
        .iter()
        .map(|l| i64::from(l.quantity) * l.unit_price.as_ref().map_or(0, |m| m.amount_minor))
        .sum();
    placed.total = Some(Money {
        amount_minor: total,
        currency: "EUR".into(),
    });
    while placed.encoded_len() < PAYLOAD_BYTES {
        placed.customer_id.push('x');
    }
    placed.encode_to_vec()
}

/// The order ids and their payloads.
fn payloads() -> Vec<(String, Vec<u8>)> {
    (0..KEYS)
        .map(|i| {
            let key = format!("order-{i}");
            let payload = payload(&key);
            (key, payload)
        })
        .collect()
}

/// The headers the relay puts on an order event (CloudEvents binary mode and the trace
/// context of the send), plus `sent_us` for the steady phases.
fn event_headers(key: &str, sent_us: Option<u64>) -> OwnedHeaders {
    let id = uuid::Uuid::now_v7().to_string();
    let time = chrono::Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true);
    let span = uuid::Uuid::new_v4().simple().to_string();
    let traceparent = format!("00-{}-{}-01", uuid::Uuid::new_v4().simple(), &span[..16]);
    let event_type = OrderPlaced::full_name();
    let mut out = OwnedHeaders::new_with_capacity(9)
        .insert(header(headers::CE_ID, &id))
        .insert(header(headers::CE_TYPE, &event_type))
        .insert(header(headers::CE_SOURCE, "/shop/order-service"))
        .insert(header(headers::CE_SPECVERSION, headers::SPEC_VERSION))
        .insert(header(headers::CE_TIME, &time))
        .insert(header(headers::CE_PARTITIONKEY, key))
        .insert(header(headers::CONTENT_TYPE, headers::PROTOBUF))
        .insert(header(headers::TRACEPARENT, &traceparent));
    if let Some(sent) = sent_us {
        out = out.insert(header(SENT_US, &sent.to_string()));
    }
    out
}

fn header<'a>(key: &'a str, value: &'a str) -> Header<'a, &'a str> {
    Header {
        key,
        value: Some(value),
    }
}

/// Enqueues one record, waiting for room when librdkafka's queue is full.
async fn enqueue(
    producer: &FutureProducer,
    topic: &str,
    key: &str,
    payload: &[u8],
    headers: OwnedHeaders,
) -> anyhow::Result<DeliveryFuture> {
    let mut record = FutureRecord::to(topic)
        .key(key)
        .payload(payload)
        .headers(headers);
    loop {
        match producer.send_result(record) {
            Ok(delivery) => return Ok(delivery),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err((error, _)) => return Err(error.into()),
        }
    }
}

/// Sends `rate` records/s for `seconds` to `topic`, [`PER_TICK`] per tick with each tick's
/// deliveries awaited, each record's send instant in its `bench_sent_us` header. Returns how
/// long the sending took.
async fn send_steady(
    producer: FutureProducer,
    topic: String,
    rate: u64,
    seconds: u64,
    base: Instant,
    payloads: Arc<Vec<(String, Vec<u8>)>>,
) -> anyhow::Result<Duration> {
    let total = rate * seconds;
    let per_tick = PER_TICK.min(rate).max(1);
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 * per_tick / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut n = 0_u64;
    while n < total {
        tick.tick().await;
        let mut deliveries = Vec::with_capacity(usize::try_from(per_tick)?);
        for _ in 0..per_tick.min(total - n) {
            let (key, payload) = &payloads[usize::try_from(n % KEYS)?];
            let sent = u64::try_from(base.elapsed().as_micros())?;
            let headers = event_headers(key, Some(sent));
            deliveries.push(enqueue(&producer, &topic, key, payload, headers).await?);
            n += 1;
        }
        for d in deliveries {
            d.await?.map_err(|(e, _)| e)?;
        }
    }
    Ok(started.elapsed())
}

/// Records per transaction so far: the sum and count of `shop_consumer_batch_size`, as a
/// scrape of the service's `/metrics` shows them.
fn batches(registry: &prometheus_client::registry::Registry) -> anyhow::Result<(f64, f64)> {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry)?;
    let value = |name: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    Ok((
        value("shop_consumer_batch_size_sum"),
        value("shop_consumer_batch_size_count"),
    ))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // As in a service: spans are created (the consumer's `process` span per record, continuing
    // the record's trace) though none is exported, so their cost is part of what is measured.
    let _telemetry = shop_telemetry::init("consumer-bench", "warn");
    let backlog = env_or("BENCH_BACKLOG", 100_000);
    let rate = env_or("BENCH_RATE", 1000).max(1);
    let seconds = env_or("BENCH_SECONDS", 20);

    let db = TestDb::create().await;
    shop_eventing::migrate(&db.pool).await?;
    sqlx::query(
        "CREATE TABLE bench_orders (order_id text PRIMARY KEY, customer_id text NOT NULL, \
         total_minor bigint NOT NULL, lines int NOT NULL, last_event text NOT NULL, \
         events int NOT NULL)",
    )
    .execute(&db.pool)
    .await?;
    let kafka = TestKafka::start();
    let broker = if kafka.is_mock() {
        "librdkafka mock cluster (in-process)"
    } else {
        "external broker"
    };
    let config = KafkaConfig::new(kafka.bootstrap_servers());
    let topic = TestKafka::unique_topic("bench-consume");
    kafka.create_topic(&topic, 6).await;
    let payloads = Arc::new(payloads());
    let payload_bytes = payloads.iter().map(|(_, p)| p.len()).sum::<usize>() / payloads.len();
    println!(
        "consumer benchmark: broker = {broker} at {}, topic {topic} (6 partitions), {}-byte OrderPlaced payloads over {KEYS} keys",
        kafka.bootstrap_servers(),
        payload_bytes
    );

    // The relay's producer settings (idempotent, acks=all, linger.ms=1), with room to enqueue
    // the whole backlog at once.
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", kafka.bootstrap_servers())
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "1")
        .set("queue.buffering.max.messages", "1000000")
        .create()?;

    // --- 1. drain a backlog -------------------------------------------------------------------
    let producing = Instant::now();
    let mut deliveries = Vec::with_capacity(usize::try_from(backlog)?);
    for n in 0..backlog {
        let (key, payload) = &payloads[usize::try_from(n % KEYS)?];
        deliveries.push(enqueue(&producer, &topic, key, payload, event_headers(key, None)).await?);
    }
    for d in deliveries {
        d.await?.map_err(|(e, _)| e)?;
    }
    println!(
        "backlog: {backlog} records produced in {:.2} s (not measured)",
        producing.elapsed().as_secs_f64()
    );

    let shared = Arc::new(Shared {
        base: Instant::now(),
        applied: AtomicU64::new(0),
        first_applied: OnceLock::new(),
        latencies: Mutex::new(Histogram::new_with_bounds(1, 60_000_000, 3)?),
    });
    let mut registry = prometheus_client::registry::Registry::default();
    let name = format!("bench-{}", uuid::Uuid::new_v4().simple());
    let mut consumer_config = ConsumerConfig::new(&name, [&topic]);
    consumer_config.metrics = EventingMetrics::new(&mut registry);
    let max_fetch_wait = consumer_config.max_fetch_wait;
    // A pool of its own, as `shop_runtime::database::own_pool` gives a service's consumer.
    let pool = PgPoolOptions::new()
        .max_connections(3)
        .acquire_timeout(Duration::from_secs(10))
        .connect_lazy_with(db.connect_options());
    let consumer = Consumer::new(
        pool,
        &config,
        consumer_config,
        OrderSteps {
            shared: shared.clone(),
        },
    )?;
    let stop = CancellationToken::new();
    let started = Instant::now();
    let task = tokio::spawn({
        let stop = stop.clone();
        async move { consumer.run(stop).await }
    });
    let mut progress = (0, Instant::now());
    loop {
        let applied = shared.applied.load(Ordering::Relaxed);
        if applied >= backlog {
            break;
        }
        if applied != progress.0 {
            progress = (applied, Instant::now());
        } else if progress.1.elapsed() > Duration::from_secs(60) {
            let dead: i64 = sqlx::query_scalar("SELECT count(*) FROM eventing_dead_letter")
                .fetch_one(&db.pool)
                .await?;
            anyhow::bail!(
                "the drain stalled: {applied} of {backlog} records applied, {dead} dead-lettered"
            );
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let drain = started.elapsed();
    let joined = shared
        .first_applied
        .get()
        .map_or(drain, |first| first.duration_since(started));
    let (batch_sum, batch_count) = batches(&registry)?;
    // What was timed is what was applied: one inbox row and one effect per record.
    let (inbox, effects): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM eventing_inbox WHERE consumer = $1), \
                (SELECT coalesce(sum(events), 0) FROM bench_orders)",
    )
    .bind(&name)
    .fetch_one(&db.pool)
    .await?;
    anyhow::ensure!(
        u64::try_from(inbox)? == backlog && u64::try_from(effects)? == backlog,
        "{backlog} records timed, but {inbox} inbox rows and {effects} effects"
    );
    #[allow(clippy::cast_precision_loss)]
    let drain_rate = backlog as f64 / drain.as_secs_f64();
    #[allow(clippy::cast_precision_loss)]
    let after_join = backlog as f64 / (drain - joined).as_secs_f64().max(1e-6);
    println!(
        "consumer drain: {backlog} records applied in {:.2} s = {drain_rate:.0} records/s \
         (first commit after {:.2} s, joining the group; {after_join:.0} records/s from there), \
         {batch_count:.0} transactions of {:.1} records on average, {inbox} inbox rows",
        drain.as_secs_f64(),
        joined.as_secs_f64(),
        batch_sum / batch_count.max(1.0),
    );

    // --- 2. steady-rate latency ---------------------------------------------------------------
    // The consumer is caught up and keeps its partitions: the records go to the same topic.
    let total = rate * seconds;
    let sender = tokio::spawn(send_steady(
        producer.clone(),
        topic.clone(),
        rate,
        seconds,
        shared.base,
        payloads.clone(),
    ));
    let deadline = Instant::now() + Duration::from_secs(seconds + 30);
    let steady_done = || {
        shared
            .latencies
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    };
    while steady_done() < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let sending = sender.await??;
    stop.cancel();
    task.await??;
    let (steady_sum, steady_count) = batches(&registry)?;
    let histogram = shared
        .latencies
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    #[allow(clippy::cast_precision_loss)]
    let achieved = total as f64 / sending.as_secs_f64();
    #[allow(clippy::cast_precision_loss)]
    let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "consumer steady: {} of {total} records applied, sent at {achieved:.0}/s (target {rate}/s), \
         {:.1} records per transaction, produce-to-applied p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        histogram.len(),
        (steady_sum - batch_sum) / (steady_count - batch_count).max(1.0),
        ms(0.5),
        ms(0.9),
        ms(0.99),
        ms(1.0),
    );

    // --- 3. the broker alone --------------------------------------------------------------------
    // The same sends read by a plain consumer with the shop consumer's fetch wait: what the
    // broker and the fetch cost without the consumer's batching and database transaction.
    let baseline = broker_baseline(
        &kafka,
        producer,
        rate,
        seconds.min(10),
        max_fetch_wait,
        payloads,
    )
    .await?;
    #[allow(clippy::cast_precision_loss)]
    let bms = |q: f64| baseline.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "broker alone (no consumer loop, no database; fetch.wait.max.ms {}): {} records, send-to-consume p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        max_fetch_wait.as_millis(),
        baseline.len(),
        bms(0.5),
        bms(0.9),
        bms(0.99),
        bms(1.0),
    );
    Ok(())
}

/// Step 3: [`send_steady`] to a fresh topic, read by a plain consumer that joined its group
/// first (a warm-up record arrived), timed from each send to the arrival.
async fn broker_baseline(
    kafka: &TestKafka,
    producer: FutureProducer,
    rate: u64,
    seconds: u64,
    fetch_wait: Duration,
    payloads: Arc<Vec<(String, Vec<u8>)>>,
) -> anyhow::Result<Histogram<u64>> {
    let topic = TestKafka::unique_topic("bench-consume-baseline");
    kafka.create_topic(&topic, 6).await;
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka.bootstrap_servers())
        .set(
            "group.id",
            format!("bench-{}", uuid::Uuid::new_v4().simple()),
        )
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", fetch_wait.as_millis().to_string())
        .create()?;
    consumer.subscribe(&[&topic])?;
    producer
        .send(
            FutureRecord::<str, str>::to(&topic).payload("warm-up"),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)?;
    tokio::time::timeout(Duration::from_secs(60), consumer.recv()).await??;

    let base = Instant::now();
    let total = rate * seconds;
    let sender = tokio::spawn(send_steady(
        producer,
        topic.clone(),
        rate,
        seconds,
        base,
        payloads,
    ));
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let deadline = Instant::now() + Duration::from_secs(seconds + 30);
    while histogram.len() < total && Instant::now() < deadline {
        let Ok(Ok(message)) = tokio::time::timeout(Duration::from_secs(5), consumer.recv()).await
        else {
            continue;
        };
        let at = u64::try_from(base.elapsed().as_micros())?;
        let sent = message.headers().and_then(|h| {
            h.iter()
                .find(|h| h.key == SENT_US)
                .and_then(|h| std::str::from_utf8(h.value?).ok()?.parse::<u64>().ok())
        });
        if let Some(sent) = sent {
            histogram.record(at.saturating_sub(sent).max(1))?;
        }
    }
    sender.await??;
    Ok(histogram)
}
