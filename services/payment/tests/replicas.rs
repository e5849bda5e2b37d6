//! Two replicas of payment's order-events consumer (one group, each with its own pool, as two
//! processes would be) under contention: many orders of few customers, spread over the
//! partitions. Batched transactions of the two replicas must not deadlock, and every saga step
//! must apply once.

use std::time::Duration;

use payment_service::app::Events;
use payment_service::inbound::kafka::OrderEvents;
use payment_service::metrics::PaymentMetrics;
use shop_eventing::{
    Consumer, ConsumerConfig, EventingMetrics, KafkaConfig, NewEvent, Outbox, Publisher, Relay,
    RelayConfig,
};
use shop_proto::order::v1 as order_pb;
use shop_telemetry::metrics::Registry;
use shop_testkit::{TestDb, TestKafka, eventually};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

const CUSTOMERS: [&str; 3] = ["ann", "bob", "cem"];
const ORDERS: usize = 1500;
const DEPOSIT: i64 = 1_000_000_000;

/// The customer of order `i`.
fn customer_of(i: usize) -> &'static str {
    CUSTOMERS[i % CUSTOMERS.len()]
}

/// The amount of order `i`, in cents.
fn amount_of(i: usize) -> i64 {
    100 + i64::try_from(i % 17).unwrap()
}

/// Whether the customer cancels order `i` after paying (a refund).
fn cancelled(i: usize) -> bool {
    i % 4 == 1
}

fn metric(registry: &Registry, name: &str, labels: &[(&str, &str)]) -> f64 {
    let text = shop_telemetry::metrics::encode(registry);
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(series, _)| {
            let (n, rest) = series.split_once('{').unwrap_or((series, ""));
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
        })
        .map(|(_, v)| v.parse::<f64>().unwrap())
        .sum()
}

async fn deadlocks(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
        .fetch_one(pool)
        .await
        .unwrap()
}

struct Replica {
    pool: PgPool,
    registry: Registry,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

async fn replica(
    db: &TestDb,
    kafka: &KafkaConfig,
    group: &str,
    order_topic: &str,
    payment_topic: &str,
) -> Replica {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect_with(db.connect_options())
        .await
        .unwrap();
    let mut registry = Registry::default();
    let mut config = ConsumerConfig::new(group, [order_topic]);
    config.session_timeout = Duration::from_secs(6);
    config.lag_interval = Duration::from_millis(500);
    config.metrics = EventingMetrics::new(&mut registry);
    let handler = OrderEvents {
        events: Events {
            publisher: Publisher::new(Outbox::new("/shop/payment-service"), payment_topic),
            metrics: PaymentMetrics::new(&mut registry),
        },
    };
    let consumer = Consumer::new(pool.clone(), kafka, config, handler).unwrap();
    let stop = CancellationToken::new();
    let task = tokio::spawn({
        let stop = stop.clone();
        async move { consumer.run(stop).await.unwrap() }
    });
    Replica {
        pool,
        registry,
        stop,
        task,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_under_contention_never_deadlock_and_apply_every_step_once() {
    shop_telemetry::init_for_tests();
    let db = TestDb::create().await;
    <payment_service::startup::Payments as shop_runtime::skeleton::Service>::MIGRATIONS
        .run(&db.pool)
        .await
        .unwrap();
    shop_eventing::migrate(&db.pool).await.unwrap();
    for customer in CUSTOMERS {
        sqlx::query(
            "INSERT INTO accounts (customer_id, currency, balance_minor, status) VALUES ($1, 'EUR', $2, 'open')",
        )
        .bind(customer)
        .bind(DEPOSIT)
        .execute(&db.pool)
        .await
        .unwrap();
    }
    let kafka = TestKafka::start();
    let order_topic = TestKafka::unique_topic("order-events");
    let payment_topic = TestKafka::unique_topic("payment-events");
    kafka.create_topic(&order_topic, 6).await;
    kafka.create_topic(&payment_topic, 6).await;
    let config = KafkaConfig::new(kafka.bootstrap_servers());
    let group = format!("payment-{}", uuid::Uuid::new_v4().simple());

    // The order side: its own database, outbox and relay.
    let order_db = TestDb::create().await;
    shop_eventing::migrate(&order_db.pool).await.unwrap();
    let relay = Relay::new(order_db.connect_options(), &config, RelayConfig::default()).unwrap();
    let outbox = Outbox::new("/shop/order-service").waking(relay.waker());
    let stop_relay = CancellationToken::new();
    let relay_task = tokio::spawn({
        let stop = stop_relay.clone();
        async move { relay.run(stop).await }
    });

    // Both replicas in the group, each owning some partitions, before the orders arrive: events
    // payment has no business with, on every partition, until both replicas passed some over
    // (without an inbox row).
    let replicas = [
        replica(&db, &config, &group, &order_topic, &payment_topic).await,
        replica(&db, &config, &group, &order_topic, &payment_topic).await,
    ];
    let mut events = 0;
    let mut warm_up: u32 = 0;
    loop {
        let mut tx = order_db.pool.begin().await.unwrap();
        for _ in 0..30 {
            let order_id = format!("warm-up-{warm_up}");
            warm_up += 1;
            let confirmed = order_pb::OrderConfirmed {
                order_id: order_id.clone(),
                ..Default::default()
            };
            outbox
                .append(&mut tx, NewEvent::new(&order_topic, &order_id, &confirmed))
                .await
                .unwrap();
            events += 1;
        }
        tx.commit().await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let ignored: Vec<f64> = replicas
            .iter()
            .map(|r| {
                metric(
                    &r.registry,
                    "shop_consumer_messages_total",
                    &[("outcome", "ignored")],
                )
            })
            .collect();
        if ignored.iter().all(|&n| n > 0.0) {
            break;
        }
        assert!(
            warm_up < 3000,
            "the second replica never got a partition: {ignored:?}"
        );
    }
    eventually(
        "the warm-up passed over",
        Duration::from_secs(30),
        || async {
            let ignored: f64 = replicas
                .iter()
                .map(|r| {
                    metric(
                        &r.registry,
                        "shop_consumer_messages_total",
                        &[("outcome", "ignored")],
                    )
                })
                .sum();
            (ignored == f64::from(warm_up)).then_some(())
        },
    )
    .await;
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM eventing_inbox")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(
        rows, 0,
        "no inbox row for the events payment does not handle"
    );
    let deadlocks_before = deadlocks(&db.pool).await;

    // All the orders at once, so that the replicas fetch (and batch) many records at a time.
    let mut tx = order_db.pool.begin().await.unwrap();
    for i in 0..ORDERS {
        let order_id = format!("order-{i}");
        let requested = order_pb::PaymentRequested {
            order_id: order_id.clone(),
            customer_id: customer_of(i).into(),
            amount: Some(shop_proto::common::v1::Money {
                amount_minor: amount_of(i),
                currency: "EUR".into(),
            }),
        };
        outbox
            .append(&mut tx, NewEvent::new(&order_topic, &order_id, &requested))
            .await
            .unwrap();
        events += 1;
        if cancelled(i) {
            let cancelled = order_pb::OrderCancelled {
                order_id: order_id.clone(),
                customer_id: customer_of(i).into(),
                ..Default::default()
            };
            outbox
                .append(&mut tx, NewEvent::new(&order_topic, &order_id, &cancelled))
                .await
                .unwrap();
            events += 1;
        }
    }
    tx.commit().await.unwrap();
    let started = std::time::Instant::now();

    eventually("every event applied", Duration::from_secs(240), || async {
        let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM eventing_inbox")
            .fetch_one(&db.pool)
            .await
            .unwrap();
        (applied == events - i64::from(warm_up)).then_some(())
    })
    .await;
    let took = started.elapsed();
    eprintln!(
        "two replicas applied {} events in {took:?} ({:.0} events/s, relay included)",
        events - i64::from(warm_up),
        f64::from(u32::try_from(events - i64::from(warm_up)).unwrap()) / took.as_secs_f64()
    );
    stop_relay.cancel();
    relay_task.await.unwrap().unwrap();
    let mut transient_errors = 0.0;
    let mut applied_by = Vec::new();
    for r in replicas {
        r.stop.cancel();
        r.task.await.unwrap();
        transient_errors += metric(
            &r.registry,
            "shop_consumer_handler_errors_total",
            &[("kind", "transient")],
        );
        applied_by.push(metric(
            &r.registry,
            "shop_consumer_messages_total",
            &[("outcome", "applied")],
        ));
        // The replica's sessions end, which flushes their statistics (deadlocks included).
        r.pool.close().await;
    }
    assert!(
        applied_by.iter().all(|&n| n > 0.0),
        "both replicas applied events: {applied_by:?}"
    );

    // Let the ended sessions' statistics land.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let deadlocks_after = deadlocks(&db.pool).await;
    assert_eq!(
        deadlocks_after - deadlocks_before,
        0,
        "deadlocks between the replicas' transactions ({transient_errors} transient handler errors)"
    );
    assert_eq!(transient_errors, 0.0, "no handler retried");

    // Every step applied once: one payment per order, and each balance is what the orders say.
    let (captured, refunded): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status = 'captured'), count(*) FILTER (WHERE status = 'refunded') FROM payments",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let cancels = (0..ORDERS).filter(|&i| cancelled(i)).count();
    assert_eq!(captured, i64::try_from(ORDERS - cancels).unwrap());
    assert_eq!(refunded, i64::try_from(cancels).unwrap());
    for customer in CUSTOMERS {
        let spent: i64 = (0..ORDERS)
            .filter(|&i| customer_of(i) == customer && !cancelled(i))
            .map(amount_of)
            .sum();
        let balance: i64 =
            sqlx::query_scalar("SELECT balance_minor FROM accounts WHERE customer_id = $1")
                .bind(customer)
                .fetch_one(&db.pool)
                .await
                .unwrap();
        assert_eq!(balance, DEPOSIT - spent, "{customer}");
    }
}
