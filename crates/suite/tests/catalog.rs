//! The event catalog (`docs/asyncapi.yaml`) against the code, in both directions: a topic, an
//! event type, a field, an enum value or a consumer group that the code has and the catalog
//! lacks fails this test, and so does one that the catalog lists and the code does not have.
//!
//! What the code has is read from the code, never from a second list:
//! - the event topics: `shop_proto::topics::ALL`; topic `<domain>.events.v<N>` carries the
//!   messages of `shop/<domain>/v<N>/events.proto`, and every such file has its topic;
//! - the event types of a topic: the top-level messages of its `events.proto` in the compiled
//!   descriptor set (`shop_proto::FILE_DESCRIPTOR_SET`) that no other message there embeds (those
//!   are parts, such as `OrderLine`); their fields and enums, from the same descriptors;
//! - the consumer groups and their dead-letter topics: each service's (and the example
//!   subscriber's) settings as their `main` reads them, and the SDK's own naming of the
//!   dead-letter topic (`ConsumerConfig::new(..).dead_letter_topic`);
//! - partitions and retention: the KafkaTopics of `k8s/components/kafka-strimzi/topics.yaml`.
//!
//! Each check collects every finding; the tests at the end prove each one reports a broken
//! catalog or a code change the catalog missed.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{Catalog, root};
use prost_reflect::{DescriptorPool, FileDescriptor, Kind};
use serde_norway::Value;
use shop_eventing::ConsumerConfig;
use shop_runtime::config::recording;

/// An event topic of the code.
#[derive(Clone, Debug)]
struct EventTopic {
    /// The `.proto` file of its events.
    file: String,
    /// Full protobuf names = `ce_type`s.
    events: BTreeSet<String>,
}

/// What the code produces and consumes.
#[derive(Clone, Debug)]
struct Code {
    pool: DescriptorPool,
    event_topics: BTreeMap<String, EventTopic>,
    /// Consumer group -> its dead-letter topic.
    groups: BTreeMap<String, String>,
    /// Problems found while reading the code itself.
    problems: Vec<String>,
}

/// The file of a topic's events: `order.events.v1` -> `shop/order/v1/events.proto`.
fn events_file(topic: &str) -> Option<String> {
    let (domain, version) = topic.split_once(".events.")?;
    Some(format!("shop/{domain}/{version}/events.proto"))
}

/// The event types of an `events.proto`: its top-level messages no other message embeds.
fn event_types(file: &FileDescriptor) -> BTreeSet<String> {
    let embedded: BTreeSet<String> = file
        .messages()
        .flat_map(|m| m.fields().collect::<Vec<_>>())
        .filter_map(|f| match f.kind() {
            Kind::Message(m) => Some(m.full_name().to_owned()),
            _ => None,
        })
        .collect();
    file.messages()
        .map(|m| m.full_name().to_owned())
        .filter(|name| !embedded.contains(name))
        .collect()
}

impl Code {
    fn read() -> Self {
        let pool = DescriptorPool::decode(shop_proto::FILE_DESCRIPTOR_SET).expect("descriptor set");
        let mut problems = Vec::new();
        let mut event_topics = BTreeMap::new();
        for topic in shop_proto::topics::ALL {
            let file = events_file(topic).and_then(|f| pool.get_file_by_name(&f));
            match file {
                Some(file) => {
                    event_topics.insert(
                        topic.to_owned(),
                        EventTopic {
                            file: file.name().to_owned(),
                            events: event_types(&file),
                        },
                    );
                }
                None => problems.push(format!(
                    "topic {topic} (shop_proto::topics::ALL) has no events file {:?} in the descriptor set",
                    events_file(topic)
                )),
            }
        }
        for file in pool.files() {
            if file.name().ends_with("/events.proto")
                && !event_topics.values().any(|t| t.file == file.name())
            {
                problems.push(format!(
                    "{} defines events but no topic of shop_proto::topics::ALL carries them",
                    file.name()
                ));
            }
        }
        Self {
            pool,
            event_topics,
            groups: consumer_groups(),
            problems,
        }
    }
}

/// Every consumer group, read from the settings each binary reads at start, with the
/// dead-letter topic the SDK gives it.
fn consumer_groups() -> BTreeMap<String, String> {
    let dlq = |name: &str| ConsumerConfig::new(name, [""; 0]).dead_letter_topic;
    fn group<S: shop_runtime::config::Settings>() -> String {
        let (settings, _) = recording(S::from_env);
        settings
            .expect("a service's settings")
            .service()
            .consumer_group
            .clone()
    }
    let (sales, _) = recording(sales_analytics::config::Settings::from_env);
    let sales = sales.expect("sales-analytics settings");
    let mut groups: BTreeMap<String, String> = [
        group::<order_service::config::Settings>(),
        group::<inventory_service::config::Settings>(),
        group::<payment_service::config::Settings>(),
        group::<notification_service::config::Settings>(),
    ]
    .into_iter()
    .map(|group| {
        let topic = dlq(&group); // the services name their inbox after their group
        (group, topic)
    })
    .collect();
    groups.insert(sales.consumer_group.clone(), dlq(&sales.consumer_name));
    groups
}

/// The name of a field's type as the catalog writes it in `x-protobuf-type`.
fn type_name(kind: &Kind) -> String {
    match kind {
        Kind::Message(m) => m.full_name().to_owned(),
        Kind::Enum(e) => e.full_name().to_owned(),
        scalar => format!("{scalar:?}").to_lowercase(),
    }
}

// --- the checks ----------------------------------------------------------------------------------

/// Every topic of the code is a channel, and every channel a topic of the code.
fn check_topics(code: &Code, catalog: &Catalog) -> Vec<String> {
    let mut problems = code.problems.clone();
    let mut wanted: BTreeMap<String, String> = code
        .event_topics
        .keys()
        .map(|t| {
            (
                t.clone(),
                "an event topic (shop_proto::topics::ALL)".to_owned(),
            )
        })
        .collect();
    for (group, dlq) in &code.groups {
        wanted.insert(
            dlq.clone(),
            format!("the dead-letter topic of consumer group {group}"),
        );
    }
    let channels: BTreeSet<String> = catalog.channels().into_iter().map(|c| c.address).collect();
    for (topic, why) in &wanted {
        if !channels.contains(topic) {
            problems.push(format!(
                "topic {topic} ({why}) has no channel in docs/asyncapi.yaml"
            ));
        }
    }
    for topic in &channels {
        if !wanted.contains_key(topic) {
            problems.push(format!(
                "channel {topic} of docs/asyncapi.yaml is no topic the code produces or consumes"
            ));
        }
    }
    problems
}

/// Every event type of a topic is a message of its channel, and no other; each names its
/// protobuf message and file. Dead-letter channels carry dead letters.
fn check_event_types(code: &Code, catalog: &Catalog) -> Vec<String> {
    let mut problems = Vec::new();
    for channel in catalog.channels() {
        let names: BTreeSet<String> = channel.messages.iter().map(|m| m.name.clone()).collect();
        let Some(topic) = code.event_topics.get(&channel.address) else {
            if code.groups.values().any(|d| *d == channel.address)
                && names != BTreeSet::from(["DeadLetter".to_owned()])
            {
                problems.push(format!(
                    "dead-letter channel {} carries {names:?}, not DeadLetter",
                    channel.address
                ));
            }
            continue;
        };
        for event in topic.events.difference(&names) {
            problems.push(format!(
                "event type {event} ({}) is missing from channel {} of docs/asyncapi.yaml",
                topic.file, channel.address
            ));
        }
        for extra in names.difference(&topic.events) {
            problems.push(format!(
                "channel {} lists {extra}, which is no event type of {}",
                channel.address, topic.file
            ));
        }
        for message in &channel.messages {
            if !topic.events.contains(&message.name) {
                continue;
            }
            if message.protobuf_message.as_deref() != Some(message.name.as_str()) {
                problems.push(format!(
                    "message {}: its payload's x-protobuf-message is {:?}, not its ce_type",
                    message.name, message.protobuf_message
                ));
            }
            let file = format!("proto/{}", topic.file);
            if message.protobuf_file.as_deref() != Some(file.as_str()) {
                problems.push(format!(
                    "message {}: x-protobuf-file is {:?}, not {file}",
                    message.name, message.protobuf_file
                ));
            }
            let ce_type = message
                .headers
                .get("properties")
                .and_then(|p| p.get("ce_type"))
                .and_then(|t| t.get("const"))
                .and_then(Value::as_str);
            if ce_type != Some(message.name.as_str()) {
                problems.push(format!(
                    "message {}: its headers' ce_type const is {ce_type:?}",
                    message.name
                ));
            }
        }
    }
    problems
}

/// Every protobuf message and enum an event uses (transitively) has a schema whose fields
/// (name, number, type, repeated) or values are the descriptor's; no schema describes a type
/// that does not exist.
fn check_schemas(code: &Code, catalog: &Catalog) -> Vec<String> {
    let mut problems = Vec::new();
    let schemas = catalog.schemas();
    let mut todo: Vec<String> = code
        .event_topics
        .values()
        .flat_map(|t| t.events.iter().cloned())
        .collect();
    let mut seen = BTreeSet::new();
    while let Some(name) = todo.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        let schema = schemas.get(&name).map(|s| catalog.schema(s));
        if let Some(message) = code.pool.get_message_by_name(&name) {
            let Some(schema) = schema else {
                problems.push(format!(
                    "message {name} has no schema in components.schemas"
                ));
                continue;
            };
            let properties = schema
                .get("properties")
                .and_then(Value::as_mapping)
                .cloned()
                .unwrap_or_default();
            let mut listed: BTreeSet<String> = properties
                .keys()
                .filter_map(|k| k.as_str().map(str::to_owned))
                .collect();
            for field in message.fields() {
                let kind = field.kind();
                if let Kind::Message(_) | Kind::Enum(_) = kind {
                    todo.push(type_name(&kind));
                }
                let Some(property) = properties.get(field.name()) else {
                    problems.push(format!(
                        "field {name}.{} is missing from its schema",
                        field.name()
                    ));
                    continue;
                };
                listed.remove(field.name());
                let property = catalog.schema(property);
                let number = property
                    .get("x-protobuf-field-number")
                    .and_then(Value::as_u64);
                if number != Some(u64::from(field.number())) {
                    problems.push(format!(
                        "field {name}.{}: x-protobuf-field-number {number:?}, the .proto says {}",
                        field.name(),
                        field.number()
                    ));
                }
                let declared = property.get("x-protobuf-type").and_then(Value::as_str);
                if declared != Some(type_name(&kind).as_str()) {
                    problems.push(format!(
                        "field {name}.{}: x-protobuf-type {declared:?}, the .proto says {}",
                        field.name(),
                        type_name(&kind)
                    ));
                }
                let array = property.get("type").and_then(Value::as_str) == Some("array");
                if array != field.is_list() {
                    problems.push(format!(
                        "field {name}.{}: repeated is {}, the schema's type array is {array}",
                        field.name(),
                        field.is_list()
                    ));
                }
            }
            for extra in listed {
                problems.push(format!(
                    "schema {name} lists {extra}, which is no field of the message"
                ));
            }
        } else if let Some(enumeration) = code.pool.get_enum_by_name(&name) {
            let Some(schema) = schema else {
                problems.push(format!("enum {name} has no schema in components.schemas"));
                continue;
            };
            let want: BTreeMap<String, i64> = enumeration
                .values()
                .map(|v| (v.name().to_owned(), i64::from(v.number())))
                .collect();
            let have: BTreeMap<String, i64> = schema
                .get("x-protobuf-enum-values")
                .and_then(Value::as_mapping)
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, v)| Some((k.as_str()?.to_owned(), v.as_i64()?)))
                        .collect()
                })
                .unwrap_or_default();
            let names: BTreeSet<String> = schema
                .get("enum")
                .and_then(Value::as_sequence)
                .map(|s| {
                    s.iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            if have != want || names != want.keys().cloned().collect() {
                problems.push(format!(
                    "enum {name}: the schema has {have:?} / {names:?}, the .proto {want:?}"
                ));
            }
        }
    }
    for (name, schema) in &schemas {
        for key in ["x-protobuf-message", "x-protobuf-enum"] {
            if let Some(described) = schema.get(key).and_then(Value::as_str) {
                let exists = code.pool.get_message_by_name(described).is_some()
                    || code.pool.get_enum_by_name(described).is_some();
                if !exists || described != name {
                    problems.push(format!("schema {name} describes {described}, which the .proto files do not define under that name"));
                } else if !seen.contains(described) {
                    problems.push(format!("schema {name} describes a type no event uses"));
                }
            }
        }
    }
    problems
}

/// Every consumer group of the code has a `receive` operation, and every such operation's
/// group is one of the code's.
fn check_consumer_groups(code: &Code, catalog: &Catalog) -> Vec<String> {
    let mut problems = Vec::new();
    let listed: BTreeSet<String> = catalog
        .consumer_groups()
        .into_iter()
        .map(|(g, _)| g)
        .collect();
    for group in code.groups.keys() {
        if !listed.contains(group) {
            problems.push(format!(
                "consumer group {group} has no receive operation in docs/asyncapi.yaml"
            ));
        }
    }
    for group in listed.difference(&code.groups.keys().cloned().collect()) {
        problems.push(format!(
            "receive operations name group {group}, which no settings use"
        ));
    }
    problems
}

/// Partitions and retention agree with the KafkaTopic of each topic deployed to Kubernetes.
fn check_topic_settings(catalog: &Catalog) -> Vec<String> {
    let path = root().join("k8s/components/kafka-strimzi/topics.yaml");
    let text = std::fs::read_to_string(&path).expect("topics.yaml");
    let mut deployed = BTreeMap::new();
    for doc in serde_norway::Deserializer::from_str(&text) {
        let topic = <Value as serde::Deserialize>::deserialize(doc).expect("YAML");
        let spec = &topic["spec"];
        if let Some(name) = spec["topicName"].as_str() {
            deployed.insert(
                name.to_owned(),
                (
                    spec["partitions"].as_i64(),
                    spec["config"]["retention.ms"].as_i64(),
                ),
            );
        }
    }
    let mut problems = Vec::new();
    for channel in catalog.channels() {
        match deployed.get(&channel.address) {
            Some(&(partitions, retention))
                if (channel.partitions, channel.retention_ms) != (partitions, retention) =>
            {
                problems.push(format!(
                    "channel {}: partitions {:?} and retention.ms {:?}, its KafkaTopic has {partitions:?} and {retention:?}",
                    channel.address, channel.partitions, channel.retention_ms
                ));
            }
            Some(_) => {}
            None if channel.partitions.is_none() || channel.retention_ms.is_none() => {
                problems.push(format!(
                    "channel {} has no partitions or retention.ms",
                    channel.address
                ));
            }
            None => {}
        }
    }
    problems
}

fn assert_none(what: &str, problems: &[String]) {
    assert!(problems.is_empty(), "{what}:\n  {}", problems.join("\n  "));
}

#[test]
fn every_topic_of_the_code_is_in_the_catalog_and_nothing_else() {
    assert_none("topics", &check_topics(&Code::read(), &Catalog::load()));
}

#[test]
fn every_event_type_of_each_topic_is_in_the_catalog_and_nothing_else() {
    assert_none(
        "event types",
        &check_event_types(&Code::read(), &Catalog::load()),
    );
}

#[test]
fn every_payload_schema_matches_its_protobuf_message() {
    assert_none("schemas", &check_schemas(&Code::read(), &Catalog::load()));
}

#[test]
fn every_consumer_group_is_in_the_catalog_and_nothing_else() {
    assert_none(
        "consumer groups",
        &check_consumer_groups(&Code::read(), &Catalog::load()),
    );
}

#[test]
fn partitions_and_retention_match_the_kafka_topics() {
    assert_none("topic settings", &check_topic_settings(&Catalog::load()));
}

// --- each check reports what it must -------------------------------------------------------------

fn edited(edit: impl FnOnce(&mut Value)) -> Catalog {
    let mut catalog = Catalog::load();
    edit(&mut catalog.doc);
    catalog
}

fn reports(problems: &[String], needle: &str) {
    assert!(
        problems.iter().any(|p| p.contains(needle)),
        "expected a problem mentioning {needle:?}, got {problems:?}"
    );
}

#[test]
fn a_missing_or_stale_channel_is_reported() {
    let code = Code::read();
    let catalog = edited(|doc| {
        let channels = doc["channels"].as_mapping_mut().unwrap();
        channels.remove("paymentEvents");
        channels.remove("salesAnalyticsDeadLetters");
        channels.insert(
            "stale".into(),
            serde_norway::from_str("address: order.events.v0").unwrap(),
        );
    });
    let problems = check_topics(&code, &catalog);
    reports(&problems, "topic payment.events.v1 (an event topic");
    reports(
        &problems,
        "topic sales-analytics.dlq (the dead-letter topic of consumer group sales-analytics)",
    );
    reports(
        &problems,
        "channel order.events.v0 of docs/asyncapi.yaml is no topic",
    );
}

#[test]
fn a_new_topic_or_events_file_in_the_code_is_reported() {
    let mut code = Code::read();
    code.event_topics.insert(
        "shipping.events.v1".into(),
        EventTopic {
            file: "shop/shipping/v1/events.proto".into(),
            events: BTreeSet::from(["shop.shipping.v1.Shipped".to_owned()]),
        },
    );
    code.groups
        .insert("shipping-service".into(), "shipping-service.dlq".into());
    let problems = check_topics(&code, &Catalog::load());
    reports(&problems, "topic shipping.events.v1");
    reports(&problems, "topic shipping-service.dlq");
    assert_eq!(
        events_file("order.events.v2").as_deref(),
        Some("shop/order/v2/events.proto")
    );
}

#[test]
fn a_missing_or_extra_event_type_is_reported() {
    let mut code = Code::read();
    code.event_topics
        .get_mut("payment.events.v1")
        .unwrap()
        .events
        .insert("shop.payment.v1.PaymentChargedBack".into());
    let catalog = edited(|doc| {
        let messages = doc["channels"]["orderEvents"]["messages"]
            .as_mapping_mut()
            .unwrap();
        messages.remove("OrderConfirmed");
        messages.insert(
            "Surprise".into(),
            serde_norway::from_str("name: shop.order.v1.OrderLine").unwrap(),
        );
    });
    let problems = check_event_types(&code, &catalog);
    reports(&problems, "event type shop.payment.v1.PaymentChargedBack");
    reports(
        &problems,
        "event type shop.order.v1.OrderConfirmed (shop/order/v1/events.proto) is missing",
    );
    reports(
        &problems,
        "lists shop.order.v1.OrderLine, which is no event type",
    );
}

#[test]
fn parts_of_events_are_not_event_types() {
    let code = Code::read();
    let order = &code.event_topics["order.events.v1"].events;
    assert!(order.contains("shop.order.v1.OrderCancelled"));
    assert!(!order.contains("shop.order.v1.OrderLine"), "{order:?}");
    // OrderPlaced, PaymentRequested, OrderConfirmed, OrderCancelled, and the two compensation
    // commands RefundRequested and StockReleaseRequested.
    assert_eq!(order.len(), 6, "{order:?}");
}

#[test]
fn a_schema_that_drifts_from_its_message_is_reported() {
    let code = Code::read();
    let catalog = edited(|doc| {
        let schemas = &mut doc["components"]["schemas"];
        let cancelled = schemas["shop.order.v1.OrderCancelled"]["properties"]
            .as_mapping_mut()
            .unwrap();
        cancelled.remove("was_confirmed");
        cancelled.insert(
            "refund".into(),
            serde_norway::from_str("type: boolean").unwrap(),
        );
        schemas["shop.order.v1.OrderLine"]["properties"]["quantity"]["x-protobuf-field-number"] =
            7.into();
        schemas["shop.inventory.v1.StockReserved"]["properties"]["lines"]["type"] = "object".into();
        schemas["shop.payment.v1.DeclineReason"]["x-protobuf-enum-values"]
            .as_mapping_mut()
            .unwrap()
            .remove("DECLINE_REASON_ACCOUNT_FROZEN");
        schemas
            .as_mapping_mut()
            .unwrap()
            .remove("shop.common.v1.Money");
    });
    let problems = check_schemas(&code, &catalog);
    reports(
        &problems,
        "field shop.order.v1.OrderCancelled.was_confirmed is missing",
    );
    reports(
        &problems,
        "schema shop.order.v1.OrderCancelled lists refund",
    );
    reports(
        &problems,
        "field shop.order.v1.OrderLine.quantity: x-protobuf-field-number Some(7)",
    );
    reports(
        &problems,
        "field shop.inventory.v1.StockReserved.lines: repeated is true",
    );
    reports(&problems, "enum shop.payment.v1.DeclineReason");
    reports(&problems, "message shop.common.v1.Money has no schema");
}

#[test]
fn a_missing_or_unknown_consumer_group_is_reported() {
    let mut code = Code::read();
    code.groups
        .insert("fraud-check".into(), "fraud-check.dlq".into());
    let catalog = edited(|doc| {
        doc["operations"]["paymentServiceConsumesOrderEvents"]["bindings"]["kafka"]["groupId"]["enum"] =
            serde_norway::from_str("[payments]").unwrap();
    });
    let problems = check_consumer_groups(&code, &catalog);
    reports(
        &problems,
        "consumer group fraud-check has no receive operation",
    );
    reports(
        &problems,
        "consumer group payment-service has no receive operation",
    );
    reports(&problems, "receive operations name group payments");
}

#[test]
fn partitions_or_retention_that_drift_from_k8s_are_reported() {
    let catalog = edited(|doc| {
        doc["channels"]["orderEvents"]["bindings"]["kafka"]["partitions"] = 3.into();
        doc["channels"]["salesAnalyticsDeadLetters"]["bindings"]["kafka"]
            .as_mapping_mut()
            .unwrap()
            .remove("topicConfiguration");
    });
    let problems = check_topic_settings(&catalog);
    reports(&problems, "channel order.events.v1: partitions Some(3)");
    reports(
        &problems,
        "channel sales-analytics.dlq has no partitions or retention.ms",
    );
}
