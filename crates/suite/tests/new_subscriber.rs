//! Tried as a new subscriber would, in any language: the suite runs as four processes, the demo
//! walks orders through every saga path, then a plain Kafka client (rdkafka, nothing of this
//! project's SDK) reads every event topic and decodes every record with nothing but the
//! published `.proto` files (compiled here, at run time) and the event catalog
//! (`docs/asyncapi.yaml`): the headers it documents, the key, the protobuf message each
//! `ce_type` names. A record the catalog cannot explain fails the test, and so does an event
//! type the catalog lists that the run never produced. A poisoned record shows what a dead
//! letter looks like.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::time::Duration;

use common::{Catalog, root};
use prost_reflect::{DescriptorPool, DynamicMessage, ReflectMessage, Value as Field};
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_norway::Value;
use shop_suite::processes::{Service, SuiteConfig, SuiteProcesses, binary_path};
use shop_testkit::{TestDb, TestKafka};

/// A record as a plain client sees it.
#[derive(Clone, Debug)]
struct Seen {
    topic: String,
    key: Option<String>,
    headers: BTreeMap<String, String>,
    payload: Vec<u8>,
}

/// The `.proto` files under `proto/`, compiled now: what a subscriber in another language
/// would feed its own protobuf compiler.
fn published_protos() -> DescriptorPool {
    let include = root().join("proto");
    let mut files = Vec::new();
    for domain in std::fs::read_dir(include.join("shop")).unwrap() {
        let events = domain.unwrap().path().join("v1/events.proto");
        if events.exists() {
            files.push(events);
        }
    }
    assert!(files.len() >= 3, "{files:?}");
    protox::Compiler::new([&include])
        .unwrap()
        .open_files(files)
        .unwrap()
        .descriptor_pool()
}

/// Reads `topics` from the start until every name in `until` was seen and nothing came for 3 s.
async fn read_topics(
    bootstrap: &str,
    topics: &[&str],
    until: impl Fn(&[Seen]) -> bool,
) -> Vec<Seen> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set(
            "group.id",
            format!("new-user-{}", uuid::Uuid::new_v4().simple()),
        )
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(topics).unwrap();
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let quiet = tokio::time::Instant::now() + Duration::from_secs(3);
        let limit = if until(&seen) {
            quiet.min(deadline)
        } else {
            deadline
        };
        match tokio::time::timeout_at(limit, consumer.recv()).await {
            Err(_) => break,
            Ok(Err(error)) => panic!("kafka: {error}"),
            Ok(Ok(message)) => seen.push(Seen {
                topic: message.topic().to_owned(),
                key: message
                    .key()
                    .map(|k| String::from_utf8(k.to_vec()).unwrap()),
                headers: message
                    .headers()
                    .map(|hs| {
                        hs.iter()
                            .map(|h| {
                                let value = h.value.unwrap_or_default().to_vec();
                                (h.key.to_owned(), String::from_utf8(value).unwrap())
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
                payload: message.payload().unwrap_or_default().to_vec(),
            }),
        }
    }
    seen
}

/// What is wrong with `headers` according to a headers schema of the catalog.
fn header_problems(schema: &Value, headers: &BTreeMap<String, String>) -> Vec<String> {
    let mut problems = Vec::new();
    for name in schema["required"].as_sequence().unwrap() {
        let name = name.as_str().unwrap();
        if !headers.contains_key(name) {
            problems.push(format!("header {name} is missing"));
        }
    }
    for (name, rule) in schema["properties"].as_mapping().unwrap() {
        let Some(value) = headers.get(name.as_str().unwrap()) else {
            continue;
        };
        let name = name.as_str().unwrap();
        if let Some(want) = rule.get("const").and_then(Value::as_str)
            && value != want
        {
            problems.push(format!("header {name} is {value:?}, not {want:?}"));
        }
        if let Some(allowed) = rule.get("enum").and_then(Value::as_sequence)
            && !allowed.iter().any(|a| a.as_str() == Some(value))
        {
            problems.push(format!(
                "header {name} is {value:?}, not one of {allowed:?}"
            ));
        }
        if let Some(pattern) = rule.get("pattern").and_then(Value::as_str)
            && !regex::Regex::new(pattern).unwrap().is_match(value)
        {
            problems.push(format!("header {name} {value:?} does not match {pattern}"));
        }
        match rule.get("format").and_then(Value::as_str) {
            Some("uuid") if uuid::Uuid::parse_str(value).is_err() => {
                problems.push(format!("header {name} {value:?} is no UUID"));
            }
            Some("date-time") if chrono::DateTime::parse_from_rfc3339(value).is_err() => {
                problems.push(format!("header {name} {value:?} is no RFC 3339 time"));
            }
            _ => {}
        }
    }
    problems
}

/// Decodes `record` the way the catalog says, or says why it cannot.
fn decode(
    catalog: &Catalog,
    pool: &DescriptorPool,
    address: &str,
    record: &Seen,
) -> Result<(String, DynamicMessage), String> {
    let channel = catalog
        .channel(address)
        .ok_or(format!("no channel {address} in the catalog"))?;
    let ce_type = record.headers.get("ce_type").ok_or("no ce_type header")?;
    let message = channel
        .messages
        .iter()
        .find(|m| &m.name == ce_type)
        .ok_or(format!("the catalog has no message {ce_type} on {address}"))?;
    let problems = header_problems(&message.headers, &record.headers);
    if !problems.is_empty() {
        return Err(problems.join("; "));
    }
    let name = message
        .protobuf_message
        .as_deref()
        .ok_or("no x-protobuf-message")?;
    let descriptor = pool
        .get_message_by_name(name)
        .ok_or(format!("{name} is in no published .proto file"))?;
    let decoded = DynamicMessage::decode(descriptor, record.payload.as_slice())
        .map_err(|e| format!("{ce_type} does not decode: {e}"))?;
    if decoded.unknown_fields().next().is_some() {
        return Err(format!(
            "{ce_type} carries fields its .proto does not declare"
        ));
    }
    let order_id = match decoded.get_field_by_name("order_id").as_deref() {
        Some(Field::String(id)) => id.clone(),
        other => return Err(format!("{ce_type} has no order_id: {other:?}")),
    };
    if record.key.as_deref() != Some(order_id.as_str())
        || record.headers.get("ce_partitionkey") != Some(&order_id)
    {
        return Err(format!(
            "key {:?} and ce_partitionkey {:?} are not the order id {order_id}",
            record.key,
            record.headers.get("ce_partitionkey")
        ));
    }
    Ok((ce_type.clone(), decoded))
}

#[tokio::test]
async fn a_plain_kafka_client_decodes_every_event_with_the_protos_and_the_catalog() {
    shop_telemetry::init_for_tests();
    let catalog = Catalog::load();
    let pool = published_protos();
    let kafka = TestKafka::start();
    let bootstrap = kafka.bootstrap_servers().to_owned();
    // Topic names of this run, for the catalog's addresses.
    let run: BTreeMap<String, &str> = [
        ("order", "order.events.v1"),
        ("inventory", "inventory.events.v1"),
        ("payment", "payment.events.v1"),
    ]
    .into_iter()
    .map(|(prefix, address)| (TestKafka::unique_topic(prefix), address))
    .collect();
    let topic_of = |address: &str| run.iter().find(|(_, a)| **a == address).unwrap().0.clone();
    for topic in run.keys() {
        kafka.create_topic(topic, 3).await;
    }
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let order_dlq = format!("order-service-{suffix}.dlq");
    kafka.create_topic(&order_dlq, 1).await;
    let mut databases = HashMap::new();
    let mut dbs = Vec::new();
    for service in Service::ALL {
        let db = TestDb::create().await;
        databases.insert(service, db.url());
        dbs.push(db);
    }
    let (suite, _clients) = SuiteProcesses::start(SuiteConfig {
        kafka_bootstrap_servers: bootstrap.clone(),
        databases,
        order_events_topic: topic_of("order.events.v1"),
        inventory_events_topic: topic_of("inventory.events.v1"),
        payment_events_topic: topic_of("payment.events.v1"),
        group_suffix: suffix,
        otlp_endpoint: None,
        env: Vec::new(),
        local: None,
    })
    .await
    .unwrap();

    // Every saga path, as `deploy/run.sh` shows them.
    let endpoints = suite.endpoints();
    let demo = tokio::task::spawn_blocking(move || {
        std::process::Command::new(binary_path("shop-demo"))
            .env("ORDER_URL", &endpoints.order)
            .env("INVENTORY_URL", &endpoints.inventory)
            .env("PAYMENT_URL", &endpoints.payment)
            .env("NOTIFICATION_URL", &endpoints.notification)
            // The demo mints its operator's and customers' tokens with the test issuer's key.
            .env(
                "SHOP_SIGNING_KEY",
                shop_testkit::test_auth().signing_key_file(),
            )
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let demo_out = String::from_utf8_lossy(&demo.stdout);
    assert!(
        demo.status.success() && demo_out.contains("Every order reached a terminal state"),
        "{demo_out}\n{}",
        String::from_utf8_lossy(&demo.stderr)
    );

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .unwrap();

    // Late replies: payment and inventory say again, as new events, what they said about the
    // order the customer cancelled after its confirmation (a replay of their topics). The order
    // service has cancelled it, so it asks for the refund and the release (both no-ops now):
    // the two commands a run of the saga paths alone never needs.
    let cancelled_after_confirmation = demo_out
        .lines()
        .skip_while(|l| !l.contains("then cancelled by the customer"))
        .nth(1)
        .and_then(|l| l.split_whitespace().nth(1))
        .expect("the demo prints the order cancelled after confirmation")
        .to_owned();
    for (address, ce_type) in [
        ("payment.events.v1", "shop.payment.v1.PaymentCaptured"),
        ("inventory.events.v1", "shop.inventory.v1.StockReserved"),
    ] {
        let is_the_reply = |r: &Seen| {
            r.key.as_deref() == Some(cancelled_after_confirmation.as_str())
                && r.headers.get("ce_type").map(String::as_str) == Some(ce_type)
        };
        let reply = read_topics(&bootstrap, &[topic_of(address).as_str()], |seen| {
            seen.iter().any(is_the_reply)
        })
        .await
        .into_iter()
        .find(is_the_reply)
        .unwrap();
        let again = uuid::Uuid::now_v7().to_string();
        let mut headers = OwnedHeaders::new();
        for (key, value) in &reply.headers {
            let value = if key == "ce_id" { &again } else { value };
            headers = headers.insert(Header {
                key,
                value: Some(value.as_str()),
            });
        }
        producer
            .send(
                FutureRecord::to(&topic_of(address))
                    .key(&cancelled_after_confirmation)
                    .payload(&reply.payload)
                    .headers(headers),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }

    // A buggy producer's record: a known type whose bytes are not that message. The order
    // service's consumer gives up on it at once; it lands in its dead-letter topic.
    let poison_id = uuid::Uuid::now_v7().to_string();
    let mut headers = OwnedHeaders::new();
    for (key, value) in [
        ("ce_id", poison_id.as_str()),
        ("ce_type", "shop.payment.v1.PaymentCaptured"),
        ("ce_source", "/shop/payment-service"),
        ("ce_specversion", "1.0"),
    ] {
        headers = headers.insert(Header {
            key,
            value: Some(value),
        });
    }
    producer
        .send(
            FutureRecord::to(&topic_of("payment.events.v1"))
                .key("no-such-order")
                .payload(&[0xff_u8, 0xff, 0xff][..])
                .headers(headers),
            Duration::from_secs(10),
        )
        .await
        .unwrap();

    // The new subscriber: every event topic, every record.
    let wanted: BTreeSet<String> = run
        .values()
        .flat_map(|address| catalog.channel(address).unwrap().messages)
        .map(|m| m.name)
        .collect();
    let topics: Vec<&str> = run.keys().map(String::as_str).collect();
    let records = read_topics(&bootstrap, &topics, |seen| {
        let types: BTreeSet<String> = seen
            .iter()
            .filter_map(|r| r.headers.get("ce_type").cloned())
            .collect();
        wanted.is_subset(&types)
    })
    .await;

    let mut problems = Vec::new();
    let mut types: BTreeMap<String, usize> = BTreeMap::new();
    let mut per_order: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut ids = BTreeSet::new();
    for record in &records {
        if record.headers.get("ce_id") == Some(&poison_id) {
            continue;
        }
        match decode(&catalog, &pool, run[&record.topic], record) {
            Ok((ce_type, message)) => {
                *types.entry(ce_type.clone()).or_default() += 1;
                ids.insert(record.headers["ce_id"].clone());
                if run[&record.topic] == "order.events.v1" {
                    per_order
                        .entry(record.key.clone().unwrap())
                        .or_default()
                        .push(ce_type);
                }
                // A new subscriber reads real values: an order's lines carry priced skus.
                if message.descriptor().name() == "OrderConfirmed" {
                    let lines = message.get_field_by_name("lines").unwrap();
                    assert!(!lines.as_list().unwrap().is_empty(), "{message:?}");
                }
            }
            Err(problem) => problems.push(format!(
                "{} {:?}: {problem}",
                run[&record.topic],
                record.headers.get("ce_type")
            )),
        }
    }
    assert!(
        problems.is_empty(),
        "records the catalog does not explain:\n  {}",
        problems.join("\n  ")
    );
    let produced: BTreeSet<String> = types.keys().cloned().collect();
    assert_eq!(
        produced, wanted,
        "every event type of the catalog, and no other, in a run of every saga path ({types:?})"
    );
    assert_eq!(
        ids.len(),
        records.len() - 1,
        "every ce_id is unique (no duplicates here)"
    );
    // Per-key order: each order's events start with OrderPlaced and end with its outcome (the
    // compensation commands for late replies aside).
    assert_eq!(per_order.len(), 4, "the demo's four orders: {per_order:?}");
    for (order, events) in &per_order {
        assert_eq!(
            events[0], "shop.order.v1.OrderPlaced",
            "{order}: {events:?}"
        );
        let last = events
            .iter()
            .rfind(|e| !e.ends_with("RefundRequested") && !e.ends_with("StockReleaseRequested"))
            .unwrap();
        assert!(
            last == "shop.order.v1.OrderConfirmed" || last == "shop.order.v1.OrderCancelled",
            "{order}: {events:?}"
        );
    }

    // The dead letter: the original record, plus what the catalog's DeadLetterHeaders promise.
    let dead = read_topics(&bootstrap, &[order_dlq.as_str()], |seen| !seen.is_empty()).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    let letter = catalog.channel("order-service.dlq").unwrap().messages[0].clone();
    assert_eq!(letter.name, "DeadLetter");
    assert_eq!(
        header_problems(&letter.headers, &dead[0].headers),
        Vec::<String>::new()
    );
    assert_eq!(dead[0].headers["ce_id"], poison_id);
    assert_eq!(dead[0].headers["dlq_error_kind"], "permanent");
    assert_eq!(
        dead[0].headers["dlq_source_topic"],
        topic_of("payment.events.v1")
    );
    assert_eq!(dead[0].payload, [0xff, 0xff, 0xff]);
    drop(suite);
    drop(dbs);
}

#[test]
fn the_header_check_rejects_what_the_catalog_rules_out() {
    let catalog = Catalog::load();
    let message = &catalog.channel("order.events.v1").unwrap().messages[0];
    let good: BTreeMap<String, String> = [
        ("ce_id", "01890a5d-ac96-774b-bcce-b302099a8057"),
        ("ce_type", message.name.as_str()),
        ("ce_source", "/shop/order-service"),
        ("ce_specversion", "1.0"),
        ("ce_time", "2026-01-01T00:00:00.000Z"),
        ("ce_partitionkey", "o-1"),
        ("content-type", "application/protobuf"),
        (
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(
        header_problems(&message.headers, &good),
        Vec::<String>::new()
    );
    for (name, bad) in [
        ("ce_id", "order-1"),
        ("ce_type", "shop.order.v1.Other"),
        ("ce_source", "/shop/payment-service"),
        ("ce_specversion", "0.3"),
        ("ce_time", "yesterday"),
        ("content-type", "application/json"),
        ("traceparent", "00-xyz"),
    ] {
        let mut headers = good.clone();
        headers.insert(name.to_owned(), bad.to_owned());
        let problems = header_problems(&message.headers, &headers);
        assert!(
            problems.iter().any(|p| p.contains(name)),
            "{name}={bad}: {problems:?}"
        );
    }
    let mut missing = good.clone();
    missing.remove("traceparent");
    assert_eq!(
        header_problems(&message.headers, &missing),
        ["header traceparent is missing"]
    );
}

#[test]
fn decoding_rejects_a_record_the_catalog_does_not_explain() {
    let catalog = Catalog::load();
    let pool = published_protos();
    let confirmed = shop_proto::order::v1::OrderConfirmed {
        order_id: "o-1".into(),
        ..Default::default()
    };
    let record = |ce_type: &str, key: &str, payload: Vec<u8>| Seen {
        topic: "t".into(),
        key: Some(key.into()),
        headers: [
            ("ce_id", "01890a5d-ac96-774b-bcce-b302099a8057"),
            ("ce_type", ce_type),
            ("ce_source", "/shop/order-service"),
            ("ce_specversion", "1.0"),
            ("ce_time", "2026-01-01T00:00:00Z"),
            ("ce_partitionkey", key),
            ("content-type", "application/protobuf"),
            (
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
        payload,
    };
    let good = record(
        "shop.order.v1.OrderConfirmed",
        "o-1",
        prost::Message::encode_to_vec(&confirmed),
    );
    assert!(decode(&catalog, &pool, "order.events.v1", &good).is_ok());
    let wrong_key = record(
        "shop.order.v1.OrderConfirmed",
        "o-2",
        prost::Message::encode_to_vec(&confirmed),
    );
    assert!(
        decode(&catalog, &pool, "order.events.v1", &wrong_key)
            .unwrap_err()
            .contains("not the order id")
    );
    let other_topic = decode(&catalog, &pool, "payment.events.v1", &good).unwrap_err();
    assert!(
        other_topic.contains("no message shop.order.v1.OrderConfirmed on payment.events.v1"),
        "{other_topic}"
    );
    let garbage = record("shop.order.v1.OrderConfirmed", "o-1", vec![0xff, 0xff]);
    assert!(
        decode(&catalog, &pool, "order.events.v1", &garbage)
            .unwrap_err()
            .contains("does not decode")
    );
    let mut extra = prost::Message::encode_to_vec(&confirmed);
    extra.extend([0xa0, 0x06, 0x01]); // field 100, varint 1: not in the .proto
    let extra = record("shop.order.v1.OrderConfirmed", "o-1", extra);
    assert!(
        decode(&catalog, &pool, "order.events.v1", &extra)
            .unwrap_err()
            .contains("does not declare")
    );
    assert!(Path::new(&root().join("proto/shop/order/v1/events.proto")).exists());
}
