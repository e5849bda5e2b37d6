//! Two replicas of inventory's order-events consumer (one group, each with its own pool, as two
//! processes would be) under contention: many orders on few skus, spread over the partitions.
//! Batched transactions of the two replicas must not deadlock, and every saga step must apply
//! once.

use std::time::Duration;

use inventory_service::app::Events;
use inventory_service::inbound::kafka::OrderEvents;
use inventory_service::metrics::InventoryMetrics;
use shop_eventing::{
    Consumer, ConsumerConfig, EventingMetrics, KafkaConfig, NewEvent, Outbox, Publisher, Relay,
    RelayConfig,
};
use shop_proto::order::v1 as order_pb;
use shop_telemetry::metrics::Registry;
use shop_testkit::{TestDb, TestKafka, eventually};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

const SKUS: [&str; 5] = ["sku-a", "sku-b", "sku-c", "sku-d", "sku-e"];
const ORDERS: usize = 1200;
const STOCK: i64 = 1_000_000;

/// The skus of order `i`: three of the five, in an order that varies with `i`.
fn lines_of(i: usize) -> Vec<&'static str> {
    let picks = [i % 5, (i + 2) % 5, (i + 4) % 5];
    let mut skus: Vec<&str> = picks.iter().map(|&p| SKUS[p]).collect();
    skus.rotate_left(i % 3);
    skus
}

/// What follows `OrderPlaced` for order `i`: confirmed, cancelled, or nothing yet.
fn fate(i: usize) -> Option<bool> {
    match i % 4 {
        0 => Some(true),
        1 => Some(false),
        _ => None,
    }
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
    inventory_topic: &str,
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
            publisher: Publisher::new(Outbox::new("/shop/inventory-service"), inventory_topic),
            metrics: InventoryMetrics::new(&mut registry),
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
    <inventory_service::startup::Inventory as shop_runtime::skeleton::Service>::MIGRATIONS
        .run(&db.pool)
        .await
        .unwrap();
    shop_eventing::migrate(&db.pool).await.unwrap();
    for sku in SKUS {
        sqlx::query(
            "INSERT INTO products (sku, name, unit_price_minor, currency, on_hand) VALUES ($1, $1, 100, 'EUR', $2)",
        )
        .bind(sku)
        .bind(STOCK)
        .execute(&db.pool)
        .await
        .unwrap();
    }
    let kafka = TestKafka::start();
    let order_topic = TestKafka::unique_topic("order-events");
    let inventory_topic = TestKafka::unique_topic("inventory-events");
    kafka.create_topic(&order_topic, 6).await;
    kafka.create_topic(&inventory_topic, 6).await;
    let config = KafkaConfig::new(kafka.bootstrap_servers());
    let group = format!("inventory-{}", uuid::Uuid::new_v4().simple());

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
    // inventory has no business with, on every partition, until both replicas passed some over
    // (without an inbox row).
    let replicas = [
        replica(&db, &config, &group, &order_topic, &inventory_topic).await,
        replica(&db, &config, &group, &order_topic, &inventory_topic).await,
    ];
    let mut events = 0;
    let mut warm_up: u32 = 0;
    loop {
        let mut tx = order_db.pool.begin().await.unwrap();
        for _ in 0..30 {
            let order_id = format!("warm-up-{warm_up}");
            warm_up += 1;
            let requested = order_pb::PaymentRequested {
                order_id: order_id.clone(),
                ..Default::default()
            };
            outbox
                .append(&mut tx, NewEvent::new(&order_topic, &order_id, &requested))
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
        "no inbox row for the events inventory does not handle"
    );
    let deadlocks_before = deadlocks(&db.pool).await;

    // All the orders at once, so that the replicas fetch (and batch) many records at a time.
    let mut tx = order_db.pool.begin().await.unwrap();
    for i in 0..ORDERS {
        let order_id = format!("order-{i}");
        let placed = order_pb::OrderPlaced {
            order_id: order_id.clone(),
            customer_id: format!("customer-{}", i % 7),
            lines: lines_of(i)
                .into_iter()
                .map(|sku| order_pb::OrderLine {
                    sku: sku.into(),
                    quantity: 1,
                    unit_price: None,
                })
                .collect(),
            total: None,
        };
        outbox
            .append(&mut tx, NewEvent::new(&order_topic, &order_id, &placed))
            .await
            .unwrap();
        events += 1;
        let next = match fate(i) {
            Some(true) => Some(NewEvent::new(
                &order_topic,
                &order_id,
                &order_pb::OrderConfirmed {
                    order_id: order_id.clone(),
                    ..Default::default()
                },
            )),
            Some(false) => Some(NewEvent::new(
                &order_topic,
                &order_id,
                &order_pb::OrderCancelled {
                    order_id: order_id.clone(),
                    ..Default::default()
                },
            )),
            None => None,
        };
        if let Some(next) = next {
            outbox.append(&mut tx, next).await.unwrap();
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

    // Every step applied once: the stock of each sku is what the orders say.
    let reservations: i64 = sqlx::query_scalar("SELECT count(*) FROM reservations")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(reservations, i64::try_from(ORDERS).unwrap());
    for sku in SKUS {
        let using = (0..ORDERS).filter(|&i| lines_of(i).contains(&sku));
        let sold = using.clone().filter(|&i| fate(i) == Some(true)).count();
        let held = using.filter(|&i| fate(i).is_none()).count();
        let (on_hand, reserved, sold_units): (i64, i64, i64) =
            sqlx::query_as("SELECT on_hand, reserved, sold FROM products WHERE sku = $1")
                .bind(sku)
                .fetch_one(&db.pool)
                .await
                .unwrap();
        let sold = i64::try_from(sold).unwrap();
        assert_eq!(
            (on_hand, reserved, sold_units),
            (STOCK - sold, i64::try_from(held).unwrap(), sold),
            "{sku}"
        );
    }
}
