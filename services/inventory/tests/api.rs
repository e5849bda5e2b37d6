//! The inventory service as a client sees it: real gRPC over loopback, its own database, a real
//! Kafka-protocol broker; order events arrive through a real outbox and relay.

use std::time::Duration;

use inventory_service::config::Settings;
use inventory_service::startup::Inventory;
use prost::Message;
use shop_eventing::{KafkaConfig, NewEvent, Outbox, Relay, RelayConfig};
use shop_proto::common::v1::Money;
use shop_proto::inventory::v1 as pb;
use shop_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use shop_proto::order::v1 as order_pb;
use shop_runtime::skeleton::Service as _;
use shop_testkit::{Authed, Record, TestDb, TestKafka, connect_authed, test_auth};
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic_types::StatusExt;

struct TestApp {
    client: InventoryServiceClient<Authed>,
    db: TestDb,
    kafka: TestKafka,
    order_topic: String,
    inventory_topic: String,
    // The order side: its own database, outbox and relay publishing order events.
    order_db: TestDb,
    order_outbox: Outbox,
    /// The consumer's name (its inbox rows carry it).
    consumer: String,
    stop: CancellationToken,
    addr: std::net::SocketAddr,
    metrics_addr: std::net::SocketAddr,
    /// The service's own pool, which its API calls use.
    api_pool: sqlx::PgPool,
}

async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// The service with settings that `edit` changed.
async fn spawn_app_with(edit: impl FnOnce(&mut Settings)) -> TestApp {
    shop_telemetry::init_for_tests();
    let db = TestDb::create().await;
    let kafka = TestKafka::start();
    let order_topic = TestKafka::unique_topic("order-events");
    let inventory_topic = TestKafka::unique_topic("inventory-events");
    kafka.create_topic(&order_topic, 3).await;
    kafka.create_topic(&inventory_topic, 3).await;
    let mut settings = Settings::for_test(shop_testkit::service::service_settings(
        &Inventory::IDENTITY,
        db.url(),
        &kafka,
    ));
    settings.order_events_topic = order_topic.clone();
    settings.inventory_events_topic = inventory_topic.clone();
    edit(&mut settings);
    let consumer = settings.service.consumer_group.clone();
    let stop = CancellationToken::new();
    let app = shop_testkit::service::spawn::<Inventory>(settings, &stop).await;
    let (addr, metrics_addr, api_pool) = (app.addr, app.metrics_addr, app.pool.clone());

    let order_db = TestDb::create().await;
    shop_eventing::migrate(&order_db.pool).await.unwrap();
    let relay = Relay::new(
        order_db.connect_options(),
        &KafkaConfig::new(kafka.bootstrap_servers()),
        RelayConfig::default(),
    )
    .unwrap();
    let order_outbox = Outbox::new("/shop/order-service").waking(relay.waker());
    let relay_stop = stop.clone();
    tokio::spawn(async move { relay.run(relay_stop).await });

    let client = InventoryServiceClient::new(
        connect_authed(&format!("http://{addr}"), &test_auth().operator())
            .await
            .unwrap(),
    );
    TestApp {
        client,
        db,
        kafka,
        order_topic,
        inventory_topic,
        order_db,
        order_outbox,
        consumer,
        stop,
        addr,
        metrics_addr,
        api_pool,
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn eur(amount_minor: i64) -> Option<Money> {
    Some(Money {
        amount_minor,
        currency: "EUR".into(),
    })
}

impl TestApp {
    async fn product(&mut self, sku: &str, price: i64, stock: i64) {
        self.client
            .upsert_product(pb::UpsertProductRequest {
                sku: sku.into(),
                name: format!("Product {sku}"),
                unit_price: eur(price),
            })
            .await
            .unwrap();
        if stock != 0 {
            self.client
                .adjust_stock(pb::AdjustStockRequest {
                    sku: sku.into(),
                    delta: stock,
                    reason: "initial stock".into(),
                })
                .await
                .unwrap();
        }
    }

    async fn get(&mut self, sku: &str) -> pb::Product {
        self.client
            .get_product(pb::GetProductRequest { sku: sku.into() })
            .await
            .unwrap()
            .into_inner()
            .product
            .unwrap()
    }

    /// Publishes order events the way the order service does: appended in a transaction,
    /// relayed from its outbox.
    async fn publish<M: Message + prost::Name>(&self, order_id: &str, event: &M) {
        // As a service's call does: the relay is woken once the transaction committed.
        shop_eventing::committing(async {
            let mut tx = self.order_db.pool.begin().await?;
            self.order_outbox
                .append(&mut tx, NewEvent::new(&self.order_topic, order_id, event))
                .await?;
            tx.commit().await
        })
        .await
        .unwrap();
    }

    /// Waits until the service has settled `count` order events in all: applied (an inbox
    /// row, also for those that change nothing), dead-lettered (a dead-letter row), or passed
    /// over as a type inventory does not handle (no row: counted by its consumer's
    /// `outcome="ignored"`).
    async fn applied(&self, count: i64) {
        let (pool, consumer) = (self.db.pool.clone(), self.consumer.clone());
        let metrics = self.metrics_addr;
        shop_testkit::eventually(
            &format!("{count} order events applied"),
            Duration::from_secs(30),
            || {
                let (pool, consumer) = (pool.clone(), consumer.clone());
                async move {
                    let rows: i64 = sqlx::query_scalar(
                        "SELECT (SELECT count(*) FROM eventing_inbox WHERE consumer = $1) \
                         + (SELECT count(*) FROM eventing_dead_letter WHERE consumer = $1)",
                    )
                    .bind(&consumer)
                    .fetch_one(&pool)
                    .await
                    .ok()?;
                    let ignored = shop_testkit::scrape_metric(
                        metrics,
                        "shop_consumer_messages_total",
                        &[("group", &consumer), ("outcome", "ignored")],
                    )
                    .await?;
                    (rows + ignored as i64 >= count).then_some(())
                }
            },
        )
        .await;
    }

    async fn reservation(&self, order_id: &str) -> Option<String> {
        sqlx::query_scalar("SELECT status FROM reservations WHERE order_id = $1")
            .bind(order_id)
            .fetch_optional(&self.db.pool)
            .await
            .unwrap()
    }

    async fn inventory_events(&self, count: usize) -> Vec<Record> {
        self.kafka
            .read_all(
                &self.inventory_topic,
                count,
                Duration::from_secs(30),
                Duration::from_secs(1),
            )
            .await
    }
}

fn placed(order_id: &str, lines: &[(&str, u32)]) -> order_pb::OrderPlaced {
    order_pb::OrderPlaced {
        order_id: order_id.into(),
        customer_id: "alice".into(),
        lines: lines
            .iter()
            .map(|(sku, q)| order_pb::OrderLine {
                sku: (*sku).into(),
                quantity: *q,
                unit_price: eur(100),
            })
            .collect(),
        total: eur(100),
    }
}

fn of_type<'a>(records: &'a [Record], type_name: &str) -> Vec<&'a Record> {
    records
        .iter()
        .filter(|r| r.header("ce_type") == Some(type_name))
        .collect()
}

#[tokio::test]
async fn the_catalog_is_managed_over_grpc() {
    let mut app = spawn_app().await;
    app.product("SKU-B", 250, 7).await;
    app.product("SKU-A", 1999, 3).await;
    // Upsert changes name and price, not stock.
    app.client
        .upsert_product(pb::UpsertProductRequest {
            sku: "SKU-A".into(),
            name: "Renamed".into(),
            unit_price: eur(2099),
        })
        .await
        .unwrap();
    let a = app.get("SKU-A").await;
    assert_eq!(
        (
            a.name.as_str(),
            a.unit_price.unwrap().amount_minor,
            a.on_hand,
            a.available
        ),
        ("Renamed", 2099, 3, 3)
    );

    let page = app
        .client
        .list_products(pb::ListProductsRequest {
            skus: vec![],
            page_size: 1,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        page.products
            .iter()
            .map(|p| p.sku.as_str())
            .collect::<Vec<_>>(),
        ["SKU-A"]
    );
    let rest = app
        .client
        .list_products(pb::ListProductsRequest {
            skus: vec![],
            page_size: 1,
            page_token: page.next_page_token,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rest.products[0].sku, "SKU-B");
    let only = app
        .client
        .list_products(pb::ListProductsRequest {
            skus: vec!["SKU-B".into(), "SKU-X".into()],
            page_size: 0,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(only.products.len(), 1);
    assert!(only.next_page_token.is_empty());

    let b = app
        .client
        .adjust_stock(pb::AdjustStockRequest {
            sku: "SKU-B".into(),
            delta: -2,
            reason: "damaged".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(b.product.unwrap().on_hand, 5);
}

#[tokio::test]
async fn bad_input_gets_a_clear_status_with_field_details() {
    let mut app = spawn_app().await;
    let status = app
        .client
        .upsert_product(pb::UpsertProductRequest {
            sku: "bad sku".into(),
            name: " ".into(),
            unit_price: Some(Money {
                amount_minor: -1,
                currency: "eur".into(),
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let fields: Vec<String> = status
        .get_details_bad_request()
        .unwrap()
        .field_violations
        .into_iter()
        .map(|v| v.field)
        .collect();
    assert_eq!(fields, ["sku", "name", "unit_price.amount_minor"]);

    let status = app
        .client
        .upsert_product(pb::UpsertProductRequest {
            sku: "A".into(),
            name: "A".into(),
            unit_price: None,
        })
        .await
        .unwrap_err();
    assert_eq!(
        status.get_details_bad_request().unwrap().field_violations[0].field,
        "unit_price"
    );

    let status = app
        .client
        .get_product(pb::GetProductRequest { sku: "NOPE".into() })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(
        status.get_details_resource_info().unwrap().resource_name,
        "NOPE"
    );

    let status = app
        .client
        .adjust_stock(pb::AdjustStockRequest {
            sku: "A".into(),
            delta: 0,
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        status
            .get_details_bad_request()
            .unwrap()
            .field_violations
            .len(),
        2
    );

    let status = app
        .client
        .list_products(pb::ListProductsRequest {
            skus: vec!["ok".into(), "n o".into()],
            page_size: 501,
            page_token: String::new(),
        })
        .await
        .unwrap_err();
    let fields: Vec<String> = status
        .get_details_bad_request()
        .unwrap()
        .field_violations
        .into_iter()
        .map(|v| v.field)
        .collect();
    assert_eq!(fields, ["page_size", "skus[1]"]);

    // Removing reserved units is refused.
    app.product("SKU-R", 100, 2).await;
    app.publish("order-r", &placed("order-r", &[("SKU-R", 2)]))
        .await;
    app.inventory_events(1).await;
    let status = app
        .client
        .adjust_stock(pb::AdjustStockRequest {
            sku: "SKU-R".into(),
            delta: -1,
            reason: "stocktake".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(
        status
            .get_details_precondition_failure()
            .unwrap()
            .violations[0]
            .r#type,
        "STOCK_RESERVED"
    );
}

#[tokio::test]
async fn an_order_reserves_then_sells_or_releases_its_stock() {
    let mut app = spawn_app().await;
    app.product("SKU-1", 100, 10).await;
    app.product("SKU-2", 100, 5).await;

    app.publish(
        "order-1",
        &placed("order-1", &[("SKU-1", 3), ("SKU-2", 1), ("SKU-1", 1)]),
    )
    .await;
    app.publish("order-2", &placed("order-2", &[("SKU-1", 2)]))
        .await;
    let events = app.inventory_events(2).await;
    let reserved = of_type(&events, "shop.inventory.v1.StockReserved");
    assert_eq!(reserved.len(), 2);
    let first = pb::StockReserved::decode(
        reserved
            .iter()
            .find(|r| r.key.as_deref() == Some("order-1"))
            .unwrap()
            .payload
            .as_slice(),
    )
    .unwrap();
    assert_eq!(
        first
            .lines
            .iter()
            .map(|l| (l.sku.as_str(), l.quantity))
            .collect::<Vec<_>>(),
        [("SKU-1", 4), ("SKU-2", 1)]
    );
    let one = app.get("SKU-1").await;
    assert_eq!(
        (one.on_hand, one.reserved, one.sold, one.available),
        (10, 6, 0, 4)
    );

    // order-1 is confirmed (sold), order-2 cancelled (released); then order-1 is cancelled after
    // confirmation (returned).
    app.publish(
        "order-1",
        &order_pb::OrderConfirmed {
            order_id: "order-1".into(),
            ..Default::default()
        },
    )
    .await;
    app.publish(
        "order-2",
        &order_pb::OrderCancelled {
            order_id: "order-2".into(),
            ..Default::default()
        },
    )
    .await;
    let events = app.inventory_events(3).await;
    assert_eq!(of_type(&events, "shop.inventory.v1.StockReleased").len(), 1);
    let one = app.get("SKU-1").await;
    assert_eq!((one.on_hand, one.reserved, one.sold), (6, 0, 4));

    app.publish(
        "order-1",
        &order_pb::OrderCancelled {
            order_id: "order-1".into(),
            was_confirmed: true,
            ..Default::default()
        },
    )
    .await;
    let events = app.inventory_events(4).await;
    let released = of_type(&events, "shop.inventory.v1.StockReleased");
    assert_eq!(released.len(), 2);
    let returned = pb::StockReleased::decode(
        released
            .iter()
            .find(|r| r.key.as_deref() == Some("order-1"))
            .unwrap()
            .payload
            .as_slice(),
    )
    .unwrap();
    assert!(returned.was_sold);
    let (one, two) = (app.get("SKU-1").await, app.get("SKU-2").await);
    assert_eq!(
        (one.on_hand, one.reserved, one.sold),
        (10, 0, 0),
        "every unit back"
    );
    assert_eq!((two.on_hand, two.reserved, two.sold), (5, 0, 0));
}

/// A burst of API calls can hold every connection of the service's pool (each call waiting for
/// one) and the saga still advances: the consumer has connections of its own.
#[tokio::test]
async fn the_saga_advances_while_api_calls_hold_every_pooled_connection() {
    let mut app = spawn_app().await;
    app.product("SKU-1", 100, 10).await;
    let mut held = Vec::new();
    for _ in 0..app.api_pool.options().get_max_connections() {
        held.push(app.api_pool.acquire().await.unwrap());
    }
    app.publish("order-1", &placed("order-1", &[("SKU-1", 3)]))
        .await;
    let events = app.inventory_events(1).await;
    assert_eq!(
        of_type(&events, "shop.inventory.v1.StockReserved").len(),
        1,
        "the order's stock is reserved while the API's pool is exhausted"
    );
    assert_eq!(
        app.reservation("order-1").await.as_deref(),
        Some("reserved")
    );
    drop(held);
}

/// Past its admission limit the API refuses a call at once, with RESOURCE_EXHAUSTED and a
/// RetryInfo, instead of queuing it behind the calls in flight; health checks are not behind
/// the limit.
#[tokio::test]
async fn a_call_beyond_the_admission_limit_is_refused_at_once_with_a_retry_delay() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;

    let mut app = spawn_app_with(|settings| settings.service.api_max_in_flight = 1).await;
    app.product("SKU-1", 100, 10).await;
    // The one call admitted waits for a database connection: the test holds them all.
    let mut held = Vec::new();
    for _ in 0..app.api_pool.options().get_max_connections() {
        held.push(app.api_pool.acquire().await.unwrap());
    }
    // Two calls at once: one is admitted and waits for a connection, the other is refused
    // (whichever reaches the limit second).
    let call = |mut client: InventoryServiceClient<Authed>| {
        tokio::spawn(async move {
            client
                .get_product(pb::GetProductRequest {
                    sku: "SKU-1".into(),
                })
                .await
        })
    };
    let mut calls = [call(app.client.clone()), call(app.client.clone())];
    let (first, index, _) = futures::future::select_all(calls.iter_mut()).await;
    let refused = first
        .unwrap()
        .expect_err("the call beyond the limit is refused");
    let in_flight = &mut calls[1 - index];
    assert!(
        !in_flight.is_finished(),
        "refused while the admitted call still waits"
    );
    shop_testkit::service::assert_overloaded(&refused);
    let mut health = HealthClient::new(
        tonic::transport::Channel::from_shared(format!("http://{}", app.addr))
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );
    health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health answers at the limit");

    drop(held);
    let admitted = in_flight
        .await
        .unwrap()
        .expect("the admitted call succeeds");
    assert_eq!(admitted.into_inner().product.unwrap().sku, "SKU-1");
    assert_eq!(app.get("SKU-1").await.sku, "SKU-1", "admitted again");
}

#[tokio::test]
async fn an_order_that_does_not_fit_reserves_nothing() {
    let mut app = spawn_app().await;
    app.product("SKU-1", 100, 10).await;
    app.product("SKU-2", 100, 1).await;
    app.publish(
        "order-1",
        &placed("order-1", &[("SKU-1", 2), ("SKU-2", 2), ("GHOST", 1)]),
    )
    .await;
    let events = app.inventory_events(1).await;
    assert_eq!(events.len(), 1);
    let rejected = pb::StockRejected::decode(
        of_type(&events, "shop.inventory.v1.StockRejected")[0]
            .payload
            .as_slice(),
    )
    .unwrap();
    let reasons: Vec<_> = rejected
        .lines
        .iter()
        .map(|l| (l.sku.as_str(), l.requested, l.available, l.reason()))
        .collect();
    assert_eq!(
        reasons,
        [
            ("GHOST", 1, 0, pb::RejectionReason::UnknownSku),
            ("SKU-2", 2, 1, pb::RejectionReason::InsufficientStock)
        ]
    );
    assert_eq!(app.get("SKU-1").await.reserved, 0, "all or nothing");
    // Cancelling it afterwards has nothing to release.
    app.publish(
        "order-1",
        &order_pb::OrderCancelled {
            order_id: "order-1".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(app.inventory_events(1).await.len(), 1);
}

#[tokio::test]
async fn fifty_concurrent_orders_for_ten_units_never_oversell() {
    let mut app = spawn_app().await;
    app.product("LAST", 100, 10).await;
    let mut tx = app.order_db.pool.begin().await.unwrap();
    for i in 0..50 {
        let id = format!("order-{i}");
        app.order_outbox
            .append(
                &mut tx,
                NewEvent::new(&app.order_topic, &id, &placed(&id, &[("LAST", 1)])),
            )
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    let events = app.inventory_events(50).await;
    assert_eq!(events.len(), 50);
    assert_eq!(
        of_type(&events, "shop.inventory.v1.StockReserved").len(),
        10
    );
    assert_eq!(
        of_type(&events, "shop.inventory.v1.StockRejected").len(),
        40
    );
    let last = app.get("LAST").await;
    assert_eq!((last.on_hand, last.reserved, last.available), (10, 10, 0));
    let reservations: i64 =
        sqlx::query_scalar("SELECT count(*) FROM reservations WHERE status = 'reserved'")
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(reservations, 10);
}

#[tokio::test]
async fn health_reports_serving_then_stops_serving_on_shutdown() {
    let app = spawn_app().await;
    shop_testkit::service::assert_serves_then_drains(
        app.addr,
        "shop.inventory.v1.InventoryService",
        &app.stop,
    )
    .await;
}

fn cancelled(order_id: &str) -> order_pb::OrderCancelled {
    order_pb::OrderCancelled {
        order_id: order_id.into(),
        customer_id: "alice".into(),
        reason: order_pb::CancellationReason::CustomerCancelled.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn an_order_placed_after_its_cancellation_holds_no_stock() {
    // The order was cancelled before inventory applied its OrderPlaced (a dead letter re-driven
    // after the cancellation, a replay): the release finds nothing, and must leave a tombstone
    // so that the late OrderPlaced reserves nothing that nobody would ever release.
    let mut app = spawn_app().await;
    app.product("SKU-1", 100, 10).await;
    app.publish("order-late", &cancelled("order-late")).await;
    app.applied(1).await;
    app.publish("order-late", &placed("order-late", &[("SKU-1", 3)]))
        .await;
    app.applied(2).await;
    let one = app.get("SKU-1").await;
    assert_eq!(
        (one.on_hand, one.reserved, one.available),
        (10, 0, 10),
        "no unit held for a cancelled order"
    );
    assert_eq!(
        app.reservation("order-late").await.as_deref(),
        Some("cancelled"),
        "the release left a tombstone"
    );
    // An order that was never cancelled still reserves.
    app.publish("order-ok", &placed("order-ok", &[("SKU-1", 2)]))
        .await;
    let events = app.inventory_events(1).await;
    assert_eq!(
        events
            .iter()
            .map(|r| (r.key.as_deref().unwrap(), r.header("ce_type").unwrap()))
            .collect::<Vec<_>>(),
        [("order-ok", "shop.inventory.v1.StockReserved")],
        "nothing was said about the cancelled order"
    );
    assert_eq!(app.get("SKU-1").await.reserved, 2);
}

#[tokio::test]
async fn a_release_request_releases_a_late_reservation_once() {
    // The order service asks for a release when a StockReserved reaches an order it already
    // cancelled (a late reply).
    let mut app = spawn_app().await;
    app.product("SKU-1", 100, 10).await;
    app.publish("order-1", &placed("order-1", &[("SKU-1", 4)]))
        .await;
    app.inventory_events(1).await;
    assert_eq!(app.get("SKU-1").await.reserved, 4);
    let request = order_pb::StockReleaseRequested {
        order_id: "order-1".into(),
    };
    app.publish("order-1", &request).await;
    app.publish("order-1", &request).await;
    // Not inventory's business: passed over, with no inbox row.
    app.publish(
        "order-1",
        &order_pb::PaymentRequested {
            order_id: "order-1".into(),
            customer_id: "alice".into(),
            amount: eur(400),
        },
    )
    .await;
    app.applied(4).await;
    let ignored: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM eventing_inbox WHERE event_type = 'shop.order.v1.PaymentRequested'",
    )
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(
        ignored, 0,
        "no inbox row for a type inventory does not handle"
    );
    let events = app.inventory_events(2).await;
    assert_eq!(
        of_type(&events, "shop.inventory.v1.StockReleased").len(),
        1,
        "released once: {events:?}"
    );
    let one = app.get("SKU-1").await;
    assert_eq!((one.on_hand, one.reserved, one.sold), (10, 0, 0));
    assert_eq!(
        app.reservation("order-1").await.as_deref(),
        Some("released")
    );
    // A release request for an order inventory never saw closes it too.
    app.publish(
        "order-2",
        &order_pb::StockReleaseRequested {
            order_id: "order-2".into(),
        },
    )
    .await;
    app.publish("order-2", &placed("order-2", &[("SKU-1", 1)]))
        .await;
    app.applied(6).await;
    assert_eq!(app.get("SKU-1").await.reserved, 0);
    assert_eq!(
        app.reservation("order-2").await.as_deref(),
        Some("cancelled")
    );
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
    let mut app = spawn_app().await;
    app.product("SKU-1", 100, 10).await;
    let mut client = app.client.clone();
    macro_rules! call {
        ($method:ident, $request:expr) => {
            client.$method($request).await.map(|_| ())
        };
    }
    let upsert =
        |sku: &str, name: &str, amount_minor: i64, currency: &str| pb::UpsertProductRequest {
            sku: sku.into(),
            name: name.into(),
            unit_price: Some(Money {
                amount_minor,
                currency: currency.into(),
            }),
        };
    let adjust = |sku: &str, delta: i64, reason: &str| pb::AdjustStockRequest {
        sku: sku.into(),
        delta,
        reason: reason.into(),
    };
    let list = |skus: Vec<String>, page_size: u32, page_token: &str| pb::ListProductsRequest {
        skus,
        page_size,
        page_token: page_token.into(),
    };
    let cases = vec![
        Hostile {
            what: "UpsertProduct sku with NUL",
            field: "sku",
            call: call!(upsert_product, upsert(&nul("A"), "Lamp", 100, "EUR")),
        },
        Hostile {
            what: "UpsertProduct name with NUL",
            field: "name",
            call: call!(upsert_product, upsert("SKU-N", &nul("Lamp"), 100, "EUR")),
        },
        Hostile {
            what: "UpsertProduct 10 kB name",
            field: "name",
            call: call!(upsert_product, upsert("SKU-N", &ten_kb(), 100, "EUR")),
        },
        Hostile {
            what: "UpsertProduct 10 kB sku",
            field: "sku",
            call: call!(upsert_product, upsert(&ten_kb(), "Lamp", 100, "EUR")),
        },
        Hostile {
            what: "UpsertProduct price i64::MAX",
            field: "unit_price.amount_minor",
            call: call!(upsert_product, upsert("SKU-N", "Lamp", i64::MAX, "EUR")),
        },
        Hostile {
            what: "UpsertProduct negative price",
            field: "unit_price.amount_minor",
            call: call!(upsert_product, upsert("SKU-N", "Lamp", i64::MIN, "EUR")),
        },
        Hostile {
            what: "UpsertProduct currency with NUL",
            field: "unit_price.currency",
            call: call!(upsert_product, upsert("SKU-N", "Lamp", 100, "EU\0")),
        },
        Hostile {
            what: "GetProduct sku with NUL",
            field: "sku",
            call: call!(get_product, pb::GetProductRequest { sku: nul("SKU-1") }),
        },
        Hostile {
            what: "GetProduct 10 kB sku",
            field: "sku",
            call: call!(get_product, pb::GetProductRequest { sku: ten_kb() }),
        },
        Hostile {
            what: "ListProducts sku with NUL",
            field: "skus[0]",
            call: call!(list_products, list(vec![nul("SKU-1")], 0, "")),
        },
        Hostile {
            what: "ListProducts 10 kB sku",
            field: "skus[0]",
            call: call!(list_products, list(vec![ten_kb()], 0, "")),
        },
        Hostile {
            what: "ListProducts page size u32::MAX",
            field: "page_size",
            call: call!(list_products, list(vec![], u32::MAX, "")),
        },
        Hostile {
            what: "ListProducts garbage page token",
            field: "page_token",
            call: call!(list_products, list(vec![], 0, "garbage")),
        },
        Hostile {
            what: "ListProducts page token with NUL",
            field: "page_token",
            call: call!(list_products, list(vec![], 0, &nul("SKU"))),
        },
        Hostile {
            what: "ListProducts 10 kB page token",
            field: "page_token",
            call: call!(list_products, list(vec![], 0, &ten_kb())),
        },
        Hostile {
            what: "AdjustStock delta i64::MAX",
            field: "delta",
            call: call!(adjust_stock, adjust("SKU-1", i64::MAX, "delivery")),
        },
        Hostile {
            what: "AdjustStock delta i64::MIN",
            field: "delta",
            call: call!(adjust_stock, adjust("SKU-1", i64::MIN, "stocktake")),
        },
        Hostile {
            what: "AdjustStock reason with NUL",
            field: "reason",
            call: call!(adjust_stock, adjust("SKU-1", 1, &nul("delivery"))),
        },
        Hostile {
            what: "AdjustStock 10 kB reason",
            field: "reason",
            call: call!(adjust_stock, adjust("SKU-1", 1, &ten_kb())),
        },
        Hostile {
            what: "AdjustStock sku with NUL",
            field: "sku",
            call: call!(adjust_stock, adjust(&nul("SKU-1"), 1, "delivery")),
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
    // Nothing hostile got in, and the stock is as it was.
    let one = app.get("SKU-1").await;
    assert_eq!((one.on_hand, one.reserved), (10, 0));
    let products: i64 = sqlx::query_scalar("SELECT count(*) FROM products")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(products, 1);
}

#[tokio::test]
async fn stock_arithmetic_never_overflows() {
    // Reproduced on the old code: delta 2^63-1 panicked the handler (debug) or wrapped (release).
    let mut app = spawn_app().await;
    app.product("SKU-1", 100, 10).await;
    // The most units a product may have on hand, and the largest delta, reached in one step;
    // one more step would pass the bound.
    let max = inventory_service::domain::MAX_UNITS;
    app.client
        .adjust_stock(pb::AdjustStockRequest {
            sku: "SKU-1".into(),
            delta: max - 10,
            reason: "big delivery".into(),
        })
        .await
        .unwrap();
    let status = app
        .client
        .adjust_stock(pb::AdjustStockRequest {
            sku: "SKU-1".into(),
            delta: max,
            reason: "another".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert_eq!(
        status
            .get_details_precondition_failure()
            .unwrap()
            .violations[0]
            .r#type,
        "STOCK_LIMIT"
    );
    assert_eq!(app.get("SKU-1").await.on_hand, max);
}

#[tokio::test]
async fn reflection_lists_only_what_this_port_serves() {
    let app = spawn_app().await;
    let (v1, v1alpha) = shop_testkit::reflected_services(&format!("http://{}", app.addr))
        .await
        .unwrap();
    let expected = [
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
        "shop.inventory.v1.InventoryService",
    ];
    assert_eq!(v1, expected);
    assert_eq!(v1alpha, expected);
}
