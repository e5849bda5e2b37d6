//! The order service as a client sees it: real gRPC over loopback, its own database, the real
//! inventory service pricing orders and reserving stock, a real Kafka-protocol broker; payment's
//! replies are published through a real outbox and relay.

use std::time::{Duration, Instant};

use order_service::config::Settings;
use order_service::startup::{Application, Orders};
use prost::Message;
use shop_eventing::{KafkaConfig, NewEvent, Outbox, Relay, RelayConfig};
use shop_proto::common::v1::Money;
use shop_proto::inventory::v1 as inventory_pb;
use shop_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use shop_proto::order::v1 as pb;
use shop_proto::order::v1::order_service_client::OrderServiceClient;
use shop_proto::payment::v1 as payment_pb;
use shop_runtime::skeleton::Service as _;
use shop_testkit::{Authed, Record, TestDb, TestKafka, connect_authed, test_auth};
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic_types::StatusExt;

struct TestApp {
    orders: OrderServiceClient<Authed>,
    inventory: InventoryServiceClient<Authed>,
    kafka: TestKafka,
    order_topic: String,
    inventory_topic: String,
    payment_topic: String,
    payment_db: TestDb,
    /// Payment's outbox, waking its relay.
    payment_outbox: Outbox,
    /// Inventory's replies, written to payment's database and relayed by its relay.
    inventory_outbox: Outbox,
    order_addr: String,
    metrics_addr: std::net::SocketAddr,
    settings: Settings,
    stop: CancellationToken,
    _dbs: Vec<TestDb>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn spawn_app(inventory_url: Option<&str>) -> TestApp {
    spawn_app_with(inventory_url, |_| {}).await
}

/// [`spawn_app`] with the order service's settings adjusted by `tune`.
async fn spawn_app_with(inventory_url: Option<&str>, tune: impl FnOnce(&mut Settings)) -> TestApp {
    shop_telemetry::init_for_tests();
    let kafka = TestKafka::start();
    let order_topic = TestKafka::unique_topic("order-events");
    let inventory_topic = TestKafka::unique_topic("inventory-events");
    let payment_topic = TestKafka::unique_topic("payment-events");
    for topic in [&order_topic, &inventory_topic, &payment_topic] {
        kafka.create_topic(topic, 3).await;
    }
    let stop = CancellationToken::new();

    // The real inventory service.
    let inventory_db = TestDb::create().await;
    let mut inventory_settings =
        inventory_service::config::Settings::for_test(shop_testkit::service::service_settings(
            &inventory_service::startup::Inventory::IDENTITY,
            inventory_db.url(),
            &kafka,
        ));
    inventory_settings.order_events_topic = order_topic.clone();
    inventory_settings.inventory_events_topic = inventory_topic.clone();
    let inventory = shop_testkit::service::spawn::<inventory_service::startup::Inventory>(
        inventory_settings,
        &stop,
    )
    .await;
    let inventory_addr = inventory.url();

    let order_db = TestDb::create().await;
    let mut settings = Settings::for_test(
        shop_testkit::service::service_settings(&Orders::IDENTITY, order_db.url(), &kafka),
        inventory_url.unwrap_or(&inventory_addr),
    );
    // Far above a call's time even on a loaded 2-core machine (the whole suite's tests at
    // once); the deadline's own test sets 500 ms.
    settings.inventory_deadline = Duration::from_secs(5);
    settings.breaker_failures = 2;
    settings.breaker_open_for = Duration::from_secs(30);
    settings.order_events_topic = order_topic.clone();
    settings.inventory_events_topic = inventory_topic.clone();
    settings.payment_events_topic = payment_topic.clone();
    settings.service_token_file = Some(test_auth().service_token_file("order-service"));
    tune(&mut settings);
    let app = shop_testkit::service::spawn::<Orders>(settings.clone(), &stop).await;
    let order_addr = app.url();
    let metrics_addr = app.metrics_addr;

    // Payment's side: its replies leave through an outbox and relay, as the real service's do.
    let payment_db = TestDb::create().await;
    shop_eventing::migrate(&payment_db.pool).await.unwrap();
    let relay = Relay::new(
        payment_db.connect_options(),
        &KafkaConfig::new(kafka.bootstrap_servers()),
        RelayConfig::default(),
    )
    .unwrap();
    let payment_outbox = Outbox::new("/shop/payment-service").waking(relay.waker());
    let inventory_outbox = Outbox::new("/shop/inventory-service").waking(relay.waker());
    let relay_stop = stop.clone();
    tokio::spawn(async move { relay.run(relay_stop).await });

    TestApp {
        orders: OrderServiceClient::new(
            connect_authed(&order_addr, &test_auth().operator())
                .await
                .unwrap(),
        ),
        inventory: InventoryServiceClient::new(
            connect_authed(&inventory_addr, &test_auth().operator())
                .await
                .unwrap(),
        ),
        kafka,
        order_topic,
        inventory_topic,
        payment_topic,
        payment_db,
        payment_outbox,
        inventory_outbox,
        order_addr,
        metrics_addr,
        settings,
        stop,
        _dbs: vec![inventory_db, order_db],
    }
}

fn eur(amount_minor: i64) -> Option<Money> {
    Some(Money {
        amount_minor,
        currency: "EUR".into(),
    })
}

fn place(key: &str, customer: &str, lines: &[(&str, u32)]) -> pb::PlaceOrderRequest {
    pb::PlaceOrderRequest {
        idempotency_key: key.into(),
        customer_id: customer.into(),
        lines: lines
            .iter()
            .map(|(sku, q)| pb::LineRequest {
                sku: (*sku).into(),
                quantity: *q,
            })
            .collect(),
    }
}

impl TestApp {
    async fn product(&mut self, sku: &str, price: i64, stock: i64) {
        self.inventory
            .upsert_product(inventory_pb::UpsertProductRequest {
                sku: sku.into(),
                name: sku.into(),
                unit_price: eur(price),
            })
            .await
            .unwrap();
        if stock != 0 {
            self.inventory
                .adjust_stock(inventory_pb::AdjustStockRequest {
                    sku: sku.into(),
                    delta: stock,
                    reason: "initial".into(),
                })
                .await
                .unwrap();
        }
    }

    async fn order(&mut self, id: &str) -> pb::Order {
        self.orders
            .get_order(pb::GetOrderRequest {
                order_id: id.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .order
            .unwrap()
    }

    async fn wait_for(&mut self, id: &str, status: pb::OrderStatus) -> pb::Order {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let order = self.order(id).await;
            if order.status() == status {
                return order;
            }
            assert!(
                Instant::now() < deadline,
                "order {id} stuck in {:?}",
                order.status()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn order_events(&self, count: usize) -> Vec<Record> {
        self.kafka
            .read_all(
                &self.order_topic,
                count,
                Duration::from_secs(30),
                Duration::from_secs(1),
            )
            .await
    }

    async fn payment_replies<M: Message + prost::Name>(&self, order_id: &str, reply: &M) {
        // As the payment service's consumer does: the relay is woken once the transaction
        // committed.
        shop_eventing::committing(async {
            let mut tx = self.payment_db.pool.begin().await?;
            self.payment_outbox
                .append(&mut tx, NewEvent::new(&self.payment_topic, order_id, reply))
                .await?;
            tx.commit().await
        })
        .await
        .unwrap();
    }

    /// A reply as inventory would send it (e.g. a late duplicate), through the same relay.
    async fn inventory_replies<M: Message + prost::Name>(&self, order_id: &str, reply: &M) {
        shop_eventing::committing(async {
            let mut tx = self.payment_db.pool.begin().await?;
            self.inventory_outbox
                .append(
                    &mut tx,
                    NewEvent::new(&self.inventory_topic, order_id, reply),
                )
                .await?;
            tx.commit().await
        })
        .await
        .unwrap();
    }

    async fn cancel(&mut self, id: &str) -> Result<pb::Order, tonic::Status> {
        self.orders
            .cancel_order(pb::CancelOrderRequest {
                order_id: id.into(),
            })
            .await
            .map(|r| r.into_inner().order.unwrap())
    }
}

fn types(records: &[Record], key: &str) -> Vec<String> {
    records
        .iter()
        .filter(|r| r.key.as_deref() == Some(key))
        .map(|r| {
            r.header("ce_type")
                .unwrap()
                .trim_start_matches("shop.order.v1.")
                .to_owned()
        })
        .collect()
}

#[tokio::test]
async fn a_placed_order_is_priced_reserved_paid_and_confirmed() {
    let mut app = spawn_app(None).await;
    app.product("BOOK", 1250, 5).await;
    app.product("PEN", 199, 10).await;

    let order = app
        .orders
        .place_order(place("k-1", "alice", &[("BOOK", 2), ("PEN", 3)]))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert_eq!(order.status(), pb::OrderStatus::Pending);
    assert_eq!(order.total, eur(2 * 1250 + 3 * 199));
    assert_eq!(order.lines[1].unit_price, eur(199));

    // Inventory reserves; the order asks payment for the total.
    let events = app.order_events(2).await;
    assert_eq!(
        types(&events, &order.order_id),
        ["OrderPlaced", "PaymentRequested"]
    );
    let requested = pb::PaymentRequested::decode(events[1].payload.as_slice()).unwrap();
    assert_eq!(requested.amount, order.total);

    app.payment_replies(
        &order.order_id,
        &payment_pb::PaymentCaptured {
            order_id: order.order_id.clone(),
            customer_id: "alice".into(),
            amount: order.total.clone(),
        },
    )
    .await;
    let confirmed = app
        .wait_for(&order.order_id, pb::OrderStatus::Confirmed)
        .await;
    let reasons: Vec<&str> = confirmed
        .history
        .iter()
        .map(|h| h.reason.as_str())
        .collect();
    assert_eq!(
        reasons,
        [
            "placed",
            "stock reserved; payment requested",
            "payment captured"
        ]
    );
    let events = app.order_events(3).await;
    assert_eq!(
        types(&events, &order.order_id),
        ["OrderPlaced", "PaymentRequested", "OrderConfirmed"]
    );

    // Cancelled after confirmation: OrderCancelled says so, so payment refunds and inventory
    // takes the stock back.
    let cancelled = app
        .orders
        .cancel_order(pb::CancelOrderRequest {
            order_id: order.order_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert_eq!(
        cancelled.cancellation_reason(),
        pb::CancellationReason::CustomerCancelled
    );
    let events = app.order_events(4).await;
    let event = pb::OrderCancelled::decode(events[3].payload.as_slice()).unwrap();
    assert!(event.was_confirmed);
    // A retry of the call (its answer was lost) gets the cancelled order, not an error.
    let retried = app.cancel(&order.order_id).await.unwrap();
    assert_eq!(
        (retried.status(), retried.cancellation_reason()),
        (
            pb::OrderStatus::Cancelled,
            pb::CancellationReason::CustomerCancelled
        )
    );
    assert_eq!(
        app.order_events(5).await.len(),
        4,
        "the retry cancelled nothing again"
    );
}

#[tokio::test]
async fn out_of_stock_and_declined_orders_are_cancelled_with_their_reason() {
    let mut app = spawn_app(None).await;
    app.product("RARE", 500, 1).await;
    let short = app
        .orders
        .place_order(place("k-short", "bob", &[("RARE", 2)]))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    let short = app
        .wait_for(&short.order_id, pb::OrderStatus::Cancelled)
        .await;
    assert_eq!(
        short.cancellation_reason(),
        pb::CancellationReason::OutOfStock
    );
    assert!(
        short.history.last().unwrap().reason.contains("RARE"),
        "{:?}",
        short.history
    );

    let declined = app
        .orders
        .place_order(place("k-broke", "bob", &[("RARE", 1)]))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    let events = app.order_events(3).await;
    assert_eq!(
        types(&events, &declined.order_id),
        ["OrderPlaced", "PaymentRequested"]
    );
    app.payment_replies(
        &declined.order_id,
        &payment_pb::PaymentDeclined {
            order_id: declined.order_id.clone(),
            customer_id: "bob".into(),
            reason: payment_pb::DeclineReason::InsufficientFunds.into(),
        },
    )
    .await;
    let declined = app
        .wait_for(&declined.order_id, pb::OrderStatus::Cancelled)
        .await;
    assert_eq!(
        declined.cancellation_reason(),
        pb::CancellationReason::PaymentDeclined
    );
    // Inventory released the unit when it saw OrderCancelled.
    let rare = shop_testkit::eventually("stock released", Duration::from_secs(30), || {
        let mut inventory = app.inventory.clone();
        async move {
            let p = inventory
                .get_product(inventory_pb::GetProductRequest { sku: "RARE".into() })
                .await
                .ok()?
                .into_inner()
                .product?;
            (p.reserved == 0).then_some(p)
        }
    })
    .await;
    assert_eq!(rare.available, 1);
}

#[tokio::test]
async fn placing_is_idempotent_per_key() {
    let mut app = spawn_app(None).await;
    app.product("BOOK", 1000, 10).await;
    let first = app
        .orders
        .place_order(place("same-key", "carol", &[("BOOK", 1)]))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    let again = app
        .orders
        .place_order(place("same-key", "carol", &[("BOOK", 1)]))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert_eq!(first.order_id, again.order_id);
    let status = app
        .orders
        .place_order(place("same-key", "carol", &[("BOOK", 2)]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(
        status
            .get_details_precondition_failure()
            .unwrap()
            .violations[0]
            .r#type,
        "IDEMPOTENCY_KEY_REUSED"
    );
    let page = app
        .orders
        .list_orders(pb::ListOrdersRequest {
            customer_id: "carol".into(),
            page_size: 0,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.orders.len(), 1, "one order for one key");
}

/// Places orders (keys `{prefix}-1`, `-2`, …) until one is refused; returns the accepted ones'
/// ids and the refusal. Payment never answers in these tests: every order stays PENDING.
async fn place_until_refused(app: &mut TestApp, prefix: &str) -> (Vec<String>, tonic::Status) {
    let mut accepted = Vec::new();
    loop {
        let key = format!("{prefix}-{}", accepted.len() + 1);
        match app
            .orders
            .place_order(place(&key, "erin", &[("BOOK", 1)]))
            .await
        {
            Ok(response) => accepted.push(response.into_inner().order.unwrap().order_id),
            Err(status) => return (accepted, status),
        }
        assert!(accepted.len() < 100, "never refused");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Cancels `accepted` (as their customer): the backlog drains, and the retry of the first
/// order is answered with that order, not a second one.
async fn drain_and_retry_the_first(app: &mut TestApp, prefix: &str, accepted: &[String]) {
    for order_id in accepted {
        app.cancel(order_id).await.unwrap();
    }
    let again = placed_eventually(
        app,
        &format!("{prefix}-1"),
        "the first order answered again",
    )
    .await
    .into_inner()
    .order
    .unwrap();
    assert_eq!(again.order_id, accepted[0], "the same order, not a new one");
    // The retry counts as pending until the next count (admission cannot tell it from a new
    // order without a query): a new order is accepted within a count or two.
    placed_eventually(app, &format!("{prefix}-after"), "a new order accepted").await;
}

/// PlaceOrder under `key` for erin, tried again until it is accepted (within 10 s).
async fn placed_eventually(
    app: &TestApp,
    key: &str,
    what: &str,
) -> tonic::Response<pb::PlaceOrderResponse> {
    let orders = app.orders.clone();
    shop_testkit::eventually(what, Duration::from_secs(10), || {
        let mut orders = orders.clone();
        async move {
            orders
                .place_order(place(key, "erin", &[("BOOK", 1)]))
                .await
                .ok()
        }
    })
    .await
}

/// Past the backstop (this many orders pending, whatever their age), PlaceOrder refuses a new
/// order at once with RESOURCE_EXHAUSTED and a RetryInfo instead of accepting work the saga
/// cannot finish in time; the retry of an accepted order is refused too while the saga is
/// behind (it names no order), and answered with its order once the backlog drains.
#[tokio::test]
async fn past_the_saga_backlog_limit_new_orders_are_refused_with_a_retry_delay() {
    let mut app = spawn_app_with(None, |settings| {
        settings.admission.max_pending = 2;
        settings.backlog_refresh = Duration::from_millis(20);
    })
    .await;
    app.product("BOOK", 1000, 10).await;
    // The backlog is full once counted (a few more may be accepted until then: it is counted
    // every 20 ms).
    let (accepted, refused) = place_until_refused(&mut app, "backlog").await;
    assert!(
        accepted.len() >= 2,
        "{} accepted before the limit",
        accepted.len()
    );
    shop_testkit::service::assert_overloaded(&refused);
    assert!(
        refused.message().contains("still being processed"),
        "{refused:?}"
    );
    let retry = app
        .orders
        .place_order(place("backlog-1", "erin", &[("BOOK", 1)]))
        .await
        .expect_err("refused while the saga is behind, before any lookup");
    shop_testkit::service::assert_overloaded(&retry);
    drain_and_retry_the_first(&mut app, "backlog", &accepted).await;
}

/// While enough recent orders have waited longer than the wait a placed order is meant to see,
/// new orders are refused, however few are pending: the signal is the saga's wait, not a count
/// fitted to one machine's rate. A single straggler does not close the shop.
#[tokio::test]
async fn while_recent_orders_wait_too_long_new_orders_are_refused() {
    let mut app = spawn_app_with(None, |settings| {
        settings.admission.max_wait = Duration::from_millis(300);
        settings.admission.max_late = 3;
        settings.backlog_refresh = Duration::from_millis(20);
    })
    .await;
    app.product("BOOK", 1000, 10).await;
    let mut accepted = Vec::new();
    for n in 1..=2 {
        accepted.push(
            app.orders
                .place_order(place(&format!("late-{n}"), "erin", &[("BOOK", 1)]))
                .await
                .unwrap()
                .into_inner()
                .order
                .unwrap()
                .order_id,
        );
    }
    // Two late orders, one fewer than the limit: the shop stays open.
    tokio::time::sleep(Duration::from_millis(500)).await;
    accepted.push(
        app.orders
            .place_order(place("late-3", "erin", &[("BOOK", 1)]))
            .await
            .expect("two stragglers do not close the shop")
            .into_inner()
            .order
            .unwrap()
            .order_id,
    );
    // Once the third is late too, new orders are refused.
    let orders = app.orders.clone();
    let refused = shop_testkit::eventually("a new order refused", Duration::from_secs(10), || {
        let mut orders = orders.clone();
        async move {
            orders
                .place_order(place("late-4", "erin", &[("BOOK", 1)]))
                .await
                .err()
        }
    })
    .await;
    shop_testkit::service::assert_overloaded(&refused);
    assert!(
        refused.message().contains("have waited over 300 ms"),
        "{refused:?}"
    );
    drain_and_retry_the_first(&mut app, "late", &accepted).await;
}

#[tokio::test]
async fn orders_are_listed_newest_first_page_by_page() {
    let mut app = spawn_app(None).await;
    app.product("BOOK", 1000, 10).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(
            app.orders
                .place_order(place(&format!("k{i}"), "dave", &[("BOOK", 1)]))
                .await
                .unwrap()
                .into_inner()
                .order
                .unwrap()
                .order_id,
        );
    }
    let first = app
        .orders
        .list_orders(pb::ListOrdersRequest {
            customer_id: "dave".into(),
            page_size: 2,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let second = app
        .orders
        .list_orders(pb::ListOrdersRequest {
            customer_id: "dave".into(),
            page_size: 2,
            page_token: first.next_page_token.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let listed: Vec<String> = first
        .orders
        .iter()
        .chain(&second.orders)
        .map(|o| o.order_id.clone())
        .collect();
    ids.reverse();
    assert_eq!(listed, ids);
    assert!(second.next_page_token.is_empty());
}

#[tokio::test]
async fn bad_input_gets_a_clear_status_with_field_details() {
    let mut app = spawn_app(None).await;
    app.product("BOOK", 1000, 10).await;
    let fields = |status: tonic::Status| -> Vec<String> {
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        status
            .get_details_bad_request()
            .unwrap()
            .field_violations
            .into_iter()
            .map(|v| v.field)
            .collect()
    };
    assert_eq!(
        fields(
            app.orders
                .place_order(place("", "a b", &[("BOOK", 0)]))
                .await
                .unwrap_err()
        ),
        ["idempotency_key", "customer_id", "lines[0].quantity"]
    );
    assert_eq!(
        fields(
            app.orders
                .place_order(place("k", "alice", &[]))
                .await
                .unwrap_err()
        ),
        ["lines"]
    );
    assert_eq!(
        fields(
            app.orders
                .place_order(place("k", "alice", &[("BOOK", 1), ("GHOST", 1)]))
                .await
                .unwrap_err()
        ),
        ["lines[1].sku"]
    );
    assert_eq!(
        fields(
            app.orders
                .get_order(pb::GetOrderRequest {
                    order_id: "nope".into()
                })
                .await
                .unwrap_err()
        ),
        ["order_id"]
    );
    assert_eq!(
        fields(
            app.orders
                .cancel_order(pb::CancelOrderRequest {
                    order_id: "nope".into()
                })
                .await
                .unwrap_err()
        ),
        ["order_id"]
    );
    assert_eq!(
        fields(
            app.orders
                .list_orders(pb::ListOrdersRequest {
                    customer_id: String::new(),
                    page_size: 101,
                    page_token: "garbage".into()
                })
                .await
                .unwrap_err()
        ),
        ["customer_id", "page_size", "page_token"]
    );
    let missing = uuid::Uuid::now_v7().to_string();
    let status = app
        .orders
        .get_order(pb::GetOrderRequest {
            order_id: missing.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(
        status.get_details_resource_info().unwrap().resource_name,
        missing
    );
    assert_eq!(
        app.orders
            .cancel_order(pb::CancelOrderRequest { order_id: missing })
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
}

#[tokio::test]
async fn an_unreachable_inventory_gets_unavailable_with_retry_info_promptly() {
    // Nothing listens there: connections are refused; the breaker opens after two failures.
    let mut app = spawn_app(Some("http://127.0.0.1:9")).await;
    for _ in 0..2 {
        let started = Instant::now();
        let status = app
            .orders
            .place_order(place("k", "erin", &[("BOOK", 1)]))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unavailable);
        assert!(status.get_details_retry_info().is_some());
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "answered within the deadline"
        );
    }
    let started = Instant::now();
    let status = app
        .orders
        .place_order(place("k", "erin", &[("BOOK", 1)]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert!(
        status.message().contains("circuit breaker"),
        "{}",
        status.message()
    );
    let retry = status
        .get_details_retry_info()
        .unwrap()
        .retry_delay
        .unwrap();
    assert!(
        retry > Duration::from_secs(20),
        "retry after the open period: {retry:?}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(200),
        "an open breaker answers at once"
    );
}

#[tokio::test]
async fn a_hanging_inventory_gets_unavailable_at_the_deadline() {
    // Accepts connections and never answers: every call must end at the 500 ms deadline.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let mut app = spawn_app_with(Some(&url), |s| {
        s.inventory_deadline = Duration::from_millis(500);
    })
    .await;
    let started = Instant::now();
    let status = app
        .orders
        .place_order(place("k", "frank", &[("BOOK", 1)]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.get_details_retry_info().is_some());
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(450) && waited < Duration::from_secs(2),
        "{waited:?}"
    );
}

#[tokio::test]
async fn a_late_capture_for_a_cancelled_order_asks_for_a_refund() {
    // Payment captured after the customer cancelled (e.g. a re-driven dead letter): the order
    // stays CANCELLED and asks payment for the refund instead of dropping the reply.
    let mut app = spawn_app(None).await;
    app.product("BOOK", 1250, 5).await;
    let order = app
        .orders
        .place_order(place("k-late", "alice", &[("BOOK", 1)]))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert_eq!(
        types(&app.order_events(2).await, &order.order_id),
        ["OrderPlaced", "PaymentRequested"]
    );
    app.cancel(&order.order_id).await.unwrap();
    app.payment_replies(
        &order.order_id,
        &payment_pb::PaymentCaptured {
            order_id: order.order_id.clone(),
            customer_id: "alice".into(),
            amount: order.total.clone(),
        },
    )
    .await;
    let events = app.order_events(4).await;
    assert_eq!(
        types(&events, &order.order_id),
        [
            "OrderPlaced",
            "PaymentRequested",
            "OrderCancelled",
            "RefundRequested"
        ]
    );
    assert_eq!(
        events[3].payload,
        pb::RefundRequested {
            order_id: order.order_id.clone(),
            customer_id: "alice".into(),
        }
        .encode_to_vec()
    );
    let after = app.order(&order.order_id).await;
    assert_eq!(
        (after.status(), after.cancellation_reason()),
        (
            pb::OrderStatus::Cancelled,
            pb::CancellationReason::CustomerCancelled
        ),
        "still cancelled, never confirmed"
    );
}

#[tokio::test]
async fn a_late_reservation_for_a_cancelled_order_asks_for_a_release() {
    let mut app = spawn_app(None).await;
    app.product("RARE", 500, 0).await;
    let order = app
        .orders
        .place_order(place("k-short", "bob", &[("RARE", 1)]))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    app.wait_for(&order.order_id, pb::OrderStatus::Cancelled)
        .await;
    // A StockReserved for it after all (a replay, a reordered duplicate).
    app.inventory_replies(
        &order.order_id,
        &inventory_pb::StockReserved {
            order_id: order.order_id.clone(),
            lines: vec![inventory_pb::ReservedLine {
                sku: "RARE".into(),
                quantity: 1,
            }],
        },
    )
    .await;
    let events = app.order_events(3).await;
    assert_eq!(
        types(&events, &order.order_id),
        ["OrderPlaced", "OrderCancelled", "StockReleaseRequested"]
    );
    assert_eq!(
        events[2].payload,
        pb::StockReleaseRequested {
            order_id: order.order_id.clone(),
        }
        .encode_to_vec()
    );
}

#[tokio::test]
async fn cancelling_is_idempotent_for_the_customer_only() {
    let mut app = spawn_app(None).await;
    app.product("BOOK", 1000, 10).await;
    app.product("RARE", 500, 0).await;
    let order = app
        .orders
        .place_order(place("k-1", "carol", &[("BOOK", 1)]))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    let first = app.cancel(&order.order_id).await.unwrap();
    // The answer was lost (a deadline after the commit); the client retries.
    let again = app.cancel(&order.order_id).await.unwrap();
    assert_eq!(again.status(), pb::OrderStatus::Cancelled);
    assert_eq!(again.history.len(), first.history.len(), "cancelled once");
    // An order the saga cancelled is not the customer's to cancel again.
    let short = app
        .orders
        .place_order(place("k-2", "carol", &[("RARE", 1)]))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    app.wait_for(&short.order_id, pb::OrderStatus::Cancelled)
        .await;
    let status = app.cancel(&short.order_id).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(
        status
            .get_details_precondition_failure()
            .unwrap()
            .violations[0]
            .r#type,
        "ORDER_ALREADY_CANCELLED"
    );
}

#[tokio::test]
async fn idempotency_keys_belong_to_their_customer() {
    let mut app = spawn_app(None).await;
    app.product("BOOK", 1000, 10).await;
    let carols = app
        .orders
        .place_order(place("shared-key", "carol", &[("BOOK", 1)]))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    // Another customer picks the same key: a new order of their own, nothing about Carol's.
    let daves = app
        .orders
        .place_order(place("shared-key", "dave", &[("BOOK", 2)]))
        .await
        .map(|r| r.into_inner().order.unwrap());
    let daves = match daves {
        Ok(order) => order,
        Err(status) => {
            assert!(
                !status.message().contains(&carols.order_id),
                "another customer's order id leaked: {status:?}"
            );
            panic!("Dave's order was refused: {status:?}");
        }
    };
    assert_ne!(daves.order_id, carols.order_id);
    assert_eq!(daves.customer_id, "dave");
    // Each customer's retry still finds their own order.
    for (customer, lines, id) in [("carol", 1, &carols.order_id), ("dave", 2, &daves.order_id)] {
        let retried = app
            .orders
            .place_order(place("shared-key", customer, &[("BOOK", lines)]))
            .await
            .unwrap()
            .into_inner()
            .order
            .unwrap();
        assert_eq!(&retried.order_id, id);
    }
}

/// One hostile request and the field its answer must name.
struct Hostile {
    what: &'static str,
    field: &'static str,
    call: Result<(), tonic::Status>,
}

fn nul(prefix: &str) -> String {
    format!("{prefix}\0x")
}

fn ten_kb() -> String {
    "x".repeat(10 * 1024)
}

#[tokio::test]
async fn hostile_input_on_every_rpc_is_refused_naming_the_field() {
    let mut app = spawn_app(None).await;
    app.product("BOOK", 1000, 10).await;
    let mut client = app.orders.clone();
    macro_rules! call {
        ($method:ident, $request:expr) => {
            client.$method($request).await.map(|_| ())
        };
    }
    let list = |customer_id: &str, page_size: u32, page_token: &str| pb::ListOrdersRequest {
        customer_id: customer_id.into(),
        page_size,
        page_token: page_token.into(),
    };
    let get = |order_id: String| pb::GetOrderRequest { order_id };
    let cancel = |order_id: String| pb::CancelOrderRequest { order_id };
    let cases = vec![
        Hostile {
            what: "PlaceOrder idempotency key with NUL",
            field: "idempotency_key",
            call: call!(place_order, place(&nul("k"), "alice", &[("BOOK", 1)])),
        },
        Hostile {
            what: "PlaceOrder 10 kB idempotency key",
            field: "idempotency_key",
            call: call!(place_order, place(&ten_kb(), "alice", &[("BOOK", 1)])),
        },
        Hostile {
            what: "PlaceOrder idempotency key with a newline",
            field: "idempotency_key",
            call: call!(place_order, place("k\nx", "alice", &[("BOOK", 1)])),
        },
        Hostile {
            what: "PlaceOrder customer id with NUL",
            field: "customer_id",
            call: call!(place_order, place("k", &nul("alice"), &[("BOOK", 1)])),
        },
        Hostile {
            what: "PlaceOrder 10 kB customer id",
            field: "customer_id",
            call: call!(place_order, place("k", &ten_kb(), &[("BOOK", 1)])),
        },
        Hostile {
            what: "PlaceOrder sku with NUL",
            field: "lines[0].sku",
            call: call!(place_order, place("k", "alice", &[(&nul("BOOK"), 1)])),
        },
        Hostile {
            what: "PlaceOrder 10 kB sku",
            field: "lines[0].sku",
            call: call!(place_order, place("k", "alice", &[(&ten_kb(), 1)])),
        },
        Hostile {
            what: "PlaceOrder quantity u32::MAX",
            field: "lines[0].quantity",
            call: call!(place_order, place("k", "alice", &[("BOOK", u32::MAX)])),
        },
        Hostile {
            what: "GetOrder order id with NUL",
            field: "order_id",
            call: call!(get_order, get(nul("0190a8d2-0000-7000-8000-000000000000"))),
        },
        Hostile {
            what: "GetOrder 10 kB order id",
            field: "order_id",
            call: call!(get_order, get(ten_kb())),
        },
        Hostile {
            what: "CancelOrder order id with NUL",
            field: "order_id",
            call: call!(cancel_order, cancel(nul("x"))),
        },
        Hostile {
            what: "CancelOrder 10 kB order id",
            field: "order_id",
            call: call!(cancel_order, cancel(ten_kb())),
        },
        Hostile {
            what: "ListOrders customer id with NUL",
            field: "customer_id",
            call: call!(list_orders, list(&nul("alice"), 0, "")),
        },
        Hostile {
            what: "ListOrders page size u32::MAX",
            field: "page_size",
            call: call!(list_orders, list("alice", u32::MAX, "")),
        },
        Hostile {
            what: "ListOrders garbage page token",
            field: "page_token",
            call: call!(list_orders, list("alice", 0, "garbage")),
        },
        Hostile {
            what: "ListOrders page token with NUL",
            field: "page_token",
            call: call!(list_orders, list("alice", 0, &nul("1_"))),
        },
        Hostile {
            what: "ListOrders page token at i64::MAX",
            field: "page_token",
            call: call!(
                list_orders,
                list(
                    "alice",
                    0,
                    &format!("{}_{}", i64::MAX, uuid::Uuid::nil().simple())
                )
            ),
        },
        Hostile {
            what: "ListOrders 10 kB page token",
            field: "page_token",
            call: call!(list_orders, list("alice", 0, &ten_kb())),
        },
    ];
    let mut wrong = Vec::new();
    for case in cases {
        match case.call {
            Err(status)
                if status.code() == Code::InvalidArgument
                    && status.get_details_bad_request().is_some_and(|b| {
                        b.field_violations.iter().any(|v| v.field == case.field)
                    }) => {}
            other => wrong.push(format!(
                "{}: expected INVALID_ARGUMENT naming {}, got {other:?}",
                case.what, case.field
            )),
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    let page = app
        .orders
        .list_orders(list("alice", 0, ""))
        .await
        .unwrap()
        .into_inner();
    assert!(page.orders.is_empty(), "no hostile order got in");
}

#[tokio::test]
async fn reflection_lists_only_what_this_port_serves() {
    let app = spawn_app(None).await;
    let (v1, v1alpha) = shop_testkit::reflected_services(&app.order_addr)
        .await
        .unwrap();
    let expected = [
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
        "shop.order.v1.OrderService",
    ];
    assert_eq!(v1, expected);
    assert_eq!(v1alpha, expected);
}

/// The value of an unlabelled series in the Prometheus text at `addr`'s `/metrics`.
async fn metric(addr: std::net::SocketAddr, series: &str) -> Option<f64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await
        .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).await.ok()?;
    text.lines().find_map(|line| {
        line.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

#[tokio::test]
async fn the_oldest_pending_orders_age_rises_while_its_saga_waits() {
    // Payment never answers (the test plays payment and stays silent): the order stays PENDING,
    // and the saga-age gauge, read by the sweeper every 100 ms, rises with the time it waits.
    let mut app = spawn_app_with(None, |s| {
        s.saga_deadline = Duration::from_secs(600);
        s.saga_sweep_interval = Duration::from_millis(100);
    })
    .await;
    app.product("BOOK", 1000, 10).await;
    let addr = app.metrics_addr;
    let age = move || metric(addr, "shop_orders_pending_oldest_age_seconds");
    assert_eq!(age().await, Some(0.0), "no order yet");
    let placed = Instant::now();
    let id = app
        .orders
        .place_order(place("age-1", "erin", &[("BOOK", 1)]))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap()
        .order_id;
    let first =
        shop_testkit::eventually("a pending order's age", Duration::from_secs(10), || async {
            age().await.filter(|age| *age > 0.0)
        })
        .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let later = age().await.unwrap();
    assert!(
        later >= first + 1.0 && later <= placed.elapsed().as_secs_f64() + 1.0,
        "the age rises with the wait: {first} s, then {later} s, {:?} after placing",
        placed.elapsed()
    );
    assert_eq!(
        metric(addr, "shop_orders_pending_overdue").await,
        Some(0.0),
        "not past the deadline"
    );
    // The saga ends (the customer cancels): nothing is pending, the age is back to 0.
    app.cancel(&id).await.unwrap();
    shop_testkit::eventually("no pending order", Duration::from_secs(10), || async {
        (age().await == Some(0.0)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn orders_past_their_deadline_are_cancelled_once_by_any_replica() {
    // Payment never answers here (the test plays payment and stays silent): every order waits
    // for its capture until the deadline. Two replicas sweep the same database, in small
    // batches; each order is cancelled exactly once, with reason TIMEOUT, and compensated
    // through OrderCancelled like any other cancellation.
    let mut app = spawn_app_with(None, |s| {
        s.saga_deadline = Duration::from_secs(2);
        s.saga_sweep_interval = Duration::from_millis(100);
        s.saga_sweep_batch = 3;
    })
    .await;
    let replica = shop_testkit::service::spawn::<Orders>(app.settings.clone(), &app.stop).await;
    let replica_metrics = replica.metrics_addr;
    app.product("BOOK", 1000, 100).await;
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(
            app.orders
                .place_order(place(&format!("k-{i}"), "erin", &[("BOOK", 1)]))
                .await
                .unwrap()
                .into_inner()
                .order
                .unwrap()
                .order_id,
        );
    }
    let age = shop_testkit::eventually(
        "the oldest pending order's age",
        Duration::from_secs(10),
        || async {
            metric(app.metrics_addr, "shop_orders_pending_oldest_age_seconds")
                .await
                .filter(|age| *age > 0.0)
        },
    )
    .await;
    assert!(age < 60.0, "{age}");
    for id in &ids {
        let order = app.wait_for(id, pb::OrderStatus::Cancelled).await;
        assert_eq!(order.cancellation_reason(), pb::CancellationReason::Timeout);
        let cancellations = order
            .history
            .iter()
            .filter(|h| h.status() == pb::OrderStatus::Cancelled)
            .count();
        assert_eq!(cancellations, 1, "{id}: {:?}", order.history);
    }
    let events = app.order_events(60).await;
    for id in &ids {
        // Cancelled once. On a slow machine inventory may reserve only after the deadline: then
        // its late StockReserved is answered with a release request.
        let steps = types(&events, id);
        assert!(
            steps == ["OrderPlaced", "PaymentRequested", "OrderCancelled"]
                || steps == ["OrderPlaced", "OrderCancelled", "StockReleaseRequested"],
            "{id}: {steps:?}"
        );
    }
    let cancelled = pb::OrderCancelled::decode(
        events
            .iter()
            .find(|r| r.header("ce_type") == Some("shop.order.v1.OrderCancelled"))
            .unwrap()
            .payload
            .as_slice(),
    )
    .unwrap();
    assert_eq!(cancelled.reason(), pb::CancellationReason::Timeout);
    // Inventory released every unit on OrderCancelled.
    shop_testkit::eventually("stock released", Duration::from_secs(30), || {
        let mut inventory = app.inventory.clone();
        async move {
            let p = inventory
                .get_product(inventory_pb::GetProductRequest { sku: "BOOK".into() })
                .await
                .ok()?
                .into_inner()
                .product?;
            (p.reserved == 0).then_some(())
        }
    })
    .await;
    // Both replicas report no order pending past the deadline, and the cancellations add up.
    for addr in [app.metrics_addr, replica_metrics] {
        assert_eq!(metric(addr, "shop_orders_pending_overdue").await, Some(0.0));
    }
    let timeouts = metric(
        app.metrics_addr,
        "shop_orders_cancelled_total{reason=\"timeout\"}",
    )
    .await
    .unwrap()
        + metric(
            replica_metrics,
            "shop_orders_cancelled_total{reason=\"timeout\"}",
        )
        .await
        .unwrap();
    assert_eq!(timeouts, 20.0);
}

#[tokio::test]
async fn the_order_service_prices_with_its_own_token_not_the_callers() {
    // The order service's token file holds a token inventory does not trust (signed by another
    // key under the right key id). The caller's own token is good, and would be accepted by
    // inventory too: if it were forwarded, pricing would work.
    let dir = std::env::temp_dir().join(format!(
        "shop-order-token-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let forged = dir.join("order-service.token");
    std::fs::write(
        &forged,
        test_auth().issuer().impostor().service("order-service"),
    )
    .unwrap();
    let mut app = spawn_app_with(None, |s| s.service_token_file = Some(forged.clone())).await;
    app.product("BOOK", 1000, 5).await;
    let status = app
        .orders
        .place_order(place("own-token", "erin", &[("BOOK", 1)]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("Unauthenticated"),
        "inventory refused the order service's token: {}",
        status.message()
    );

    // Without a token file the service does not start: it has no identity to call with.
    let error = Application::build(
        Settings {
            service_token_file: None,
            ..app.settings.clone()
        },
        &CancellationToken::new(),
    )
    .await
    .unwrap_err();
    assert!(
        error.to_string().contains("ORDER_SERVICE_TOKEN_FILE"),
        "{error}"
    );
}
