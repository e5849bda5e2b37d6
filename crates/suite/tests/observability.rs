//! Observability end to end, with the four services as separate processes exporting spans over
//! OTLP to a receiver in this test and serving `/metrics` over HTTP:
//!
//! - one order is one trace across the four services, linked through every outbox hop, and
//!   every span follows the OpenTelemetry semantic conventions ([`semconv`]);
//! - `/metrics` counts what happened, and exports every series the alert rules and dashboards
//!   in `deploy/observability/` query;
//! - an event that cannot reach the broker shows as a growing oldest-event age.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::time::Duration;

use shop_proto::common::v1::Money;
use shop_proto::inventory::v1 as inventory;
use shop_proto::notification::v1 as notification;
use shop_proto::order::v1 as order;
use shop_proto::payment::v1 as payment;
use shop_suite::clients::Clients;
use shop_suite::processes::{Service, SuiteConfig, SuiteProcesses, free_port};
use shop_suite::scrape::Scrape;
use shop_testkit::otlp::{ReceivedSpan, render_tree};
use shop_testkit::{OtlpReceiver, TestDb, TestKafka, eventually, semconv};

fn eur(amount_minor: i64) -> Option<Money> {
    Some(Money {
        amount_minor,
        currency: "EUR".into(),
    })
}

struct Topics {
    order: String,
    inventory: String,
    payment: String,
}

async fn databases() -> (Vec<TestDb>, HashMap<Service, String>) {
    let mut dbs = Vec::new();
    let mut urls = HashMap::new();
    for service in Service::ALL {
        let db = TestDb::create().await;
        urls.insert(service, db.url());
        dbs.push(db);
    }
    (dbs, urls)
}

fn config(
    bootstrap: &str,
    databases: HashMap<Service, String>,
    topics: &Topics,
    otlp: Option<String>,
) -> SuiteConfig {
    SuiteConfig {
        kafka_bootstrap_servers: bootstrap.to_owned(),
        databases,
        order_events_topic: topics.order.clone(),
        inventory_events_topic: topics.inventory.clone(),
        payment_events_topic: topics.payment.clone(),
        group_suffix: uuid::Uuid::new_v4().simple().to_string(),
        otlp_endpoint: otlp,
        env: Vec::new(),
        local: None,
    }
}

async fn seed(clients: &mut Clients, sku: &str, customer: &str) {
    clients
        .inventory
        .upsert_product(inventory::UpsertProductRequest {
            sku: sku.into(),
            name: "A book".into(),
            unit_price: eur(1250),
        })
        .await
        .unwrap();
    clients
        .inventory
        .adjust_stock(inventory::AdjustStockRequest {
            sku: sku.into(),
            delta: 10,
            reason: "delivery".into(),
        })
        .await
        .unwrap();
    clients
        .payment
        .open_account(payment::OpenAccountRequest {
            customer_id: customer.into(),
            currency: "EUR".into(),
            frozen: false,
        })
        .await
        .unwrap();
    clients
        .payment
        .deposit(payment::DepositRequest {
            customer_id: customer.into(),
            amount: eur(10_000),
            deposit_id: format!("{customer}-deposit"),
        })
        .await
        .unwrap();
}

async fn place(clients: &mut Clients, key: &str, customer: &str, sku: &str) -> String {
    clients
        .order
        .place_order(order::PlaceOrderRequest {
            idempotency_key: key.into(),
            customer_id: customer.into(),
            lines: vec![order::LineRequest {
                sku: sku.into(),
                quantity: 2,
            }],
        })
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap()
        .order_id
}

/// Waits for the trace rooted at the PlaceOrder call to reach the notification service's
/// consumer of `OrderConfirmed` and its delivery; on timeout, fails showing every span received.
async fn order_trace(receiver: &OtlpReceiver, place_order: &str) -> Vec<ReceivedSpan> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let spans = receiver.spans();
        if let Some(root) = spans
            .iter()
            .find(|s| s.name == place_order && s.kind == "server")
        {
            let trace: Vec<ReceivedSpan> = spans
                .iter()
                .filter(|s| s.trace_id == root.trace_id)
                .cloned()
                .collect();
            let confirmed_recorded = trace.iter().any(|s| {
                s.service == "notification-service"
                    && s.attr("event.type") == Some("shop.order.v1.OrderConfirmed")
            });
            let delivered = trace.iter().any(|s| s.name == "deliver notification");
            if confirmed_recorded && delivered {
                return trace;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no complete trace after 30 s; received {} spans:\n{}",
            spans.len(),
            render_tree(&spans)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn parent_of<'a>(trace: &'a [ReceivedSpan], span: &ReceivedSpan) -> &'a ReceivedSpan {
    trace
        .iter()
        .find(|s| s.span_id == span.parent_span_id)
        .unwrap_or_else(|| panic!("the parent of {span:?} was not exported"))
}

/// The spans of `trace` named `name` in `service`.
fn named<'a>(trace: &'a [ReceivedSpan], service: &str, name: &str) -> Vec<&'a ReceivedSpan> {
    trace
        .iter()
        .filter(|s| s.service == service && s.name == name)
        .collect()
}

/// Checks the chain event → outbox append → send (producer) → process (consumer) for one hop:
/// every `process <topic>` span in `consumer` is the child of a `send <topic>` span of
/// `producer`, itself the child of an `outbox append` span of `producer`.
fn assert_hop(trace: &[ReceivedSpan], producer: &str, topic: &str, consumer: &str, tree: &str) {
    let processes = named(trace, consumer, &format!("process {topic}"));
    assert!(
        !processes.is_empty(),
        "no `process {topic}` span in {consumer}:\n{tree}"
    );
    for process in processes {
        assert_eq!(process.kind, "consumer", "{process:?}");
        assert_eq!(process.attr("messaging.system"), Some("kafka"));
        assert_eq!(process.attr("messaging.destination.name"), Some(topic));
        assert_eq!(process.attr("messaging.operation.type"), Some("process"));
        assert!(process.attr("messaging.consumer.group.name").is_some());
        let send = parent_of(trace, process);
        assert_eq!(
            (send.service.as_str(), send.name.as_str(), send.kind),
            (producer, format!("send {topic}").as_str(), "producer"),
            "the parent of {consumer}'s `process {topic}`:\n{tree}"
        );
        assert_eq!(send.attr("messaging.operation.type"), Some("send"));
        assert!(send.attr("messaging.kafka.offset").is_some(), "{send:?}");
        // The send span is the record's creation context: the process span links to it too.
        assert!(
            process
                .links
                .contains(&(send.trace_id.clone(), send.span_id.clone())),
            "{process:?} does not link to {send:?}"
        );
        let append = parent_of(trace, send);
        assert_eq!(
            (append.service.as_str(), append.name.as_str()),
            (producer, "outbox append"),
            "the parent of {producer}'s `send {topic}`:\n{tree}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_order_is_one_trace_through_four_services_and_every_metric_counts_it() {
    shop_telemetry::init_for_tests();
    let receiver = OtlpReceiver::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let kafka = TestKafka::start();
    let topics = Topics {
        order: TestKafka::unique_topic("order"),
        inventory: TestKafka::unique_topic("inventory"),
        payment: TestKafka::unique_topic("payment"),
    };
    for topic in [&topics.order, &topics.inventory, &topics.payment] {
        kafka.create_topic(topic, 3).await;
    }
    let (_dbs, urls) = databases().await;
    let (suite, mut clients) = SuiteProcesses::start(config(
        kafka.bootstrap_servers(),
        urls,
        &topics,
        Some(receiver.endpoint()),
    ))
    .await
    .unwrap();

    seed(&mut clients, "BOOK", "ann").await;
    let order_id = place(&mut clients, "ann-1", "ann", "BOOK").await;
    let order_client = clients.order.clone();
    eventually("order confirmed", Duration::from_secs(60), || {
        let (mut c, id) = (order_client.clone(), order_id.clone());
        async move {
            let o = c
                .get_order(order::GetOrderRequest { order_id: id })
                .await
                .ok()?
                .into_inner()
                .order?;
            (o.status() == order::OrderStatus::Confirmed).then_some(())
        }
    })
    .await;
    let notifications = clients.notification.clone();
    eventually(
        "the notification delivered",
        Duration::from_secs(60),
        || {
            let (mut c, id) = (notifications.clone(), order_id.clone());
            async move {
                let list = c
                    .list_notifications(notification::ListNotificationsRequest {
                        order_id: id,
                        ..Default::default()
                    })
                    .await
                    .ok()?
                    .into_inner()
                    .notifications;
                (list.len() == 1 && list[0].status() == notification::DeliveryStatus::Delivered)
                    .then_some(())
            }
        },
    )
    .await;

    // ---- one trace, from PlaceOrder to the notification ----
    let place_order = "shop.order.v1.OrderService/PlaceOrder";
    let trace = order_trace(&receiver, place_order).await;
    let tree = render_tree(&trace);
    println!("{tree}");

    // ---- every span, of the trace and of every other activity, by the conventions ----
    let spans = receiver.spans();
    let kinds: BTreeSet<&str> = spans.iter().map(|s| s.kind).collect();
    for kind in ["server", "client", "producer", "consumer", "internal"] {
        assert!(kinds.contains(kind), "no {kind} span among {kinds:?}");
    }
    let broken: Vec<Vec<String>> = spans
        .iter()
        .map(semconv::violations)
        .filter(|v| !v.is_empty())
        .collect();
    assert!(
        broken.is_empty(),
        "{} of the {} spans break the OpenTelemetry semantic conventions {}:\n{}",
        broken.len(),
        spans.len(),
        semconv::VERSION,
        broken
            .iter()
            .flatten()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );

    let services: BTreeSet<&str> = trace.iter().map(|s| s.service.as_str()).collect();
    assert_eq!(
        services,
        BTreeSet::from([
            "inventory-service",
            "notification-service",
            "order-service",
            "payment-service"
        ]),
        "{tree}"
    );
    let roots: Vec<_> = trace
        .iter()
        .filter(|s| s.parent_span_id.is_empty())
        .collect();
    assert_eq!(roots.len(), 1, "one root:\n{tree}");
    assert_eq!(roots[0].name, place_order);
    assert_eq!(roots[0].service, "order-service");
    assert_eq!(roots[0].attr("rpc.system.name"), Some("grpc"));
    assert_eq!(roots[0].attr("rpc.method"), Some(place_order));
    assert_eq!(roots[0].attr("rpc.response.status_code"), Some("OK"));

    // The pricing call: a client span in order, continued by a server span in inventory.
    let list_products = "shop.inventory.v1.InventoryService/ListProducts";
    let client = named(&trace, "order-service", list_products);
    assert_eq!(client.len(), 1, "{tree}");
    assert_eq!(client[0].kind, "client");
    assert_eq!(parent_of(&trace, client[0]).name, place_order);
    let server = named(&trace, "inventory-service", list_products);
    assert_eq!(server.len(), 1, "{tree}");
    assert_eq!(server[0].kind, "server");
    assert_eq!(server[0].parent_span_id, client[0].span_id, "{tree}");

    // Database spans, in the request and in the consumers.
    let insert_order = named(&trace, "order-service", "INSERT orders");
    assert_eq!(insert_order.len(), 1, "{tree}");
    assert_eq!(insert_order[0].attr("db.system.name"), Some("postgresql"));
    assert!(!named(&trace, "inventory-service", "SELECT products").is_empty());
    assert!(!named(&trace, "payment-service", "UPDATE accounts").is_empty());
    assert!(!named(&trace, "notification-service", "INSERT notifications").is_empty());

    // Every hop of the saga: append → send → process, across processes.
    assert_hop(
        &trace,
        "order-service",
        &topics.order,
        "inventory-service",
        &tree,
    );
    assert_hop(
        &trace,
        "inventory-service",
        &topics.inventory,
        "order-service",
        &tree,
    );
    assert_hop(
        &trace,
        "order-service",
        &topics.order,
        "payment-service",
        &tree,
    );
    assert_hop(
        &trace,
        "payment-service",
        &topics.payment,
        "order-service",
        &tree,
    );
    assert_hop(
        &trace,
        "order-service",
        &topics.order,
        "notification-service",
        &tree,
    );
    // The delivery, apart from consumption and later, still belongs to the order's trace: it is
    // the child of the consumer span that recorded the notification.
    let deliveries = named(&trace, "notification-service", "deliver notification");
    assert_eq!(deliveries.len(), 1, "{tree}");
    let recorded_by = parent_of(&trace, deliveries[0]);
    assert_eq!(
        (recorded_by.name.as_str(), recorded_by.kind),
        (format!("process {}", topics.order).as_str(), "consumer"),
        "{tree}"
    );
    assert_eq!(
        recorded_by.attr("event.type"),
        Some("shop.order.v1.OrderConfirmed")
    );
    // The first append happened in PlaceOrder's request.
    let first_send = named(&trace, "order-service", &format!("send {}", topics.order))
        .into_iter()
        .min_by_key(|s| s.start_unix_nanos)
        .unwrap();
    let mut ancestor = parent_of(&trace, first_send);
    while !ancestor.parent_span_id.is_empty() {
        ancestor = parent_of(&trace, ancestor);
    }
    assert_eq!(ancestor.name, place_order);

    // ---- metrics ----
    // Consumers and relays keep going after the order is confirmed (OrderConfirmed is still
    // on its way to inventory); read again until the counts have settled.
    let scrapes = eventually("the saga's metrics", Duration::from_secs(30), || {
        let addrs: Vec<_> = Service::ALL
            .iter()
            .map(|s| (*s, suite.metrics_addr(*s)))
            .collect();
        let order_topic = topics.order.clone();
        async move {
            let mut scrapes = HashMap::new();
            for (service, addr) in addrs {
                scrapes.insert(service, Scrape::fetch(addr).await.ok()?);
            }
            let inventory = &scrapes[&Service::Inventory];
            let count = |outcome: &str| {
                inventory.value(
                    "shop_consumer_messages_total",
                    &[("topic", &order_topic), ("outcome", outcome)],
                )
            };
            let (sold, passed_over) = (count("applied")?, count("ignored")?);
            let drained = Service::ALL
                .iter()
                .all(|s| scrapes[s].value("shop_outbox_backlog_events", &[]) == Some(0.0));
            // OrderPlaced and OrderConfirmed applied; PaymentRequested, not inventory's
            // business, passed over.
            (sold >= 2.0 && passed_over >= 1.0 && drained).then_some(scrapes)
        }
    })
    .await;
    let order_m = &scrapes[&Service::Order];
    let inventory_m = &scrapes[&Service::Inventory];
    let payment_m = &scrapes[&Service::Payment];
    let notification_m = &scrapes[&Service::Notification];

    // Business counters.
    assert_eq!(order_m.value("shop_orders_placed_total", &[]), Some(1.0));
    assert_eq!(order_m.value("shop_orders_confirmed_total", &[]), Some(1.0));
    assert_eq!(order_m.value("shop_orders_cancelled_total", &[]), Some(0.0));
    assert_eq!(
        inventory_m.value("shop_stock_reservations_total", &[]),
        Some(1.0)
    );
    assert_eq!(
        inventory_m.value("shop_stock_rejections_total", &[]),
        Some(0.0)
    );
    assert_eq!(
        payment_m.value("shop_payments_captured_total", &[]),
        Some(1.0)
    );
    assert_eq!(
        payment_m.value("shop_payments_declined_total", &[]),
        Some(0.0)
    );
    assert_eq!(
        payment_m.value("shop_payments_refunded_total", &[]),
        Some(0.0)
    );
    assert_eq!(
        notification_m.value(
            "shop_notifications_recorded_total",
            &[("kind", "order_confirmed")]
        ),
        Some(1.0)
    );
    assert_eq!(
        notification_m.value("shop_notifications_delivered_total", &[("channel", "log")]),
        Some(1.0)
    );
    assert_eq!(
        notification_m.value("shop_notifications_failed_total", &[("channel", "log")]),
        Some(0.0)
    );

    // gRPC RED, server and client side.
    let ok = |m: &Scrape, service: &str, method: &str| {
        m.value(
            "grpc_server_handled_total",
            &[
                ("grpc_service", service),
                ("grpc_method", method),
                ("grpc_code", "OK"),
            ],
        )
    };
    assert_eq!(
        ok(order_m, "shop.order.v1.OrderService", "PlaceOrder"),
        Some(1.0)
    );
    assert!(ok(order_m, "shop.order.v1.OrderService", "GetOrder").unwrap() >= 1.0);
    assert_eq!(
        order_m.value(
            "grpc_server_handling_seconds_count",
            &[("grpc_method", "PlaceOrder")]
        ),
        Some(1.0)
    );
    assert_eq!(
        order_m.value(
            "grpc_client_handled_total",
            &[("grpc_method", "ListProducts"), ("grpc_code", "OK")]
        ),
        Some(1.0)
    );
    assert_eq!(
        ok(
            inventory_m,
            "shop.inventory.v1.InventoryService",
            "ListProducts"
        ),
        Some(1.0)
    );
    assert_eq!(
        ok(payment_m, "shop.payment.v1.PaymentService", "Deposit"),
        Some(1.0)
    );

    // Outbox and relay: OrderPlaced, PaymentRequested, OrderConfirmed from order.
    assert_eq!(
        order_m.value("shop_outbox_published_total", &[("topic", &topics.order)]),
        Some(3.0)
    );
    assert_eq!(
        order_m.value("shop_outbox_publish_latency_seconds_count", &[]),
        Some(3.0)
    );
    assert_eq!(
        order_m.value("shop_outbox_oldest_event_age_seconds", &[]),
        Some(0.0)
    );
    assert_eq!(order_m.value("shop_outbox_relay_leader", &[]), Some(1.0));
    assert_eq!(
        payment_m.value("shop_outbox_published_total", &[("topic", &topics.payment)]),
        Some(1.0)
    );

    // Consumers: order applied StockReserved and PaymentCaptured; nothing dead-lettered.
    assert_eq!(
        order_m.value("shop_consumer_messages_total", &[("outcome", "applied")]),
        Some(2.0)
    );
    assert_eq!(
        order_m.value("shop_consumer_event_delay_seconds_count", &[]),
        Some(2.0)
    );
    for m in [order_m, inventory_m, payment_m, notification_m] {
        assert_eq!(m.value("shop_dead_letters_total", &[]), Some(0.0));
        let in_use = m.value("shop_db_pool_connections", &[("state", "in_use")]);
        let idle = m.value("shop_db_pool_connections", &[("state", "idle")]);
        assert!(in_use.is_some() && idle.is_some());
        assert_eq!(m.value("shop_db_pool_max_connections", &[]), Some(10.0));
    }
    // The lag is read from the broker (every 5 s): it appears, and is 0 once caught up.
    let payment_addr = suite.metrics_addr(Service::Payment);
    eventually(
        "payment's consumer lag",
        Duration::from_secs(20),
        || async move {
            let m = Scrape::fetch(payment_addr).await.ok()?;
            (m.value("shop_consumer_lag", &[])? == 0.0).then_some(())
        },
    )
    .await;

    // ---- every series an alert or a dashboard queries is exported ----
    let mut exported = BTreeSet::new();
    for service in Service::ALL {
        let scrape = Scrape::fetch(suite.metrics_addr(service)).await.unwrap();
        exported.extend(scrape.series_names());
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/observability");
    let mut queried = BTreeSet::new();
    let mut files = vec![root.join("alerts.yml")];
    for entry in std::fs::read_dir(root.join("grafana/dashboards")).unwrap() {
        files.push(entry.unwrap().path());
    }
    assert!(files.len() >= 6, "alerts and five dashboards: {files:?}");
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let names = metric_names(&text);
        assert!(!names.is_empty(), "{} queries no metric", file.display());
        for name in names {
            queried.insert((
                name,
                file.file_name().unwrap().to_string_lossy().to_string(),
            ));
        }
    }
    let missing: Vec<_> = queried
        .iter()
        .filter(|(name, _)| !exported.contains(name))
        .collect();
    assert!(
        missing.is_empty(),
        "queried by alerts or dashboards but exported by no service: {missing:?}"
    );
}

/// The metric names (`shop_*`, `grpc_*`) a rule file or dashboard mentions. Recording rules
/// (`shop:...`) are not metrics of the services and do not match.
fn metric_names(text: &str) -> BTreeSet<String> {
    let bytes = text.as_bytes();
    let is_name = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_';
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < bytes.len() {
        let starts = (text[i..].starts_with("shop_") || text[i..].starts_with("grpc_"))
            && (i == 0 || !(is_name(bytes[i - 1]) || bytes[i - 1] == b':' || bytes[i - 1] == b'.'));
        if starts {
            let end = (i..bytes.len())
                .find(|&j| !is_name(bytes[j]))
                .unwrap_or(bytes.len());
            // `grpc_service`, `grpc_method`, `grpc_code` are labels, not metrics.
            let name = &text[i..end];
            if !matches!(name, "grpc_service" | "grpc_method" | "grpc_code") {
                names.insert(name.to_owned());
            }
            i = end;
        } else {
            i += 1;
        }
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_event_that_cannot_reach_the_broker_shows_as_a_growing_oldest_event_age() {
    shop_telemetry::init_for_tests();
    // Nothing listens there: the broker is down for the whole test.
    let dead_broker = format!("127.0.0.1:{}", free_port());
    let topics = Topics {
        order: TestKafka::unique_topic("order"),
        inventory: TestKafka::unique_topic("inventory"),
        payment: TestKafka::unique_topic("payment"),
    };
    let (_dbs, urls) = databases().await;
    let (suite, mut clients) = SuiteProcesses::start(config(&dead_broker, urls, &topics, None))
        .await
        .unwrap();
    clients
        .inventory
        .upsert_product(inventory::UpsertProductRequest {
            sku: "BOOK".into(),
            name: "A book".into(),
            unit_price: eur(1250),
        })
        .await
        .unwrap();
    let order_id = place(&mut clients, "bob-1", "bob", "BOOK").await;
    assert!(!order_id.is_empty());

    let addr = suite.metrics_addr(Service::Order);
    let first = Scrape::fetch(addr).await.unwrap();
    assert_eq!(first.value("shop_outbox_backlog_events", &[]), Some(1.0));
    let age = first
        .value("shop_outbox_oldest_event_age_seconds", &[])
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let second = Scrape::fetch(addr).await.unwrap();
    assert_eq!(second.value("shop_outbox_backlog_events", &[]), Some(1.0));
    let later = second
        .value("shop_outbox_oldest_event_age_seconds", &[])
        .unwrap();
    assert!(
        later >= age + 1.4,
        "the oldest event's age grows while the broker is down: {age} s, then {later} s"
    );
    assert_eq!(
        second.value("shop_outbox_published_total", &[]),
        None,
        "nothing was published"
    );
}

#[test]
fn metric_names_are_found_in_rules_and_dashboards() {
    let names = metric_names(
        r#"expr: sum by (job) (rate(grpc_server_handled_total{grpc_code="OK"}[5m])) / shop:grpc_slow_ratio:rate5m
        "expr": "max(shop_outbox_oldest_event_age_seconds{job=\"order\"})""#,
    );
    assert_eq!(
        names,
        BTreeSet::from([
            "grpc_server_handled_total".to_owned(),
            "shop_outbox_oldest_event_age_seconds".to_owned()
        ])
    );
}
