//! The sales-analytics subscriber against real PostgreSQL and a real Kafka-protocol broker,
//! fed by the SDK's own outbox and relay exactly as the order service publishes: the figures,
//! duplicates, a cancellation seen before its confirmation, a malformed event, and a replay of
//! the whole topic.

use std::net::SocketAddr;
use std::time::Duration;

use sales_analytics::config::Settings;
use sales_analytics::report::{SkuTotal, totals};
use sales_analytics::startup::Subscriber;
use shop_eventing::{KafkaConfig, NewEvent, Outbox, Relay, RelayConfig, StartPosition};
use shop_proto::common::v1::Money;
use shop_proto::order::v1::{
    CancellationReason, OrderCancelled, OrderConfirmed, OrderLine, OrderPlaced, PaymentRequested,
};
use shop_testkit::{TestDb, TestKafka, eventually};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const TIMEOUT: Duration = Duration::from_secs(30);

/// The order service's side: an outbox in a database of its own, and its relay.
struct Producer {
    db: TestDb,
    outbox: Outbox,
    topic: String,
}

impl Producer {
    async fn start(kafka: &TestKafka) -> (Self, CancellationToken) {
        let db = TestDb::create().await;
        shop_eventing::migrate(&db.pool).await.unwrap();
        let topic = TestKafka::unique_topic("order-events");
        kafka.create_topic(&topic, 3).await;
        let relay = Relay::new(
            db.connect_options(),
            &KafkaConfig::new(kafka.bootstrap_servers()),
            RelayConfig::default(),
        )
        .unwrap();
        let relay_waker = relay.waker();
        let stop = CancellationToken::new();
        let token = stop.clone();
        tokio::spawn(async move { relay.run(token).await });
        let producer = Self {
            db,
            outbox: Outbox::new("/shop/order-service").waking(relay_waker),
            topic,
        };
        (producer, stop)
    }

    /// Publishes `events` (key = order id) in one transaction, as the order service does.
    async fn publish(&self, events: Vec<NewEvent>) {
        // As the order service's calls do: the relay is woken once the transaction committed.
        shop_eventing::committing(async {
            let mut tx = self.db.pool.begin().await?;
            for event in events {
                self.outbox.append(&mut tx, event).await?;
            }
            tx.commit().await
        })
        .await
        .unwrap();
    }

    /// Waits until the relay published everything (the outbox keeps only what it has not).
    async fn drained(&self) {
        eventually("the outbox to drain", TIMEOUT, || async {
            let left: i64 = sqlx::query_scalar("SELECT count(*) FROM eventing_outbox")
                .fetch_one(&self.db.pool)
                .await
                .unwrap();
            (left == 0).then_some(())
        })
        .await;
    }

    fn event<M: prost::Message + prost::Name>(&self, order_id: &str, message: &M) -> NewEvent {
        NewEvent::new(&self.topic, order_id, message)
    }
}

fn eur(amount_minor: i64) -> Option<Money> {
    Some(Money {
        amount_minor,
        currency: "EUR".into(),
    })
}

fn line(sku: &str, quantity: u32, unit_price: i64) -> OrderLine {
    OrderLine {
        sku: sku.into(),
        quantity,
        unit_price: eur(unit_price),
    }
}

fn confirmed(order_id: &str, lines: Vec<OrderLine>) -> OrderConfirmed {
    OrderConfirmed {
        order_id: order_id.into(),
        customer_id: "ann".into(),
        lines,
        total: None,
    }
}

fn cancelled(order_id: &str, was_confirmed: bool) -> OrderCancelled {
    OrderCancelled {
        order_id: order_id.into(),
        customer_id: "ann".into(),
        reason: CancellationReason::CustomerCancelled.into(),
        detail: String::new(),
        was_confirmed,
    }
}

fn total(sku: &str, units: i64, revenue_minor: i64, orders: i64) -> SkuTotal {
    SkuTotal {
        sku: sku.into(),
        currency: "EUR".into(),
        units,
        revenue_minor,
        orders,
    }
}

fn settings(kafka: &TestKafka, db: &TestDb, topic: &str, name: &str, group: &str) -> Settings {
    Settings {
        database_url: db.url(),
        metrics_addr: "127.0.0.1:0".parse().unwrap(),
        kafka_bootstrap_servers: kafka.bootstrap_servers().to_owned(),
        order_events_topic: topic.to_owned(),
        consumer_name: name.to_owned(),
        consumer_group: group.to_owned(),
        start: StartPosition::Earliest,
        session_timeout: Duration::from_secs(6),
        inbox_retention: shop_eventing::Retention::default().window,
    }
}

struct Running {
    stop: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
    metrics: SocketAddr,
}

impl Running {
    async fn start(settings: &Settings) -> Self {
        let stop = CancellationToken::new();
        let subscriber = Subscriber::build(settings, &stop).await.unwrap();
        let metrics = subscriber.metrics_addr();
        let task = tokio::spawn(subscriber.run(stop.clone()));
        Self {
            stop,
            task,
            metrics,
        }
    }

    async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap().unwrap();
    }

    /// `shop_consumer_messages_total{group, outcome}` summed over topics, from `/metrics`.
    async fn consumed(&self, group: &str, outcome: &str) -> f64 {
        let text = reqwest::get(format!("http://{}/metrics", self.metrics))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let (group, outcome) = (
            format!("group=\"{group}\""),
            format!("outcome=\"{outcome}\""),
        );
        text.lines()
            .filter(|l| l.starts_with("shop_consumer_messages_total{"))
            .filter(|l| l.contains(&group) && l.contains(&outcome))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

/// Waits until the subscriber's figures equal `want`.
async fn figures(db: &TestDb, want: &[SkuTotal]) {
    let mut last = Vec::new();
    let reached = tokio::time::timeout(TIMEOUT, async {
        loop {
            last = totals(&db.pool).await.unwrap();
            if last == want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(reached.is_ok(), "figures {last:?}, expected {want:?}");
}

#[tokio::test]
async fn confirmed_orders_count_cancellations_after_confirmation_are_taken_back() {
    shop_telemetry::init_for_tests();
    let kafka = TestKafka::start();
    let (producer, stop_relay) = Producer::start(&kafka).await;
    let db = TestDb::create().await;
    let name = format!("sales-{}", uuid::Uuid::new_v4().simple());
    let settings = settings(&kafka, &db, &producer.topic, &name, &name);
    let dlq = format!("{name}.dlq");
    kafka.create_topic(&dlq, 1).await;

    let p = &producer;
    let a = p.event(
        "a",
        &confirmed("a", vec![line("BOOK", 2, 3999), line("MUG", 1, 1299)]),
    );
    let a_again = p
        .event(
            "a",
            &confirmed("a", vec![line("BOOK", 2, 3999), line("MUG", 1, 1299)]),
        )
        .with_id(a.id); // published again (as by a relay that crashed before its delete)
    p.publish(vec![
        p.event("a", &OrderPlaced::default()),
        p.event("a", &PaymentRequested::default()),
        a,
        // b: confirmed, then cancelled by the customer: the sale is taken back.
        p.event("b", &confirmed("b", vec![line("BOOK", 1, 3999)])),
        p.event("b", &cancelled("b", true)),
        // c: cancelled before confirmation (e.g. out of stock): never sold.
        p.event("c", &cancelled("c", false)),
        // d: its cancellation seen before its confirmation still wins.
        p.event("d", &cancelled("d", true)),
        p.event("d", &confirmed("d", vec![line("MUG", 5, 1299)])),
        // e: malformed, then f: a line without a price. Both go to the dead-letter topic.
        NewEvent::raw(&p.topic, "e", "shop.order.v1.OrderConfirmed", vec![0xff; 3]),
        p.event("f", &confirmed("f", vec![OrderLine::default()])),
        // g: two lines of one sku.
        p.event(
            "g",
            &confirmed("g", vec![line("LAMP", 1, 4999), line("LAMP", 2, 4999)]),
        ),
    ])
    .await;
    p.drained().await;
    p.publish(vec![a_again]).await;

    let running = Running::start(&settings).await;
    figures(
        &db,
        &[
            total("BOOK", 2, 7998, 1),
            total("LAMP", 3, 14997, 1),
            total("MUG", 1, 1299, 1),
        ],
    )
    .await;
    let dead = kafka
        .read_all(&dlq, 2, TIMEOUT, Duration::from_millis(1500))
        .await;
    let mut kinds: Vec<(String, String)> = dead
        .iter()
        .map(|r| {
            (
                r.key.clone().unwrap_or_default(),
                r.header("dlq_error_kind").unwrap_or_default().to_owned(),
            )
        })
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            ("e".to_owned(), "permanent".to_owned()),
            ("f".to_owned(), "permanent".to_owned())
        ],
        "{dead:?}"
    );
    assert!(dead.iter().any(|r| {
        r.header("dlq_error")
            .unwrap()
            .contains("without a unit price")
    }));
    // The second copy of a's confirmation was skipped by the inbox, not applied twice.
    eventually("the duplicate to be counted", TIMEOUT, || async {
        (running.consumed(&name, "duplicate").await == 1.0).then_some(())
    })
    .await;
    running.stop().await;
    stop_relay.cancel();
}

#[tokio::test]
async fn a_replay_of_the_whole_topic_leaves_the_figures_unchanged() {
    shop_telemetry::init_for_tests();
    let kafka = TestKafka::start();
    let (producer, stop_relay) = Producer::start(&kafka).await;
    let db = TestDb::create().await;
    let name = format!("sales-{}", uuid::Uuid::new_v4().simple());

    let p = &producer;
    let mut events = Vec::new();
    for i in 0..30 {
        let order = format!("order-{i}");
        let sku = ["BOOK", "MUG", "LAMP"][i % 3];
        events.push(p.event(&order, &OrderPlaced::default()));
        events.push(p.event(&order, &confirmed(&order, vec![line(sku, 1, 1000)])));
        if i % 5 == 0 {
            events.push(p.event(&order, &cancelled(&order, true)));
        }
    }
    // The OrderPlaced records are not the subscriber's business: passed over, with no inbox
    // row (so a replay has nothing to skip for them either).
    let passed_over = 30.0;
    let records = events.len() as f64 - passed_over;
    p.publish(events).await;
    // 30 orders, 10 of each sku, one unit at 10.00 each; every fifth cancelled after
    // confirmation.
    let mut want: Vec<SkuTotal> = ["BOOK", "LAMP", "MUG"]
        .iter()
        .map(|sku| {
            let kept = (0..30)
                .filter(|i| ["BOOK", "MUG", "LAMP"][i % 3] == *sku && i % 5 != 0)
                .count() as i64;
            total(sku, kept, kept * 1000, kept)
        })
        .collect();
    want.retain(|t| t.units > 0);

    let first = Running::start(&settings(&kafka, &db, &p.topic, &name, &name)).await;
    figures(&db, &want).await;
    eventually("the first group to apply every record", TIMEOUT, || async {
        (first.consumed(&name, "applied").await == records
            && first.consumed(&name, "ignored").await == passed_over)
            .then_some(())
    })
    .await;
    first.stop().await;

    // The replay: a new consumer group from the earliest offset, the same inbox name. Every
    // record is read again and skipped by the inbox; the handler never runs.
    let replay_group = format!("{name}-replay");
    let replay = Running::start(&settings(&kafka, &db, &p.topic, &name, &replay_group)).await;
    eventually("the replay to read the whole topic", TIMEOUT, || async {
        (replay.consumed(&replay_group, "duplicate").await == records
            && replay.consumed(&replay_group, "ignored").await == passed_over)
            .then_some(())
    })
    .await;
    assert_eq!(replay.consumed(&replay_group, "applied").await, 0.0);
    assert_eq!(totals(&db.pool).await.unwrap(), want);
    replay.stop().await;

    // The same replay under a new inbox name is a new subscriber: the handler sees every record
    // again (so the check above does tell the inbox's skip apart), and the figures still hold
    // because the handler keeps facts by key.
    let other = format!("{name}-other");
    let fresh = Running::start(&settings(&kafka, &db, &p.topic, &other, &other)).await;
    eventually("a new inbox to apply the whole topic", TIMEOUT, || async {
        (fresh.consumed(&other, "applied").await == records).then_some(())
    })
    .await;
    assert_eq!(fresh.consumed(&other, "duplicate").await, 0.0);
    assert_eq!(totals(&db.pool).await.unwrap(), want);
    fresh.stop().await;
    stop_relay.cancel();
}

#[test]
fn the_report_prints_every_sku_and_a_total_per_currency() {
    let text = sales_analytics::report::render(&[
        total("BOOK", 2, 7998, 1),
        SkuTotal {
            currency: "USD".into(),
            ..total("MUG", 1, 1299, 1)
        },
        total("MUG", 3, 3897, 2),
    ]);
    let lines: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines[1], ["BOOK", "EUR", "2", "79.98", "1"]);
    assert_eq!(lines[4], ["(all", "skus)", "EUR", "5", "118.95"]);
    assert_eq!(lines[5], ["(all", "skus)", "USD", "1", "12.99"]);
    assert!(sales_analytics::report::render(&[]).contains("no confirmed sales yet"));
}
