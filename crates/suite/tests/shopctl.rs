//! `shopctl` against the suite as real processes: every command, over the services' admin and
//! public APIs and the broker, as an operator runs it.
//!
//! The scenario: a bug (a trigger the test installs) makes payment refuse the debits of
//! customers `victim-*`, so the `PaymentRequested` of the victim's order is dead-lettered and
//! the order stays PENDING; a poison record (a valid id, a payload that is no event) is
//! dead-lettered by every consumer of the order topic. Then, with `shopctl` only:
//!
//! - `dlq list` / `dlq show` find both, with the error, the source position and the decoded
//!   payload; `order` explains the stuck order;
//! - `dlq replay --dry-run` changes nothing; after the fix, `dlq replay` has the payment applied
//!   once: the order confirms, the account is debited once, the dead letter is gone, and nothing
//!   else moved (the other consumers of the topic skip the replayed record);
//! - the poison record replayed for one consumer fails again and is counted; replayed again with
//!   the limit reached it is held back (exit status 3) unless forced;
//! - `dlq purge` (dry run, then for real) removes the poison's dead letters;
//! - `outbox status|retry|drop` on parked rows; `lag` from the broker; `audit` shows who did
//!   what; every `--output json` parses.
//!
//! The outputs of the key commands are printed on stderr (`[shopctl] ...`).

use std::process::Output;
use std::time::Duration;

use prost::Name as _;
use serde_json::Value;
use shop_eventing::headers;
use shop_proto::order::v1 as order_pb;
use shop_suite::harness::{self, PRICE, ProcessSuite, Shop, ShopSpec};
use shop_suite::processes::{Service, binary_path};
use shop_testkit::TestKafka;
use sqlx::PgPool;

/// The stated bound for the saga to settle once nothing stands in its way.
const SETTLE: Duration = Duration::from_secs(90);

macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// Runs `shopctl` against `suite` with an operator's token; returns its output.
fn shopctl(suite: &ProcessSuite, args: &[&str]) -> Output {
    let p = &suite.processes;
    let mut command = std::process::Command::new(binary_path("shopctl"));
    command
        .env_clear()
        .env("SHOP_TOKEN", shop_testkit::test_auth().operator())
        .env("KAFKA_BOOTSTRAP_SERVERS", suite.kafka.bootstrap_servers())
        .arg("--timeout-seconds")
        .arg("20");
    for service in Service::ALL {
        let name = service.name();
        command
            .arg(format!("--{name}-admin"))
            .arg(p.admin_url(service, 0))
            .arg(format!("--{name}-url"))
            .arg(p.url(service, 0));
    }
    command.args(args).output().expect("shopctl runs")
}

/// `shopctl ARGS`, which must succeed; its stdout.
fn ok(suite: &ProcessSuite, args: &[&str]) -> String {
    let out = shopctl(suite, args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "shopctl {args:?} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// `shopctl ARGS -o json`, which must succeed and print one JSON document.
fn json(suite: &ProcessSuite, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["--output", "json"]);
    let stdout = ok(suite, &all);
    serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("shopctl {args:?} -o json printed no JSON ({e}):\n{stdout}"))
}

fn show(title: &str, output: &str) {
    say!("[shopctl] $ {title}\n{output}");
}

/// The dead letters `dlq list -o json` reports, as (consumer, event id, replays).
fn listed(suite: &ProcessSuite, args: &[&str]) -> Vec<(String, String, u64)> {
    let mut all = vec!["dlq", "list"];
    all.extend(args);
    json(suite, &all)["dead_letters"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|d| {
            (
                d["consumer"].as_str().unwrap().to_owned(),
                d["event_id"].as_str().unwrap().to_owned(),
                d["replays"].as_u64().unwrap(),
            )
        })
        .collect()
}

async fn balance(payment: &PgPool, customer: &str) -> i64 {
    sqlx::query_scalar("SELECT balance_minor FROM accounts WHERE customer_id = $1")
        .bind(customer)
        .fetch_one(payment)
        .await
        .unwrap()
}

/// CloudEvents headers of a record any client could produce.
fn ce_headers(id: &str, event_type: &str, key: &str) -> Vec<(String, Vec<u8>)> {
    [
        (headers::CE_ID, id),
        (headers::CE_TYPE, event_type),
        (headers::CE_SOURCE, "/test/shopctl"),
        (headers::CE_SPECVERSION, headers::SPEC_VERSION),
        (headers::CE_TIME, &chrono::Utc::now().to_rfc3339()),
        (headers::CE_PARTITIONKEY, key),
        (headers::CONTENT_TYPE, headers::PROTOBUF),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.as_bytes().to_vec()))
    .collect()
}

async fn order_status(suite: &mut ProcessSuite, order_id: &str) -> i32 {
    suite
        .clients
        .order
        .get_order(order_pb::GetOrderRequest {
            order_id: order_id.to_owned(),
        })
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap()
        .status
}

/// A parked row in the order service's outbox, as the relay leaves one after its attempts ran
/// out (here for a topic of the test's own, so that a retry publishes it where the test reads).
async fn park(order: &PgPool, topic: &str, key: &str) -> i64 {
    sqlx::query_scalar(
        "INSERT INTO eventing_outbox (event_id, topic, partition_key, event_type, source, payload, attempts, last_error, last_attempt_at, parked_at) \
         VALUES ($1, $2, $3, 'shop.order.v1.OrderCancelled', '/shop/order-service', '\\x'::bytea, 8, 'Broker: Unknown topic or partition', now(), now()) \
         RETURNING id",
    )
    .bind(uuid::Uuid::now_v7())
    .bind(topic)
    .bind(key)
    .fetch_one(order)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shopctl_diagnoses_and_re_drives_a_dead_letter_and_runs_every_command() {
    shop_telemetry::init_for_tests();
    let mut suite = ProcessSuite::start(TestKafka::start(), Vec::new())
        .await
        .unwrap();
    let shop: Shop = suite.open_shop(&ShopSpec::default()).await.unwrap();
    let victim = "victim-shopctl";
    suite.account(victim, 10_000).await.unwrap();
    harness::refuse_victims_debits(&suite.dbs.payment).await;

    // Help on every level.
    for args in [
        vec!["--help"],
        vec!["dlq", "--help"],
        vec!["dlq", "replay", "--help"],
        vec!["outbox", "retry", "--help"],
        vec!["order", "--help"],
        vec!["lag", "--help"],
    ] {
        let help = ok(&suite, &args);
        assert!(help.contains("Usage: shopctl"), "{args:?}: {help}");
    }

    // The victim's order: its PaymentRequested is dead-lettered by payment.
    let order_id = harness::place(
        &mut suite.clients.order,
        &order_pb::PlaceOrderRequest {
            idempotency_key: format!("{victim}-order"),
            customer_id: victim.into(),
            lines: vec![order_pb::LineRequest {
                sku: shop.plentiful[0].clone(),
                quantity: 1,
            }],
        },
    )
    .await;
    // A poison record every consumer of the order topic dead-letters.
    let poison = uuid::Uuid::now_v7().to_string();
    suite
        .kafka
        .produce(
            &suite.config.order_events_topic,
            Some("poison-shopctl"),
            &[0xff; 12],
            &ce_headers(
                &poison,
                &order_pb::OrderCancelled::full_name(),
                "poison-shopctl",
            ),
        )
        .await
        .unwrap();

    let payment_group = suite.config.group(Service::Payment);
    let inventory_group = suite.config.group(Service::Inventory);
    let notification_group = suite.config.group(Service::Notification);
    let dead_letters = shop_testkit::eventually("the dead letters", SETTLE, || {
        let found = listed(&suite, &[]);
        async move { (found.len() >= 4).then_some(found) }
    })
    .await;
    for consumer in [&inventory_group, &payment_group, &notification_group] {
        assert!(
            dead_letters
                .iter()
                .any(|(c, id, _)| c == consumer && *id == poison),
            "{consumer} dead-lettered the poison record: {dead_letters:?}"
        );
    }
    let victims: Vec<_> = listed(&suite, &["--order-id", &order_id]);
    assert_eq!(
        victims.len(),
        1,
        "one dead letter about the order: {victims:?}"
    );
    let (consumer, payment_requested, _) = victims[0].clone();
    assert_eq!(consumer, payment_group);
    let table = ok(&suite, &["dlq", "list", "--order-id", &order_id]);
    show(&format!("shopctl dlq list --order-id {order_id}"), &table);
    assert!(table.contains("shop.order.v1.PaymentRequested") && table.contains("refused"));
    // Filters narrow: by type, by consumer, by time.
    assert_eq!(
        listed(&suite, &["--event-type", "shop.order.v1.OrderCancelled"]).len(),
        3
    );
    assert_eq!(listed(&suite, &["--consumer", &payment_group]).len(), 2);
    assert!(listed(&suite, &["--until", "1h"]).is_empty());
    assert_eq!(
        listed(&suite, &["--since", "1h", "--service", "payment"]).len(),
        2
    );

    // show: the error, the source position, the headers and the payload decoded.
    let shown = ok(&suite, &["dlq", "show", &payment_requested]);
    show(&format!("shopctl dlq show {payment_requested}"), &shown);
    for expected in [
        "type:         shop.order.v1.PaymentRequested",
        &format!("read from:    {}", suite.config.order_events_topic),
        "debits of victim-shopctl refused",
        "ce_id: ",
        "traceparent: ",
        &format!("\"order_id\": \"{order_id}\""),
        &format!("\"customer_id\": \"{victim}\""),
    ] {
        assert!(
            shown.contains(expected),
            "show lacks {expected:?}:\n{shown}"
        );
    }
    let shown = json(&suite, &["dlq", "show", &poison]);
    let shown = shown["dead_letters"].as_array().unwrap();
    assert_eq!(shown.len(), 3, "the poison at three consumers");
    assert!(shown[0]["payload"]["undecodable"].is_string(), "{shown:?}");

    // The stuck order explained.
    let explained = ok(&suite, &["order", &order_id]);
    show(&format!("shopctl order {order_id}"), &explained);
    assert!(explained.contains(": PENDING"), "{explained}");
    assert!(
        explained.contains("STUCK") && explained.contains(&payment_group),
        "{explained}"
    );
    assert!(explained.contains("reservation reserved"), "{explained}");
    let explained = json(&suite, &["order", &order_id]);
    assert_eq!(explained["status"], "PENDING");
    assert_eq!(explained["dead_letters"].as_array().unwrap().len(), 1);
    assert!(
        explained["trace_id"]
            .as_str()
            .is_some_and(|t| t.len() == 32),
        "{explained}"
    );

    // A dry run changes nothing.
    let before = balance(&suite.dbs.payment, victim).await;
    let dry = ok(
        &suite,
        &["dlq", "replay", "--order-id", &order_id, "--dry-run"],
    );
    show(
        &format!("shopctl dlq replay --order-id {order_id} --dry-run"),
        &dry,
    );
    assert!(
        dry.contains("would be republished through the order outbox"),
        "{dry}"
    );
    assert!(
        json(&suite, &["audit"])["audit"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    // Refused without a selection.
    let refused = shopctl(&suite, &["dlq", "replay"]);
    assert!(!refused.status.success());

    // The fix, then the replay: applied once.
    harness::fix_the_cause(&suite.dbs.payment).await;
    let replayed = ok(&suite, &["dlq", "replay", "--order-id", &order_id]);
    show(
        &format!("shopctl dlq replay --order-id {order_id}   # after the fix"),
        &replayed,
    );
    assert!(
        replayed.contains("republished through the order outbox"),
        "{replayed}"
    );
    shop_testkit::eventually("the replayed order confirmed", SETTLE, || {
        let (order, id) = (suite.clients.order.clone(), order_id.clone());
        async move {
            let mut order = order;
            let status = order
                .get_order(order_pb::GetOrderRequest { order_id: id })
                .await
                .ok()?
                .into_inner()
                .order?
                .status;
            (status == order_pb::OrderStatus::Confirmed as i32).then_some(())
        }
    })
    .await;
    assert!(
        listed(&suite, &["--order-id", &order_id]).is_empty(),
        "the dead letter is gone once applied"
    );
    let explained = ok(&suite, &["order", &order_id]);
    show(
        &format!("shopctl order {order_id}   # after the replay"),
        &explained,
    );
    assert!(
        explained.contains(": CONFIRMED") && explained.contains("payment CAPTURED"),
        "{explained}"
    );

    // Once: replaying again selects nothing, and the record published twice more by hand (a
    // duplicate of the replay) changes nothing.
    let again = ok(&suite, &["dlq", "replay", "--order-id", &order_id]);
    assert!(again.contains("No dead letters selected"), "{again}");
    assert_eq!(balance(&suite.dbs.payment, victim).await, before - PRICE);

    // The poison, replayed for inventory only, fails again and is counted there.
    let guard = [
        "dlq",
        "replay",
        "--consumer",
        &inventory_group,
        "--event-id",
        &poison,
        "--max-replays",
        "1",
    ];
    let first = ok(&suite, &guard);
    show(
        "shopctl dlq replay --consumer INVENTORY --event-id POISON --max-replays 1",
        &first,
    );
    shop_testkit::eventually("the poison's replay dead-lettered again", SETTLE, || {
        let found = listed(&suite, &["--event-id", &poison]);
        let inventory_group = inventory_group.clone();
        async move {
            found
                .iter()
                .any(|(c, _, replays)| *c == inventory_group && *replays == 1)
                .then_some(())
        }
    })
    .await;
    for (consumer, _, replays) in listed(&suite, &["--event-id", &poison]) {
        if consumer != inventory_group {
            assert_eq!(
                replays, 0,
                "the replay was for inventory only, not {consumer}"
            );
        }
    }
    // Its limit reached, it is held back (exit status 3), unless forced (dry run here).
    let held = shopctl(&suite, &guard);
    let held_out = String::from_utf8_lossy(&held.stdout);
    show(
        "shopctl dlq replay ... --max-replays 1   # again",
        &held_out,
    );
    assert_eq!(held.status.code(), Some(3), "{held_out}");
    assert!(
        held_out.contains("held back: replayed 1 times"),
        "{held_out}"
    );
    let mut forced = guard.to_vec();
    forced.extend(["--force", "--dry-run"]);
    assert!(ok(&suite, &forced).contains("would be republished"));

    // Purge: a dry run, then for real.
    let dry = json(
        &suite,
        &["dlq", "purge", "--event-id", &poison, "--dry-run"],
    );
    assert_eq!(dry["purged"].as_array().unwrap().len(), 3);
    assert_eq!(listed(&suite, &["--event-id", &poison]).len(), 3);
    let purged = ok(&suite, &["dlq", "purge", "--event-id", &poison]);
    show(&format!("shopctl dlq purge --event-id {poison}"), &purged);
    assert!(purged.contains("3 dead letter(s) purged"), "{purged}");
    assert!(listed(&suite, &[]).is_empty());

    // Parked outbox rows: one retried (published where the test reads), one dropped.
    let parked_topic = TestKafka::unique_topic("parked");
    suite.kafka.create_topic(&parked_topic, 1).await;
    let retried = park(&suite.dbs.order, &parked_topic, "parked-retried").await;
    let dropped = park(&suite.dbs.order, &parked_topic, "parked-dropped").await;
    let status = ok(&suite, &["outbox", "status"]);
    show("shopctl outbox status", &status);
    assert!(status.contains("Unknown topic or partition"), "{status}");
    let status = json(&suite, &["outbox", "status", "--service", "order"]);
    let parked = status["outboxes"][0]["parked"].as_array().unwrap();
    assert_eq!(parked.len(), 2, "{status}");
    assert!(
        ok(
            &suite,
            &[
                "outbox",
                "drop",
                "--service",
                "order",
                "--id",
                &dropped.to_string(),
                "--dry-run"
            ]
        )
        .contains("would be dropped")
    );
    assert_eq!(
        json(&suite, &["outbox", "status", "--service", "order"])["outboxes"][0]["parked"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    ok(
        &suite,
        &[
            "outbox",
            "drop",
            "--service",
            "order",
            "--id",
            &dropped.to_string(),
        ],
    );
    let retry = ok(
        &suite,
        &[
            "outbox",
            "retry",
            "--service",
            "order",
            "--id",
            &retried.to_string(),
        ],
    );
    assert!(
        retry.contains("1 parked row(s) handed back to the relay"),
        "{retry}"
    );
    let published = suite
        .kafka
        .read_all(
            &parked_topic,
            1,
            Duration::from_secs(30),
            Duration::from_secs(2),
        )
        .await;
    assert_eq!(
        published
            .iter()
            .map(|r| r.key.clone().unwrap_or_default())
            .collect::<Vec<_>>(),
        ["parked-retried"],
        "the retried row published, the dropped one never"
    );

    // Every change is in the audit, with who did it.
    let audit = json(&suite, &["audit"]);
    let actions: Vec<(String, String)> = audit["audit"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["action"].as_str().unwrap().to_owned(),
                a["actor"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for action in [
        "dlq.replay",
        "outbox.republish",
        "dlq.purge",
        "outbox.retry",
        "outbox.drop",
    ] {
        assert!(
            actions
                .iter()
                .any(|(a, who)| a == action && who == "test-operator"),
            "{action} by test-operator in the audit: {actions:?}"
        );
    }
    show("shopctl audit", &ok(&suite, &["audit"]));

    // Everything settles (the audit of the whole suite is clean: the victim paid once, nothing
    // else moved), and the broker shows no lag.
    suite.settle(SETTLE).await.unwrap();
    let suffix = suite.config.group_suffix.clone();
    let lag = shop_testkit::eventually("no lag", SETTLE, || {
        let lag = json(&suite, &["lag"]);
        let suffix = suffix.clone();
        async move {
            let groups = lag["groups"].as_array()?.clone();
            let ours: Vec<&Value> = groups
                .iter()
                .filter(|g| g["group"].as_str().is_some_and(|n| n.ends_with(&suffix)))
                .collect();
            (ours.len() == 4 && ours.iter().all(|g| g["lag"] == 0)).then_some(lag)
        }
    })
    .await;
    assert!(
        lag["groups"]
            .as_array()
            .unwrap()
            .iter()
            .all(|g| g["partitions"].is_array())
    );
    show(
        "shopctl lag --group PAYMENT",
        &ok(&suite, &["lag", "--group", &payment_group]),
    );
    assert_eq!(
        order_status(&mut suite, &order_id).await,
        order_pb::OrderStatus::Confirmed as i32
    );
    assert_eq!(balance(&suite.dbs.payment, victim).await, before - PRICE);
}
