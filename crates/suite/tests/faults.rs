//! The fault matrix: the four services as real processes under a stream of orders from many
//! customers (some poor, some buying scarce stock, some cancelling), one fault per scenario,
//! then the cross-database audit once the fault has healed. Each scenario states its bound
//! ([`SETTLE`] unless it says otherwise: every order terminal, every outbox drained and the audit
//! clean within that time after healing) and prints its figures.
//!
//! - the process killed (an abort at a failpoint, `SHOP_FAILPOINTS=<point>=abort`) at each
//!   dangerous point, every service in turn: after the business commit before publish
//!   (`relay.before_publish`), after publish before delete (`relay.after_publish`), after the
//!   consumer's commit before its offset commit (`consumer.after_commit`), mid-batch
//!   (`consumer.mid_batch`); each process restarted as its supervisor would;
//! - PostgreSQL crash-restarted (immediate mode) under load, on a private cluster;
//! - a broker outage of 40 s, longer than the producers' `message.timeout.ms` (30 s);
//! - replicas killed while their consumer groups rebalance;
//! - poison records (`ce_id` with a NUL byte; a `ce_id` of 8 KB) amid valid orders;
//! - a whole-topic replay (every group's offsets reset to the start);
//! - a dead-letter re-drive after the customer cancelled;
//! - out-of-order delivery (`OrderCancelled` before its `OrderPlaced` and `PaymentRequested`);
//! - a black-holed relay leader (its PostgreSQL connection stops forwarding, nothing closes);
//! - two replicas of inventory and payment contending for few products and few accounts.
//!
//! At most two scenarios run at once ([`SLOT`]): each runs five to nine processes, and the
//! bounds they state mean something only on a machine that is not running many more.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::ExitStatusExt as _;
use std::str::FromStr as _;
use std::time::{Duration, Instant};

use prost::{Message as _, Name as _};
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::message::{Headers as _, Message as _};
use shop_eventing::headers;
use shop_proto::order::v1 as order_pb;
use shop_suite::audit::{AuditReport, ExpectedDeadLetter};
use shop_suite::harness::{self, PRICE, ProcessSuite, Shop, ShopSpec, StreamReport, eur};
use shop_suite::processes::{Service, free_port};
use shop_suite::scrape::Scrape;
use shop_testkit::{PrivatePostgres, TcpProxy, TestKafka};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions as _, PgPool};

/// The stated bound: once a fault has healed, every order is terminal, every outbox drained and
/// the audit clean within this time.
const SETTLE: Duration = Duration::from_secs(90);

/// Two scenarios at a time at most: each runs five to nine processes.
static SLOT: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

const SIGABRT: i32 = 6;

/// Prints a scenario's figures on the test process's own stderr: libtest captures `eprintln!`
/// (and shows it only for a failing test), and the figures of a passing run are the point.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// The suite with the default shop seeded.
async fn open(kafka: TestKafka) -> (ProcessSuite, Shop) {
    open_with(kafka, &ShopSpec::default(), None).await
}

async fn open_with(
    kafka: TestKafka,
    spec: &ShopSpec,
    database_server: Option<&str>,
) -> (ProcessSuite, Shop) {
    shop_telemetry::init_for_tests();
    let mut suite = ProcessSuite::start_on(kafka, Vec::new(), database_server)
        .await
        .unwrap();
    let shop = suite.open_shop(spec).await.unwrap();
    (suite, shop)
}

/// The audit is clean, it saw every order placed once, and every way an order ends happened.
fn check(report: &AuditReport, stream: &StreamReport) {
    report.assert_clean();
    let distinct: BTreeSet<&String> = stream.orders.iter().collect();
    assert_eq!(
        distinct.len(),
        stream.keys,
        "one order per idempotency key: {} keys gave {} distinct orders",
        stream.keys,
        distinct.len()
    );
    assert!(
        report.orders >= stream.orders.len(),
        "the audit saw {} orders, the stream placed {}",
        report.orders,
        stream.orders.len()
    );
    assert!(
        report.confirmed > 0 && report.cancelled > 0,
        "the stream ends orders both ways: {report:?}"
    );
}

fn figures(scenario: &str, stream: &StreamReport, report: &AuditReport, settled: Duration) {
    say!(
        "[faults] {scenario}: {} orders ({} confirmed, {} cancelled, {} of them by their customer); \
         settled {:.1} s after the fault healed",
        stream.orders.len(),
        report.confirmed,
        report.cancelled,
        stream.cancelled_by_customer,
        settled.as_secs_f64()
    );
}

// --- SIGKILL at each dangerous point ---------------------------------------------------------

/// The crash points each service is taken through, in this order: the relay's first (reached
/// with the first event), `consumer.mid_batch` last (only a batch of two records or more
/// reaches it, and which consumer gets one is up to timing).
fn crash_points(service: Service) -> &'static [&'static str] {
    match service {
        // It publishes nothing: no relay.
        Service::Notification => &["consumer.after_commit", "consumer.mid_batch"],
        Service::Order | Service::Inventory | Service::Payment => &[
            "relay.before_publish",
            "relay.after_publish",
            "consumer.after_commit",
            "consumer.mid_batch",
        ],
    }
}

/// Every service's replica 0 runs with its next crash point armed to abort the process
/// (`SHOP_FAILPOINTS=<point>=abort`: SIGABRT, nothing after the point runs, nothing is flushed
/// or closed), under a stream of orders; each process that aborts is restarted at once with its
/// next point armed, as its supervisor would restart it, until it went through them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_at_every_dangerous_point() {
    let _slot = SLOT.acquire().await.unwrap();
    let (mut suite, shop) = open(TestKafka::start()).await;
    let arm = |point: Option<&str>| point.map(|p| format!("{p}=abort"));
    let mut next: BTreeMap<Service, usize> = Service::ALL.iter().map(|s| (*s, 0)).collect();
    for service in Service::ALL {
        suite
            .processes
            .terminate(service, 0, Duration::from_secs(20))
            .await;
        let first = arm(crash_points(service).first().copied());
        suite
            .processes
            .set_env(service, 0, "SHOP_FAILPOINTS", first.as_deref());
        suite.processes.restart(service, 0).unwrap();
    }
    for service in Service::ALL {
        suite
            .processes
            .wait_serving(service, 0, Duration::from_secs(60))
            .await
            .unwrap();
    }

    let started = Instant::now();
    let stream = suite.stream_shop(20, Duration::from_secs(30), &shop);
    let mut fired: Vec<(Service, &str, Duration)> = Vec::new();
    let mut last_restart = Instant::now();
    let armed = |next: &BTreeMap<Service, usize>| {
        next.iter()
            .any(|(service, at)| *at < crash_points(*service).len())
    };
    while !stream.is_finished() || (armed(&next) && started.elapsed() < Duration::from_secs(45)) {
        for service in Service::ALL {
            let Some(status) = suite.processes.exited(service, 0) else {
                continue;
            };
            let at = next[&service];
            let point = crash_points(service).get(at).copied().unwrap_or("no point");
            assert_eq!(
                status.signal(),
                Some(SIGABRT),
                "{service:?} ended with {status}, not by the abort at {point}"
            );
            fired.push((service, point, started.elapsed()));
            next.insert(service, at + 1);
            let then = arm(crash_points(service).get(at + 1).copied());
            suite
                .processes
                .set_env(service, 0, "SHOP_FAILPOINTS", then.as_deref());
            suite.processes.restart(service, 0).unwrap();
            last_restart = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let placed = stream.await.unwrap();
    for (service, point, at) in &fired {
        say!(
            "[faults] {service:?} aborted at {point} {:.1} s into the stream",
            at.as_secs_f64()
        );
    }
    // Whoever is still armed (a batch never came its way) runs on without the failpoint.
    for (service, at) in &next {
        if *at < crash_points(*service).len() {
            suite
                .processes
                .terminate(*service, 0, Duration::from_secs(20))
                .await;
            suite
                .processes
                .set_env(*service, 0, "SHOP_FAILPOINTS", None);
            suite.processes.restart(*service, 0).unwrap();
        }
    }
    for service in Service::ALL {
        let points = crash_points(service);
        let reached: Vec<&str> = fired
            .iter()
            .filter(|(s, _, _)| *s == service)
            .map(|(_, p, _)| *p)
            .collect();
        assert!(
            reached.len() >= points.len() - 1,
            "{service:?} reached only {reached:?} of {points:?}"
        );
    }
    assert!(
        fired.iter().any(|(_, p, _)| *p == "consumer.mid_batch"),
        "no consumer was killed mid-batch"
    );
    let (settled, report) = suite.settle(SETTLE).await.unwrap();
    figures(
        &format!("{} SIGABRTs at the crash points", fired.len()),
        &placed,
        &report,
        last_restart.elapsed().min(settled),
    );
    check(&report, &placed);
}

// --- PostgreSQL ------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_crash_restarted_under_load() {
    let _slot = SLOT.acquire().await.unwrap();
    // The shared server must never be stopped: a cluster of this test's own.
    let postgres = PrivatePostgres::start().await.unwrap();
    let (suite, shop) = open_with(
        TestKafka::start(),
        &ShopSpec::default(),
        Some(&postgres.url()),
    )
    .await;
    let pids: Vec<Option<u32>> = Service::ALL
        .iter()
        .map(|s| suite.processes.pid(*s, 0))
        .collect();

    let stream = suite.stream_shop(20, Duration::from_secs(16), &shop);
    tokio::time::sleep(Duration::from_secs(4)).await;
    // A crash and an immediate restart, then a crash with 3 s of downtime.
    postgres.restart_immediate().await.unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    postgres.stop_immediate().await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    postgres.start_again().await.unwrap();
    let healed = Instant::now();
    let placed = stream.await.unwrap();
    let (_, report) = suite.settle(SETTLE).await.unwrap();
    figures(
        "PostgreSQL crash-restarted twice (immediate mode)",
        &placed,
        &report,
        healed.elapsed(),
    );
    // The services rode it out by themselves: the same processes.
    let after: Vec<Option<u32>> = Service::ALL
        .iter()
        .map(|s| suite.processes.pid(*s, 0))
        .collect();
    assert_eq!(pids, after, "a service process died with its database");
    check(&report, &placed);
}

// --- The broker ------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broker_outage_longer_than_the_delivery_timeout() {
    let _slot = SLOT.acquire().await.unwrap();
    let kafka = TestKafka::own().await;
    let apache = kafka.is_apache();
    let (suite, shop) = open(kafka).await;
    let pids: Vec<Option<u32>> = Service::ALL
        .iter()
        .map(|s| suite.processes.pid(*s, 0))
        .collect();

    let stream = suite.stream_shop(10, Duration::from_secs(50), &shop);
    tokio::time::sleep(Duration::from_secs(5)).await;
    // 40 s: longer than the producers' message.timeout.ms (30 s) and the consumers' session.
    assert!(suite.kafka.set_brokers_down(true), "this test's own broker");
    tokio::time::sleep(Duration::from_secs(40)).await;
    assert!(suite.kafka.set_brokers_down(false));
    let healed = Instant::now();
    let placed = stream.await.unwrap();
    // Apache Kafka recovers its log before it serves again: part of the time to settle.
    let patience = if apache { SETTLE * 2 } else { SETTLE };
    let (_, report) = suite.settle(patience).await.unwrap();
    figures(
        &format!(
            "broker ({}) down 40 s",
            if apache {
                "Apache Kafka, SIGKILL"
            } else {
                "mock cluster"
            }
        ),
        &placed,
        &report,
        healed.elapsed(),
    );
    let after: Vec<Option<u32>> = Service::ALL
        .iter()
        .map(|s| suite.processes.pid(*s, 0))
        .collect();
    assert_eq!(pids, after, "the services recovered by themselves");
    check(&report, &placed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_killed_during_a_rebalance() {
    let _slot = SLOT.acquire().await.unwrap();
    let (mut suite, shop) = open(TestKafka::start()).await;
    let consuming = [Service::Inventory, Service::Payment, Service::Notification];
    for service in consuming {
        suite.processes.add(service, Vec::new()).unwrap();
    }
    for service in consuming {
        suite
            .processes
            .wait_serving(service, 1, Duration::from_secs(60))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(3)).await;

    let stream = suite.stream_shop(20, Duration::from_secs(16), &shop);
    tokio::time::sleep(Duration::from_secs(4)).await;
    // A third replica joins each group: the coordinator starts a rebalance and waits for the
    // members to rejoin. While it does, replica 0 (the relay leader, and a member revoking its
    // partitions) dies. Apache Kafka reports the group's state, so the kill waits for the
    // rebalance to start; the mock cluster does not, but holds every rebalance after a join
    // for the session timeout less a second (5 s), which the new replica's start falls in.
    let mut states = Vec::new();
    for service in consuming {
        suite.processes.add(service, Vec::new()).unwrap();
        let group = suite.config.group(service);
        let joined = Instant::now();
        let state = loop {
            match suite.kafka.group_state(&group).await {
                Some(state) if state.contains("Rebalance") => break Some(state),
                Some(_) => {}
                None => {
                    suite
                        .processes
                        .wait_serving(service, 2, Duration::from_secs(60))
                        .await
                        .unwrap();
                    break None;
                }
            }
            assert!(
                joined.elapsed() < Duration::from_secs(30),
                "{service:?}'s group never started rebalancing when a third replica joined"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        suite.processes.kill(service, 0);
        states.push((service, state));
    }
    let killed = Instant::now();
    say!(
        "[faults] groups' state when replica 0 was killed: {states:?} (the mock cluster reports none)"
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    for service in consuming {
        suite.processes.restart(service, 0).unwrap();
    }
    let placed = stream.await.unwrap();
    let (_, report) = suite.settle(SETTLE).await.unwrap();
    figures(
        "replica 0 of three services killed mid-rebalance, restarted 5 s later",
        &placed,
        &report,
        killed.elapsed(),
    );
    check(&report, &placed);
}

// --- Hostile and replayed records ------------------------------------------------------------

/// The dead letters of `event_type` that `count` records make in the `database` consumers.
fn dead_letters(
    database: &'static str,
    event_type: &'static str,
    count: usize,
) -> Vec<ExpectedDeadLetter> {
    vec![
        ExpectedDeadLetter {
            database,
            event_type,
        };
        count
    ]
}

/// The payment dead letters of [`order_dead_lettered_at_payment`]'s orders.
fn payment_dead_letters(count: usize) -> Vec<ExpectedDeadLetter> {
    dead_letters("payment", "shop.order.v1.PaymentRequested", count)
}

/// CloudEvents headers of a record any client could produce.
fn ce_headers(id: &[u8], event_type: &str, key: &str) -> Vec<(String, Vec<u8>)> {
    vec![
        (headers::CE_ID.into(), id.to_vec()),
        (headers::CE_TYPE.into(), event_type.as_bytes().to_vec()),
        (headers::CE_SOURCE.into(), b"/test/faults".to_vec()),
        (
            headers::CE_SPECVERSION.into(),
            headers::SPEC_VERSION.as_bytes().to_vec(),
        ),
        (
            headers::CE_TIME.into(),
            chrono::Utc::now().to_rfc3339().into_bytes(),
        ),
        (headers::CE_PARTITIONKEY.into(), key.as_bytes().to_vec()),
        (
            headers::CONTENT_TYPE.into(),
            headers::PROTOBUF.as_bytes().to_vec(),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn poison_records_amid_valid_orders_stop_nothing() {
    let _slot = SLOT.acquire().await.unwrap();
    let (suite, shop) = open(TestKafka::start()).await;
    let stream = suite.stream_shop(20, Duration::from_secs(14), &shop);
    tokio::time::sleep(Duration::from_secs(4)).await;

    // An `OrderCancelled` every consumer of the topic handles, with a payload that is not one,
    // under an id PostgreSQL cannot store: a NUL byte; then one too long for a btree index.
    let topic = suite.config.order_events_topic.clone();
    let cancelled = order_pb::OrderCancelled::full_name();
    let garbage = [0xff_u8; 12];
    let mut poisons = Vec::new();
    for (key, id) in [
        ("poison-nul", b"a\0b".to_vec()),
        ("poison-long", vec![b'x'; 8 * 1024]),
    ] {
        let at = suite
            .kafka
            .produce(
                &topic,
                Some(key),
                &garbage,
                &ce_headers(&id, &cancelled, key),
            )
            .await
            .unwrap();
        poisons.push(at);
    }
    let placed = stream.await.unwrap();
    let after_stream = Instant::now();
    // Each consumer of the order topic dead-letters both, and nothing else.
    let poisoned: Vec<ExpectedDeadLetter> = ["inventory", "payment", "notification"]
        .into_iter()
        .flat_map(|database| dead_letters(database, "shop.order.v1.OrderCancelled", 2))
        .collect();
    let (_, report) = suite.settle_expecting(SETTLE, &poisoned).await.unwrap();
    let caught_up = suite.wait_caught_up(Duration::from_secs(30)).await.unwrap();
    figures(
        "two poison records on the order topic",
        &placed,
        &report,
        after_stream.elapsed(),
    );
    say!(
        "[faults] every group's lag back to 0 {:.1} s after settling",
        caught_up.as_secs_f64()
    );
    check(&report, &placed);

    // Each consumer of the topic put both aside on its dead-letter topic, with where they were.
    for service in [Service::Inventory, Service::Payment, Service::Notification] {
        let dlq = format!("{}.dlq", suite.config.group(service));
        let records = suite
            .kafka
            .read_all(&dlq, 2, Duration::from_secs(20), Duration::from_secs(1))
            .await;
        let origins: BTreeSet<(i32, i64)> = records
            .iter()
            .filter(|r| r.header(headers::DLQ_SOURCE_TOPIC) == Some(topic.as_str()))
            .filter_map(|r| {
                Some((
                    r.header(headers::DLQ_SOURCE_PARTITION)?.parse().ok()?,
                    r.header(headers::DLQ_SOURCE_OFFSET)?.parse().ok()?,
                ))
            })
            .collect();
        for poison in &poisons {
            assert!(
                origins.contains(poison),
                "{service:?} did not dead-letter the poison record at {poison:?}: its dead-letter topic has {origins:?}"
            );
        }
    }
}

/// Places one order of a plentiful product for `customer` and waits until payment has
/// dead-lettered its `PaymentRequested`.
async fn order_dead_lettered_at_payment(
    suite: &mut ProcessSuite,
    shop: &Shop,
    customer: &str,
) -> String {
    // As a client does: a failure that may pass is retried under the same idempotency key.
    let order = harness::place(
        &mut suite.clients.order,
        &order_pb::PlaceOrderRequest {
            idempotency_key: format!("{customer}-order"),
            customer_id: customer.into(),
            lines: vec![order_pb::LineRequest {
                sku: shop.plentiful[0].clone(),
                quantity: 1,
            }],
        },
    )
    .await;
    shop_testkit::eventually("the PaymentRequested dead-lettered", Duration::from_secs(60), || {
        let (pool, customer) = (suite.dbs.payment.clone(), customer.to_owned());
        async move {
            // The error names the customer whose debit the trigger refused.
            let rows: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM eventing_dead_letter WHERE event_type = $1 AND error LIKE '%' || $2 || '%'",
            )
            .bind(order_pb::PaymentRequested::full_name())
            .bind(&customer)
            .fetch_one(&pool)
            .await
            .ok()?;
            (rows > 0).then_some(())
        }
    })
    .await;
    order
}

async fn balance(payment: &PgPool, customer: &str) -> i64 {
    sqlx::query_scalar("SELECT balance_minor FROM accounts WHERE customer_id = $1")
        .bind(customer)
        .fetch_one(payment)
        .await
        .unwrap()
}

async fn payment_status(payment: &PgPool, order: &str) -> Option<String> {
    sqlx::query_scalar("SELECT status FROM payments WHERE order_id = $1")
        .bind(order)
        .fetch_optional(payment)
        .await
        .unwrap()
}

async fn reservation_status(inventory: &PgPool, order: &str) -> Option<String> {
    sqlx::query_scalar("SELECT status FROM reservations WHERE order_id = $1")
        .bind(order)
        .fetch_optional(inventory)
        .await
        .unwrap()
}

/// Everything the saga decided, one line per fact, to compare before and after a replay.
async fn snapshot(suite: &ProcessSuite) -> BTreeSet<String> {
    let d = &suite.dbs;
    let queries: [(&PgPool, &str); 8] = [
        (
            &d.payment,
            "SELECT 'account ' || customer_id || ' ' || balance_minor FROM accounts",
        ),
        (
            &d.payment,
            "SELECT 'payment ' || order_id || ' ' || status || ' ' || amount_minor FROM payments",
        ),
        (
            &d.inventory,
            "SELECT 'product ' || sku || ' ' || on_hand || ' ' || reserved || ' ' || sold FROM products",
        ),
        (
            &d.inventory,
            "SELECT 'reservation ' || order_id || ' ' || status FROM reservations",
        ),
        (
            &d.order,
            "SELECT 'order ' || order_id || ' ' || status FROM orders",
        ),
        (
            &d.order,
            "SELECT 'order history ' || order_id || ' ' || count(*) FROM order_status_history GROUP BY order_id",
        ),
        (
            &d.notification,
            "SELECT 'notification ' || order_id || ' ' || kind || ' ' || count(*) FROM notifications GROUP BY order_id, kind",
        ),
        (
            &d.notification,
            "SELECT 'notification rows ' || count(*) FROM notifications",
        ),
    ];
    let mut facts = BTreeSet::new();
    for (pool, query) in queries {
        let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(query.to_owned()))
            .fetch_all(pool)
            .await
            .unwrap();
        facts.extend(rows);
    }
    facts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_whole_topic_replay_applies_nothing_twice() {
    let _slot = SLOT.acquire().await.unwrap();
    let (mut suite, shop) = open(TestKafka::start()).await;
    suite.account("victim-0", 10_000).await.unwrap();
    harness::refuse_victims_debits(&suite.dbs.payment).await;

    let stream = suite.stream_shop(20, Duration::from_secs(10), &shop);
    // An order whose payment is dead-lettered, then cancelled by its customer.
    let victim = order_dead_lettered_at_payment(&mut suite, &shop, "victim-0").await;
    suite
        .clients
        .order
        .cancel_order(order_pb::CancelOrderRequest {
            order_id: victim.clone(),
        })
        .await
        .unwrap();
    let placed = stream.await.unwrap();
    let (_, report) = suite
        .settle_expecting(SETTLE, &payment_dead_letters(1))
        .await
        .unwrap();
    report.assert_clean();
    let before = snapshot(&suite).await;
    // The operator fixes the cause, and (the dead-letter row still there) replays every topic.
    harness::fix_the_cause(&suite.dbs.payment).await;

    for service in Service::ALL {
        assert!(
            suite
                .processes
                .terminate(service, 0, Duration::from_secs(30))
                .await,
            "{service:?} did not stop cleanly"
        );
    }
    for service in Service::ALL {
        for topic in suite.consumed_topics(service) {
            suite
                .kafka
                .reset_group_to_earliest(&suite.config.group(service), &topic)
                .await
                .unwrap();
        }
    }
    let lag: i64 = suite.lag().await.unwrap().iter().map(|(_, _, l)| l).sum();
    let replayed = Instant::now();
    for service in [
        Service::Inventory,
        Service::Order,
        Service::Payment,
        Service::Notification,
    ] {
        suite.processes.restart(service, 0).unwrap();
    }
    let caught_up = suite
        .wait_caught_up(Duration::from_secs(120))
        .await
        .unwrap();
    // The dead-lettered record is skipped on replay: its dead letter stays the only one.
    let (_, report) = suite
        .settle_expecting(SETTLE, &payment_dead_letters(1))
        .await
        .unwrap();
    say!(
        "[faults] replay: {} orders, {lag} records read again, caught up in {:.1} s, settled {:.1} s after the restart",
        placed.orders.len() + 1,
        caught_up.as_secs_f64(),
        replayed.elapsed().as_secs_f64()
    );
    let after = snapshot(&suite).await;
    let lost: Vec<&String> = before.difference(&after).collect();
    let new: Vec<&String> = after.difference(&before).collect();
    assert!(
        lost.is_empty() && new.is_empty(),
        "the replay changed what was decided: before {lost:?}, after {new:?}"
    );
    assert_eq!(
        balance(&suite.dbs.payment, "victim-0").await,
        10_000,
        "no money taken for the cancelled order"
    );
    report.assert_clean();
    check(&report, &placed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_letter_re_driven_after_the_customer_cancelled_takes_no_money() {
    let _slot = SLOT.acquire().await.unwrap();
    let (mut suite, shop) = open(TestKafka::start()).await;
    for victim in ["victim-kept", "victim-deleted"] {
        suite.account(victim, 10_000).await.unwrap();
    }
    harness::refuse_victims_debits(&suite.dbs.payment).await;
    let stream = suite.stream_shop(20, Duration::from_secs(10), &shop);
    let kept = order_dead_lettered_at_payment(&mut suite, &shop, "victim-kept").await;
    let deleted = order_dead_lettered_at_payment(&mut suite, &shop, "victim-deleted").await;
    for order in [&kept, &deleted] {
        suite
            .clients
            .order
            .cancel_order(order_pb::CancelOrderRequest {
                order_id: order.clone(),
            })
            .await
            .unwrap();
    }
    let placed = stream.await.unwrap();
    suite
        .settle_expecting(SETTLE, &payment_dead_letters(2))
        .await
        .unwrap();

    // The operator fixes the cause and re-drives the dead letters onto the topic with their
    // original headers: one with its dead-letter row still there (as the review reproduced),
    // one after deleting it (the documented procedure).
    harness::fix_the_cause(&suite.dbs.payment).await;
    sqlx::query("DELETE FROM eventing_dead_letter WHERE error LIKE '%victim-deleted%'")
        .execute(&suite.dbs.payment)
        .await
        .unwrap();
    let dlq = format!("{}.dlq", suite.config.group(Service::Payment));
    let dead = suite
        .kafka
        .read_all(&dlq, 2, Duration::from_secs(30), Duration::from_secs(1))
        .await;
    let mut redriven = 0;
    for record in &dead {
        let Some(key) = record
            .key
            .as_deref()
            .filter(|k| *k == kept || *k == deleted)
        else {
            continue;
        };
        let original: Vec<(String, Vec<u8>)> = record
            .headers
            .iter()
            .filter(|(name, _)| !name.starts_with("dlq_"))
            .map(|(name, value)| (name.clone(), value.clone().into_bytes()))
            .collect();
        suite
            .kafka
            .produce(
                &suite.config.order_events_topic,
                Some(key),
                &record.payload,
                &original,
            )
            .await
            .unwrap();
        redriven += 1;
    }
    assert_eq!(redriven, 2, "both dead letters found on {dlq}: {dead:?}");
    let redriven_at = Instant::now();
    suite.wait_caught_up(Duration::from_secs(60)).await.unwrap();
    // The re-driven record whose dead-letter row was kept is skipped again; the other applies.
    let (_, report) = suite
        .settle_expecting(SETTLE, &payment_dead_letters(1))
        .await
        .unwrap();
    figures(
        "dead letters re-driven after the customers cancelled",
        &placed,
        &report,
        redriven_at.elapsed(),
    );
    for (customer, order) in [("victim-kept", &kept), ("victim-deleted", &deleted)] {
        let status = payment_status(&suite.dbs.payment, order).await;
        assert_ne!(
            status.as_deref(),
            Some("captured"),
            "{customer}'s cancelled order {order} was charged"
        );
        assert_eq!(
            balance(&suite.dbs.payment, customer).await,
            10_000,
            "{customer} lost money"
        );
    }
    check(&report, &placed);
}

/// One outbox row, as the relay would publish it.
#[derive(sqlx::FromRow)]
struct OutboxRow {
    event_id: uuid::Uuid,
    event_type: String,
    source: String,
    payload: Vec<u8>,
    created_at: chrono::DateTime<chrono::Utc>,
}

impl OutboxRow {
    fn headers(&self, key: &str) -> Vec<(String, Vec<u8>)> {
        let mut headers = ce_headers(self.event_id.to_string().as_bytes(), &self.event_type, key);
        for (name, value) in &mut headers {
            if name == headers::CE_SOURCE {
                *value = self.source.clone().into_bytes();
            } else if name == headers::CE_TIME {
                *value = self
                    .created_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
                    .into_bytes();
            }
        }
        headers
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_order_cancelled_before_its_placement_arrives_reserves_and_captures_nothing() {
    let _slot = SLOT.acquire().await.unwrap();
    let (mut suite, shop) = open(TestKafka::start()).await;
    suite.account("late-0", 10_000).await.unwrap();
    let stream = suite.stream_shop(20, Duration::from_secs(14), &shop);
    tokio::time::sleep(Duration::from_secs(3)).await;

    // The order service restarted with a broker address nobody answers on: its relay cannot
    // publish, so its events stay in the outbox, where the test takes them from.
    let dead_broker = format!("127.0.0.1:{}", free_port());
    suite
        .processes
        .terminate(Service::Order, 0, Duration::from_secs(20))
        .await;
    suite.processes.set_env(
        Service::Order,
        0,
        "KAFKA_BOOTSTRAP_SERVERS",
        Some(&dead_broker),
    );
    suite.processes.restart(Service::Order, 0).unwrap();
    suite
        .processes
        .wait_serving(Service::Order, 0, Duration::from_secs(60))
        .await
        .unwrap();
    let mut late = Vec::new();
    for i in 0..3 {
        let order = suite
            .clients
            .order
            .place_order(order_pb::PlaceOrderRequest {
                idempotency_key: format!("late-{i}"),
                customer_id: "late-0".into(),
                lines: vec![order_pb::LineRequest {
                    sku: shop.plentiful[i % shop.plentiful.len()].clone(),
                    quantity: 1,
                }],
            })
            .await
            .unwrap()
            .into_inner()
            .order
            .unwrap();
        suite
            .clients
            .order
            .cancel_order(order_pb::CancelOrderRequest {
                order_id: order.order_id.clone(),
            })
            .await
            .unwrap();
        late.push((order.order_id, order.total.map_or(0, |m| m.amount_minor)));
    }
    // Delivered out of order by hand: the cancellation first, then the placement and the
    // payment request the order service would have sent had inventory answered first.
    let topic = suite.config.order_events_topic.clone();
    for (order, total) in &late {
        let rows: Vec<OutboxRow> = sqlx::query_as(
            "DELETE FROM eventing_outbox WHERE partition_key = $1 \
             RETURNING event_id, event_type, source, payload, created_at",
        )
        .bind(order)
        .fetch_all(&suite.dbs.order)
        .await
        .unwrap();
        let of = |name: String| {
            rows.iter()
                .find(|r| r.event_type == name)
                .unwrap_or_else(|| panic!("no {name} of {order} in the outbox"))
        };
        let cancelled = of(order_pb::OrderCancelled::full_name());
        let placed = of(order_pb::OrderPlaced::full_name());
        let requested = order_pb::PaymentRequested {
            order_id: order.clone(),
            customer_id: "late-0".into(),
            amount: eur(*total),
        };
        let request_id = uuid::Uuid::now_v7().to_string();
        for (payload, headers) in [
            (cancelled.payload.clone(), cancelled.headers(order)),
            (placed.payload.clone(), placed.headers(order)),
            (
                requested.encode_to_vec(),
                ce_headers(
                    request_id.as_bytes(),
                    &order_pb::PaymentRequested::full_name(),
                    order,
                )
                .into_iter()
                .map(|(k, v)| {
                    if k == headers::CE_SOURCE {
                        (k, b"/shop/order-service".to_vec())
                    } else {
                        (k, v)
                    }
                })
                .collect(),
            ),
        ] {
            suite
                .kafka
                .produce(&topic, Some(order), &payload, &headers)
                .await
                .unwrap();
        }
    }
    suite
        .processes
        .terminate(Service::Order, 0, Duration::from_secs(20))
        .await;
    suite
        .processes
        .set_env(Service::Order, 0, "KAFKA_BOOTSTRAP_SERVERS", None);
    suite.processes.restart(Service::Order, 0).unwrap();
    let healed = Instant::now();
    let placed = stream.await.unwrap();
    let (_, report) = suite.settle(SETTLE).await.unwrap();
    figures(
        "three orders delivered cancellation first",
        &placed,
        &report,
        healed.elapsed(),
    );
    for (order, _) in &late {
        let reservation = reservation_status(&suite.dbs.inventory, order).await;
        assert!(
            !matches!(reservation.as_deref(), Some("reserved" | "sold")),
            "cancelled order {order} holds stock: {reservation:?}"
        );
        let payment = payment_status(&suite.dbs.payment, order).await;
        assert_ne!(
            payment.as_deref(),
            Some("captured"),
            "cancelled order {order} was charged"
        );
    }
    assert_eq!(
        balance(&suite.dbs.payment, "late-0").await,
        10_000,
        "late-0 lost money"
    );
    check(&report, &placed);
}

// --- Failover --------------------------------------------------------------------------------

/// The stated bound: a standby relay takes over this soon after the leader's database
/// connection is black-holed.
const TAKEOVER: Duration = Duration::from_secs(15);

/// When each record of a topic arrived, by when it was appended (`ce_time`).
type Arrivals =
    std::sync::Arc<std::sync::Mutex<Vec<(chrono::DateTime<chrono::FixedOffset>, Instant)>>>;

/// Reads `topic` from the start for as long as the returned task runs, noting each record's
/// `ce_time` and arrival. Started before a fault, it is caught up when the fault comes, so an
/// arrival is the record's publication (plus a fetch).
fn watch_topic(bootstrap: &str, topic: &str) -> (Arrivals, tokio::task::JoinHandle<()>) {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set(
            "group.id",
            format!("takeover-{}", uuid::Uuid::new_v4().simple()),
        )
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "20")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let arrivals = Arrivals::default();
    let noted = arrivals.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok(message) = consumer.recv().await else {
                continue;
            };
            let appended = message
                .headers()
                .and_then(|hs| hs.iter().find(|h| h.key == headers::CE_TIME))
                .and_then(|h| std::str::from_utf8(h.value?).ok())
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
            if let Some(appended) = appended {
                noted
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push((appended, Instant::now()));
            }
        }
    });
    (arrivals, task)
}

/// The arrival of the first record appended after `after`, if one arrived.
fn first_appended_after(
    arrivals: &Arrivals,
    after: chrono::DateTime<chrono::Utc>,
) -> Option<Instant> {
    arrivals
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .filter(|(appended, _)| *appended > after)
        .map(|(_, arrived)| *arrived)
        .min()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_black_holed_relay_leader_is_replaced_within_the_bound() {
    let _slot = SLOT.acquire().await.unwrap();
    let (mut suite, shop) = open(TestKafka::start()).await;
    // Replica 0 of payment reaches its database through a proxy; replica 1 directly.
    let direct = PgConnectOptions::from_str(&suite.config.databases[&Service::Payment]).unwrap();
    let upstream = tokio::net::lookup_host((direct.get_host(), direct.get_port()))
        .await
        .unwrap()
        .next()
        .unwrap();
    let proxy = TcpProxy::start(upstream).await.unwrap();
    let through = direct
        .clone()
        .host("127.0.0.1")
        .port(proxy.addr().port())
        .to_url_lossy()
        .to_string();
    suite
        .processes
        .terminate(Service::Payment, 0, Duration::from_secs(20))
        .await;
    suite
        .processes
        .set_env(Service::Payment, 0, "PAYMENT_DATABASE_URL", Some(&through));
    suite.processes.restart(Service::Payment, 0).unwrap();
    suite
        .processes
        .wait_serving(Service::Payment, 0, Duration::from_secs(60))
        .await
        .unwrap();
    let leader = suite.processes.replica_metrics_addr(Service::Payment, 0);
    shop_testkit::eventually(
        "replica 0 of payment relays",
        Duration::from_secs(30),
        || async move {
            let scrape = Scrape::fetch(leader).await.ok()?;
            (scrape.value("shop_outbox_relay_leader", &[]) == Some(1.0)).then_some(())
        },
    )
    .await;
    suite.processes.add(Service::Payment, Vec::new()).unwrap();
    suite
        .processes
        .wait_serving(Service::Payment, 1, Duration::from_secs(60))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;

    let (arrivals, watching) = watch_topic(
        suite.kafka.bootstrap_servers(),
        &suite.config.payment_events_topic,
    );
    let stream = suite.stream_shop(20, Duration::from_secs(20), &shop);
    // Payment's events flow (the groups settled over both replicas) before the fault.
    shop_testkit::eventually("payment events flowing", Duration::from_secs(30), || {
        let recent = chrono::Utc::now() - chrono::Duration::seconds(2);
        let flowing = first_appended_after(&arrivals, recent).is_some();
        async move { flowing.then_some(()) }
    })
    .await;
    let wall = chrono::Utc::now();
    proxy.black_hole();
    let black_holed = Instant::now();
    let took = loop {
        if let Some(arrived) = first_appended_after(&arrivals, wall) {
            break Some(arrived.duration_since(black_holed));
        }
        if black_holed.elapsed() > TAKEOVER {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    say!(
        "[faults] black-holed relay leader: the first payment event appended after it was published {took:?} later (bound {TAKEOVER:?})"
    );
    assert!(
        took.is_some(),
        "no payment event appended after the leader was black-holed was published within {TAKEOVER:?}: no standby took over"
    );
    let placed = stream.await.unwrap();
    // The black-holed replica is still alive (its Kafka sessions too): stopped now, as a
    // failing liveness probe would, while its database sessions stay open behind the proxy.
    suite.processes.kill(Service::Payment, 0);
    let killed = Instant::now();
    let (_, report) = suite.settle(SETTLE).await.unwrap();
    figures(
        "payment's relay leader black-holed, killed after the stream",
        &placed,
        &report,
        killed.elapsed(),
    );
    check(&report, &placed);
    watching.abort();
    drop(proxy);
}

// --- Contention ------------------------------------------------------------------------------

async fn deadlocks(pool: &PgPool) -> i64 {
    sqlx::query("SELECT pg_stat_clear_snapshot()")
        .execute(pool)
        .await
        .unwrap();
    sqlx::query_scalar("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_contending_for_few_products_and_accounts_never_deadlock() {
    let _slot = SLOT.acquire().await.unwrap();
    let spec = ShopSpec {
        rich: 3,
        poor: 1,
        poor_deposit: 3 * PRICE,
        plentiful: 3,
        scarce: 1,
        scarce_stock: 10,
        lines: 2,
        burst: 10,
        cancelling: true,
    };
    let (mut suite, shop) = open_with(TestKafka::start(), &spec, None).await;
    for service in [Service::Inventory, Service::Payment] {
        suite.processes.add(service, Vec::new()).unwrap();
        suite
            .processes
            .wait_serving(service, 1, Duration::from_secs(60))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = (
        deadlocks(&suite.dbs.inventory).await,
        deadlocks(&suite.dbs.payment).await,
    );
    let stream = suite.stream_shop(40, Duration::from_secs(15), &shop);
    let placed = stream.await.unwrap();
    let ended = Instant::now();
    let (_, report) = suite.settle(SETTLE).await.unwrap();
    // A backend flushes its statistics (deadlocks among them) at a transaction's end once a
    // second, or after 10 s idle: wait for the idle flush of the last ones.
    tokio::time::sleep(Duration::from_secs(11)).await;
    let after = (
        deadlocks(&suite.dbs.inventory).await,
        deadlocks(&suite.dbs.payment).await,
    );
    figures(
        "two replicas of inventory and payment, 3 customers, 4 products",
        &placed,
        &report,
        ended.elapsed(),
    );
    say!("[faults] deadlocks (inventory, payment): before {before:?}, after {after:?}");
    assert_eq!(
        before, after,
        "PostgreSQL detected deadlocks (inventory, payment)"
    );
    check(&report, &placed);
}
