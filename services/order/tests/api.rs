//! The order service as a client sees it: real gRPC over loopback, its own database, the real
//! inventory service pricing orders and reserving stock, a real Kafka-protocol broker; payment's
//! replies are published through a real outbox and relay.

use std::time::{Duration, Instant};

use order_service::config::Settings;
use order_service::startup::Application;
use prost::Message;
use shop_eventing::{KafkaConfig, NewEvent, Outbox, Relay, RelayConfig};
use shop_proto::common::v1::Money;
use shop_proto::inventory::v1 as inventory_pb;
use shop_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use shop_proto::order::v1 as pb;
use shop_proto::order::v1::order_service_client::OrderServiceClient;
use shop_proto::payment::v1 as payment_pb;
use shop_testkit::{Record, TestDb, TestKafka};
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::transport::Channel;
use tonic_types::StatusExt;

struct TestApp {
    orders: OrderServiceClient<Channel>,
    inventory: InventoryServiceClient<Channel>,
    kafka: TestKafka,
    order_topic: String,
    payment_topic: String,
    payment_db: TestDb,
    /// Payment's outbox, waking its relay.
    payment_outbox: Outbox,
    stop: CancellationToken,
    _dbs: Vec<TestDb>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn spawn_app(inventory_url: Option<&str>) -> TestApp {
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
    let inventory = inventory_service::startup::Application::build(
        inventory_service::config::Settings {
            grpc_addr: "127.0.0.1:0".parse().unwrap(),
            metrics_addr: "127.0.0.1:0".parse().unwrap(),
            database_url: inventory_db.url(),
            db_max_connections: 10,
            kafka_bootstrap_servers: kafka.bootstrap_servers().to_owned(),
            order_events_topic: order_topic.clone(),
            inventory_events_topic: inventory_topic.clone(),
            consumer_group: format!("inventory-{}", uuid::Uuid::new_v4().simple()),
            request_timeout: Duration::from_secs(10),
            session_timeout: Duration::from_secs(6),
        },
        &stop,
    )
    .await
    .unwrap();
    let inventory_addr = format!("http://{}", inventory.local_addr());
    tokio::spawn(inventory.run(stop.clone()));

    let order_db = TestDb::create().await;
    let app = Application::build(
        Settings {
            grpc_addr: "127.0.0.1:0".parse().unwrap(),
            metrics_addr: "127.0.0.1:0".parse().unwrap(),
            database_url: order_db.url(),
            db_max_connections: 10,
            inventory_url: inventory_url.unwrap_or(&inventory_addr).to_owned(),
            inventory_deadline: Duration::from_millis(500),
            breaker_failures: 2,
            breaker_open_for: Duration::from_secs(30),
            kafka_bootstrap_servers: kafka.bootstrap_servers().to_owned(),
            order_events_topic: order_topic.clone(),
            inventory_events_topic: inventory_topic,
            payment_events_topic: payment_topic.clone(),
            consumer_group: format!("order-{}", uuid::Uuid::new_v4().simple()),
            request_timeout: Duration::from_secs(10),
            session_timeout: Duration::from_secs(6),
        },
        &stop,
    )
    .await
    .unwrap();
    let order_addr = format!("http://{}", app.local_addr());
    tokio::spawn(app.run(stop.clone()));

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
    let relay_stop = stop.clone();
    tokio::spawn(async move { relay.run(relay_stop).await });

    TestApp {
        orders: OrderServiceClient::connect(order_addr).await.unwrap(),
        inventory: InventoryServiceClient::connect(inventory_addr)
            .await
            .unwrap(),
        kafka,
        order_topic,
        payment_topic,
        payment_db,
        payment_outbox,
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
        self.inventory
            .adjust_stock(inventory_pb::AdjustStockRequest {
                sku: sku.into(),
                delta: stock,
                reason: "initial".into(),
            })
            .await
            .unwrap();
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
    let status = app
        .orders
        .cancel_order(pb::CancelOrderRequest {
            order_id: order.order_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
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
    let mut app = spawn_app(Some(&url)).await;
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
