//! End to end: the four services (each its own database, its own gRPC server, its own relay and
//! consumers) against one Kafka-protocol broker, driven over gRPC as a client would, with the
//! cross-database audit after every test.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shop_proto::common::v1::Money;
use shop_proto::inventory::v1 as inventory;
use shop_proto::notification::v1 as notification;
use shop_proto::order::v1 as order;
use shop_proto::payment::v1 as payment;
use shop_runtime::skeleton::Service as _;
use shop_suite::audit::{Databases, ExpectedDeadLetter, audit, audit_expecting};
use shop_suite::clients::{Clients, Endpoints};
use shop_testkit::{TestDb, TestKafka};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Service {
    Order,
    Inventory,
    Payment,
    Notification,
}

/// How to (re)start each service: the settings it was first built with, on the port it got.
#[derive(Clone)]
enum Launch {
    Order(order_service::config::Settings),
    Inventory(inventory_service::config::Settings),
    Payment(payment_service::config::Settings),
    Notification(notification_service::config::Settings),
}

impl Launch {
    /// Builds and spawns the service; returns its address and its task.
    async fn spawn(
        &mut self,
        stop: &CancellationToken,
    ) -> (SocketAddr, JoinHandle<anyhow::Result<()>>) {
        macro_rules! go {
            ($service:ty, $settings:expr) => {{
                let running =
                    shop_testkit::service::spawn::<$service>($settings.clone(), stop).await;
                // A restart binds the same port, so clients reconnect to it.
                $settings.service.grpc_addr = running.addr;
                (running.addr, running.task)
            }};
        }
        match self {
            Self::Order(s) => go!(order_service::startup::Orders, s),
            Self::Inventory(s) => go!(inventory_service::startup::Inventory, s),
            Self::Payment(s) => go!(payment_service::startup::Payments, s),
            Self::Notification(s) => go!(notification_service::startup::Notifications, s),
        }
    }

    /// Its consumer group.
    fn group(&self) -> &str {
        match self {
            Self::Order(s) => &s.service.consumer_group,
            Self::Inventory(s) => &s.service.consumer_group,
            Self::Payment(s) => &s.service.consumer_group,
            Self::Notification(s) => &s.service.consumer_group,
        }
    }
}

struct Suite {
    clients: Clients,
    dbs: Databases,
    launches: HashMap<Service, Launch>,
    tasks: HashMap<Service, (CancellationToken, JoinHandle<anyhow::Result<()>>)>,
    kafka: TestKafka,
    _databases: Vec<TestDb>,
}

impl Drop for Suite {
    fn drop(&mut self) {
        for (stop, _) in self.tasks.values() {
            stop.cancel();
        }
    }
}

fn eur(amount_minor: i64) -> Option<Money> {
    Some(Money {
        amount_minor,
        currency: "EUR".into(),
    })
}

impl Suite {
    async fn start(webhook: Option<String>) -> Self {
        Self::start_with(webhook, Duration::from_secs(600)).await
    }

    /// The suite, with orders still PENDING after `saga_deadline` cancelled (reason TIMEOUT).
    async fn start_with(webhook: Option<String>, saga_deadline: Duration) -> Self {
        shop_telemetry::init_for_tests();
        let kafka = TestKafka::start();
        let topic = |name: &str| TestKafka::unique_topic(name);
        let (order_topic, inventory_topic, payment_topic) =
            (topic("order"), topic("inventory"), topic("payment"));
        for t in [&order_topic, &inventory_topic, &payment_topic] {
            kafka.create_topic(t, 3).await;
        }
        let (order_db, inventory_db, payment_db, notification_db) = (
            TestDb::create().await,
            TestDb::create().await,
            TestDb::create().await,
            TestDb::create().await,
        );
        let common = |identity, db: &TestDb| {
            shop_testkit::service::service_settings(identity, db.url(), &kafka)
        };

        let mut launches = HashMap::new();
        let mut inventory = inventory_service::config::Settings::for_test(common(
            &inventory_service::startup::Inventory::IDENTITY,
            &inventory_db,
        ));
        inventory.order_events_topic = order_topic.clone();
        inventory.inventory_events_topic = inventory_topic.clone();
        let mut inventory = Launch::Inventory(inventory);
        let mut tasks = HashMap::new();
        let stop = CancellationToken::new();
        let (inventory_addr, task) = inventory.spawn(&stop).await;
        tasks.insert(Service::Inventory, (stop, task));
        launches.insert(Service::Inventory, inventory);

        let mut order = order_service::config::Settings::for_test(
            common(&order_service::startup::Orders::IDENTITY, &order_db),
            format!("http://{inventory_addr}"),
        );
        order.order_events_topic = order_topic.clone();
        order.inventory_events_topic = inventory_topic.clone();
        order.payment_events_topic = payment_topic.clone();
        order.saga_deadline = saga_deadline;
        order.service_token_file =
            Some(shop_testkit::test_auth().service_token_file("order-service"));
        let mut payment = payment_service::config::Settings::for_test(common(
            &payment_service::startup::Payments::IDENTITY,
            &payment_db,
        ));
        payment.order_events_topic = order_topic.clone();
        payment.payment_events_topic = payment_topic.clone();
        let mut notification = notification_service::config::Settings::for_test(common(
            &notification_service::startup::Notifications::IDENTITY,
            &notification_db,
        ));
        notification.order_events_topic = order_topic.clone();
        notification.webhook_url = webhook.map(|u| u.parse().unwrap());
        let others = [
            (Service::Order, Launch::Order(order)),
            (Service::Payment, Launch::Payment(payment)),
            (Service::Notification, Launch::Notification(notification)),
        ];
        let mut addrs = HashMap::from([(Service::Inventory, inventory_addr)]);
        for (service, mut launch) in others {
            let stop = CancellationToken::new();
            let (addr, task) = launch.spawn(&stop).await;
            addrs.insert(service, addr);
            tasks.insert(service, (stop, task));
            launches.insert(service, launch);
        }
        // Every consumer's dead-letter topic, provisioned as in k8s (auto-create is off there).
        for launch in launches.values() {
            kafka
                .create_topic(&format!("{}.dlq", launch.group()), 1)
                .await;
        }
        let url = |s: Service| format!("http://{}", addrs[&s]);
        let endpoints = Endpoints {
            order: url(Service::Order),
            inventory: url(Service::Inventory),
            payment: url(Service::Payment),
            notification: url(Service::Notification),
        };
        let clients = Clients::connect(
            &endpoints,
            Duration::from_secs(30),
            &shop_testkit::test_auth().operator(),
        )
        .await
        .unwrap();
        let dbs = Databases {
            order: order_db.pool.clone(),
            inventory: inventory_db.pool.clone(),
            payment: payment_db.pool.clone(),
            notification: notification_db.pool.clone(),
        };
        Self {
            clients,
            dbs,
            launches,
            tasks,
            kafka,
            _databases: vec![order_db, inventory_db, payment_db, notification_db],
        }
    }

    /// Kills a service without warning: its tasks are dropped mid-flight (open transactions roll
    /// back, nothing is drained or committed), as when its process is SIGKILLed.
    async fn kill(&mut self, service: Service) {
        let (_, task) = self.tasks.remove(&service).unwrap();
        task.abort();
        let _ = task.await;
    }

    async fn restart(&mut self, service: Service) {
        let stop = CancellationToken::new();
        let (_, task) = self.launches.get_mut(&service).unwrap().spawn(&stop).await;
        self.tasks.insert(service, (stop, task));
    }

    async fn product(&mut self, sku: &str, price: i64, stock: i64) {
        self.clients
            .inventory
            .upsert_product(inventory::UpsertProductRequest {
                sku: sku.into(),
                name: sku.into(),
                unit_price: eur(price),
            })
            .await
            .unwrap();
        self.clients
            .inventory
            .adjust_stock(inventory::AdjustStockRequest {
                sku: sku.into(),
                delta: stock,
                reason: "initial".into(),
            })
            .await
            .unwrap();
    }

    async fn account(&mut self, customer: &str, deposit: i64, frozen: bool) {
        self.clients
            .payment
            .open_account(payment::OpenAccountRequest {
                customer_id: customer.into(),
                currency: "EUR".into(),
                frozen,
            })
            .await
            .unwrap();
        if deposit > 0 && !frozen {
            self.clients
                .payment
                .deposit(payment::DepositRequest {
                    customer_id: customer.into(),
                    amount: eur(deposit),
                    deposit_id: format!("{customer}-0"),
                })
                .await
                .unwrap();
        }
    }

    async fn place(&mut self, key: &str, customer: &str, lines: &[(&str, u32)]) -> String {
        self.clients
            .order
            .place_order(order::PlaceOrderRequest {
                idempotency_key: key.into(),
                customer_id: customer.into(),
                lines: lines
                    .iter()
                    .map(|(s, q)| order::LineRequest {
                        sku: (*s).into(),
                        quantity: *q,
                    })
                    .collect(),
            })
            .await
            .unwrap()
            .into_inner()
            .order
            .unwrap()
            .order_id
    }

    async fn terminal(&mut self, id: &str) -> order::Order {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let current = self
                .clients
                .order
                .get_order(order::GetOrderRequest {
                    order_id: id.into(),
                })
                .await
                .unwrap()
                .into_inner()
                .order
                .unwrap();
            if current.status() != order::OrderStatus::Pending {
                return current;
            }
            assert!(Instant::now() < deadline, "order {id} still pending");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn stock(&mut self, sku: &str) -> inventory::Product {
        self.clients
            .inventory
            .get_product(inventory::GetProductRequest { sku: sku.into() })
            .await
            .unwrap()
            .into_inner()
            .product
            .unwrap()
    }

    async fn balance(&mut self, customer: &str) -> i64 {
        self.clients
            .payment
            .get_account(payment::GetAccountRequest {
                customer_id: customer.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .account
            .unwrap()
            .balance
            .unwrap()
            .amount_minor
    }

    async fn notifications(&mut self, order_id: &str) -> Vec<notification::Notification> {
        self.clients
            .notification
            .list_notifications(notification::ListNotificationsRequest {
                order_id: order_id.into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .notifications
    }

    fn pool(&self, service: Service) -> &sqlx::PgPool {
        match service {
            Service::Order => &self.dbs.order,
            Service::Inventory => &self.dbs.inventory,
            Service::Payment => &self.dbs.payment,
            Service::Notification => &self.dbs.notification,
        }
    }

    fn group(&self, service: Service) -> String {
        self.launches[&service].group().to_owned()
    }

    /// Makes `service`'s database refuse rows of `table` matching `when` (a condition on NEW)
    /// with a data error (SQLSTATE 22023), as a bug or a bad migration would: the consumer
    /// applying such a row gives up on its record and dead-letters it.
    async fn break_table(&self, service: Service, table: &str, when: &str) {
        let pool = self.pool(service);
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "CREATE FUNCTION test_injected_failure() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN RAISE EXCEPTION 'injected by the test' USING ERRCODE = '22023'; END $$; \
             CREATE TRIGGER test_injected_failure BEFORE INSERT OR UPDATE ON {table} \
             FOR EACH ROW WHEN ({when}) EXECUTE FUNCTION test_injected_failure();"
        )))
        .execute(pool)
        .await
        .unwrap();
    }

    /// The cause of [`Suite::break_table`] fixed.
    async fn fix_table(&self, service: Service, table: &str) {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP TRIGGER test_injected_failure ON {table}; DROP FUNCTION test_injected_failure();"
        )))
        .execute(self.pool(service))
        .await
        .unwrap();
    }

    /// Waits until `service` has applied (or dead-lettered) `count` events of type `event_type`.
    async fn applied(&self, service: Service, event_type: &str, count: i64) {
        let pool = self.pool(service).clone();
        shop_testkit::eventually(
            &format!("{service:?} applied {count} {event_type}"),
            Duration::from_secs(60),
            || {
                let pool = pool.clone();
                async move {
                    let done: i64 = sqlx::query_scalar(
                        "SELECT (SELECT count(*) FROM eventing_inbox WHERE event_type = $1) \
                         + (SELECT count(*) FROM eventing_dead_letter WHERE event_type = $1)",
                    )
                    .bind(event_type)
                    .fetch_one(&pool)
                    .await
                    .ok()?;
                    (done >= count).then_some(())
                }
            },
        )
        .await;
    }

    /// Waits until everything `service` appended is on Kafka.
    async fn outbox_drained(&self, service: Service) {
        let pool = self.pool(service).clone();
        shop_testkit::eventually(
            &format!("{service:?}'s outbox drained"),
            Duration::from_secs(30),
            || {
                let pool = pool.clone();
                async move {
                    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM eventing_outbox")
                        .fetch_one(&pool)
                        .await
                        .ok()?;
                    (left == 0).then_some(())
                }
            },
        )
        .await;
    }

    /// The operator's re-drive of `service`'s dead letters, as docs/subscribing.md describes it
    /// (the cause fixed first): each record on its dead-letter topic has its dead-letter row
    /// deleted and goes back on its source topic with its original key, payload and headers.
    async fn redrive(&self, service: Service, count: usize) {
        use rdkafka::ClientConfig;
        use rdkafka::message::{Header, OwnedHeaders};
        use rdkafka::producer::{FutureProducer, FutureRecord};
        let dead = self
            .kafka
            .read(
                &format!("{}.dlq", self.group(service)),
                count,
                Duration::from_secs(30),
            )
            .await;
        assert_eq!(dead.len(), count, "dead letters of {service:?}: {dead:?}");
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", self.kafka.bootstrap_servers())
            .create()
            .unwrap();
        for record in dead {
            let id = record.header("ce_id").unwrap().to_owned();
            sqlx::query("DELETE FROM eventing_dead_letter WHERE event_id = $1")
                .bind(&id)
                .execute(self.pool(service))
                .await
                .unwrap();
            let mut headers = OwnedHeaders::new();
            for (name, value) in record
                .headers
                .iter()
                .filter(|(n, _)| !n.starts_with("dlq_"))
            {
                headers = headers.insert(Header {
                    key: name,
                    value: Some(value.as_bytes()),
                });
            }
            let source = record.header("dlq_source_topic").unwrap();
            let key = record.key.clone().unwrap_or_default();
            producer
                .send(
                    FutureRecord::to(source)
                        .key(&key)
                        .payload(&record.payload)
                        .headers(headers),
                    Duration::from_secs(10),
                )
                .await
                .map_err(|(e, _)| e)
                .unwrap();
        }
    }

    /// Waits until the saga has settled (every compensation applied, every notification
    /// recorded), then audits the four databases.
    async fn settle_and_audit(&self) {
        self.settle_and_audit_expecting(&[]).await;
    }

    /// [`Suite::settle_and_audit`] where the test made consumers give up on `expected` records.
    async fn settle_and_audit_expecting(&self, expected: &[ExpectedDeadLetter]) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let report = audit_expecting(&self.dbs, expected).await.unwrap();
            if report.violations.is_empty() || Instant::now() > deadline {
                report.assert_clean();
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// A webhook receiver that fails its first `fail_first` requests with 500.
async fn webhook(fail_first: usize) -> (String, Arc<Mutex<Vec<(String, String)>>>) {
    use axum::http::{HeaderMap, StatusCode};
    let received: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let seen = Arc::new(Mutex::new(0_usize));
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post({
            let received = received.clone();
            move |headers: HeaderMap, body: String| {
                let (received, seen) = (received.clone(), seen.clone());
                async move {
                    let mut n = seen.lock().unwrap();
                    *n += 1;
                    if *n <= fail_first {
                        return StatusCode::INTERNAL_SERVER_ERROR;
                    }
                    let key = headers
                        .get("idempotency-key")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_owned();
                    received.lock().unwrap().push((key, body));
                    StatusCode::OK
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, received)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn happy_path_confirms_sells_once_charges_once_and_notifies_once() {
    let (hook, received) = webhook(2).await;
    let mut suite = Suite::start(Some(hook)).await;
    suite.product("BOOK", 1250, 10).await;
    suite.account("alice", 10_000, false).await;

    let id = suite.place("alice-1", "alice", &[("BOOK", 2)]).await;
    let done = suite.terminal(&id).await;
    assert_eq!(done.status(), order::OrderStatus::Confirmed);
    // Inventory sells the reserved units when it sees OrderConfirmed; let the saga settle.
    suite.settle_and_audit().await;
    let book = suite.stock("BOOK").await;
    assert_eq!(
        (book.on_hand, book.reserved, book.sold),
        (8, 0, 2),
        "sold once"
    );
    assert_eq!(suite.balance("alice").await, 10_000 - 2500, "debited once");

    // The receiver failed the first two attempts; the notification still arrives once.
    let delivered = shop_testkit::eventually("webhook delivery", Duration::from_secs(30), || {
        let received = received.clone();
        async move {
            let received = received.lock().unwrap().clone();
            (!received.is_empty()).then_some(received)
        }
    })
    .await;
    assert_eq!(delivered.len(), 1);
    // The receiver records the request before it answers: the worker marks the notification
    // delivered only once it has the answer, a moment later.
    let marked_by = Instant::now() + Duration::from_secs(10);
    let notes = loop {
        let notes = suite.notifications(&id).await;
        let delivered = notes
            .iter()
            .all(|n| n.status() == notification::DeliveryStatus::Delivered);
        if delivered || Instant::now() > marked_by {
            break notes;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(notes.len(), 1);
    assert_eq!(
        delivered[0].0, notes[0].notification_id,
        "idempotency key = notification id"
    );
    assert_eq!(notes[0].status(), notification::DeliveryStatus::Delivered);
    assert_eq!(notes[0].attempts, 3);
    suite.settle_and_audit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_unhappy_path_ends_cancelled_with_its_reason_and_everything_restored() {
    let mut suite = Suite::start(None).await;
    suite.product("LAMP", 5000, 10).await;
    suite.account("rich", 100_000, false).await;
    suite.account("poor", 1_000, false).await;

    let short = suite.place("short", "rich", &[("LAMP", 11)]).await;
    let declined = suite.place("declined", "poor", &[("LAMP", 1)]).await;
    let early = suite.place("early", "rich", &[("LAMP", 1)]).await;
    // Cancel at once, most likely before the saga finished; the end state is the same.
    suite
        .clients
        .order
        .cancel_order(order::CancelOrderRequest {
            order_id: early.clone(),
        })
        .await
        .unwrap();
    let late = suite.place("late", "rich", &[("LAMP", 2)]).await;
    assert_eq!(
        suite.terminal(&late).await.status(),
        order::OrderStatus::Confirmed
    );
    suite
        .clients
        .order
        .cancel_order(order::CancelOrderRequest {
            order_id: late.clone(),
        })
        .await
        .unwrap();

    let reason = |o: &order::Order| o.cancellation_reason();
    assert_eq!(
        reason(&suite.terminal(&short).await),
        order::CancellationReason::OutOfStock
    );
    assert_eq!(
        reason(&suite.terminal(&declined).await),
        order::CancellationReason::PaymentDeclined
    );
    assert_eq!(
        reason(&suite.terminal(&early).await),
        order::CancellationReason::CustomerCancelled
    );
    assert_eq!(
        reason(&suite.terminal(&late).await),
        order::CancellationReason::CustomerCancelled
    );
    suite.settle_and_audit().await;

    let lamp = suite.stock("LAMP").await;
    assert_eq!(
        (lamp.on_hand, lamp.reserved, lamp.sold),
        (10, 0, 0),
        "every unit back"
    );
    assert_eq!(
        suite.balance("rich").await,
        100_000,
        "captured, then refunded"
    );
    assert_eq!(suite.balance("poor").await, 1_000, "nothing debited");
    for id in [&short, &declined, &early] {
        assert_eq!(
            suite.notifications(id).await.len(),
            1,
            "one notification for {id}"
        );
    }
    assert_eq!(
        suite.notifications(&late).await.len(),
        2,
        "confirmed, then cancelled"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_orders_for_ten_units_confirm_exactly_ten() {
    let mut suite = Suite::start(None).await;
    suite.product("LAST", 100, 10).await;
    let mut placing = Vec::new();
    for i in 0..50 {
        let customer = format!("c{i}");
        suite.account(&customer, 1_000, false).await;
        let mut client = suite.clients.order.clone();
        placing.push(tokio::spawn(async move {
            client
                .place_order(order::PlaceOrderRequest {
                    idempotency_key: format!("k{i}"),
                    customer_id: customer,
                    lines: vec![order::LineRequest {
                        sku: "LAST".into(),
                        quantity: 1,
                    }],
                })
                .await
                .unwrap()
                .into_inner()
                .order
                .unwrap()
                .order_id
        }));
    }
    let mut confirmed = 0;
    for p in placing {
        let id = p.await.unwrap();
        match suite.terminal(&id).await.status() {
            order::OrderStatus::Confirmed => confirmed += 1,
            order::OrderStatus::Cancelled => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(confirmed, 10);
    suite.settle_and_audit().await;
    let last = suite.stock("LAST").await;
    assert_eq!(
        (last.on_hand, last.reserved, last.sold),
        (0, 0, 10),
        "no oversell"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn services_killed_mid_flow_and_restarted_lose_nothing_and_apply_nothing_twice() {
    let mut suite = Suite::start(None).await;
    suite.product("BOOK", 100, 1_000).await;
    suite.account("alice", 1_000_000, false).await;
    let mut ids = Vec::new();
    for (round, victim) in [
        Service::Payment,
        Service::Inventory,
        Service::Order,
        Service::Notification,
    ]
    .into_iter()
    .enumerate()
    {
        for i in 0..10 {
            ids.push(
                suite
                    .place(&format!("r{round}-{i}"), "alice", &[("BOOK", 1)])
                    .await,
            );
        }
        suite.kill(victim).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        suite.restart(victim).await;
    }
    for id in &ids {
        assert_eq!(
            suite.terminal(id).await.status(),
            order::OrderStatus::Confirmed
        );
    }
    suite.settle_and_audit().await;
    let book = suite.stock("BOOK").await;
    assert_eq!(
        (book.on_hand, book.sold),
        (1_000 - 40, 40),
        "40 units sold, once each"
    );
    assert_eq!(
        suite.balance("alice").await,
        1_000_000 - 40 * 100,
        "40 captures, once each"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_audit_reports_every_broken_invariant() {
    let mut suite = Suite::start(None).await;
    suite.product("BOOK", 1000, 10).await;
    suite.account("alice", 10_000, false).await;
    let id = suite.place("alice-1", "alice", &[("BOOK", 1)]).await;
    assert_eq!(
        suite.terminal(&id).await.status(),
        order::OrderStatus::Confirmed
    );
    suite.settle_and_audit().await;

    // Each tampering below breaks one promise of the audit; each must be reported.
    let found = |report: &shop_suite::audit::AuditReport, needle: &str| {
        report.violations.iter().any(|v| v.contains(needle))
    };
    // An event that never left an outbox (its relay is down).
    suite.kill(Service::Order).await;
    sqlx::query(
        "INSERT INTO eventing_outbox (event_id, topic, partition_key, event_type, source, payload) \
         VALUES (gen_random_uuid(), 'order.events.v1', 'x', 'shop.order.v1.OrderPlaced', '/shop/order-service', '')",
    )
    .execute(&suite.dbs.order)
    .await
    .unwrap();
    // A record inventory gave up on.
    sqlx::query(
        "INSERT INTO eventing_dead_letter (consumer, event_id, event_type, topic, kafka_partition, \
         kafka_offset, dead_letter_topic, error, attempts) \
         VALUES ('inventory-service', 'e-1', 'shop.order.v1.OrderPlaced', 'order.events.v1', 0, 7, \
         'inventory-service.dlq', 'permanent: boom', 1)",
    )
    .execute(&suite.dbs.inventory)
    .await
    .unwrap();
    // Money taken for an order the order service never had (the balance agrees with it).
    sqlx::query(
        "INSERT INTO payments (order_id, customer_id, amount_minor, currency, status) \
         VALUES ('ghost-order', 'alice', 100, 'EUR', 'captured')",
    )
    .execute(&suite.dbs.payment)
    .await
    .unwrap();
    sqlx::query(
        "UPDATE accounts SET balance_minor = balance_minor - 100 WHERE customer_id = 'alice'",
    )
    .execute(&suite.dbs.payment)
    .await
    .unwrap();
    let report = audit(&suite.dbs).await.unwrap();
    let mut missed = Vec::new();
    for needle in ["outbox", "dead letter", "ghost-order"] {
        if !found(&report, needle) {
            missed.push(needle);
        }
    }
    assert!(
        missed.is_empty(),
        "the audit missed {missed:?}; it reported {:#?}",
        report.violations
    );
    // A dead letter the test caused on purpose is accepted, once; one that is missing is not.
    let report = audit_expecting(
        &suite.dbs,
        &[
            ExpectedDeadLetter {
                database: "inventory",
                event_type: "shop.order.v1.OrderPlaced",
            },
            ExpectedDeadLetter {
                database: "payment",
                event_type: "shop.order.v1.PaymentRequested",
            },
        ],
    )
    .await
    .unwrap();
    assert!(!found(&report, "unexpected dead letter"), "{report:#?}");
    assert!(
        found(
            &report,
            "payment: expected a dead letter of shop.order.v1.PaymentRequested"
        ),
        "{report:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_payment_request_re_driven_after_the_customer_cancelled_takes_no_money() {
    // The reviewer's reproduction of C1: payment dead-letters a PaymentRequested, the customer
    // cancels the pending order (the refund finds nothing), the cause is fixed and the dead
    // letter re-driven. Payment must decline it: no money for a cancelled order.
    let mut suite = Suite::start(None).await;
    suite.product("LAMP", 4242, 5).await;
    suite.account("alice", 10_000, false).await;
    suite
        .break_table(
            Service::Payment,
            "payments",
            "NEW.status IN ('captured', 'declined')",
        )
        .await;
    let id = suite.place("alice-1", "alice", &[("LAMP", 1)]).await;
    suite
        .applied(Service::Payment, "shop.order.v1.PaymentRequested", 1)
        .await;
    suite
        .clients
        .order
        .cancel_order(order::CancelOrderRequest {
            order_id: id.clone(),
        })
        .await
        .unwrap();
    suite
        .applied(Service::Payment, "shop.order.v1.OrderCancelled", 1)
        .await;
    suite.fix_table(Service::Payment, "payments").await;
    suite.redrive(Service::Payment, 1).await;
    suite
        .applied(Service::Payment, "shop.order.v1.PaymentRequested", 1)
        .await;
    suite.settle_and_audit().await;
    assert_eq!(suite.balance("alice").await, 10_000, "no money taken");
    assert_eq!(
        suite.terminal(&id).await.cancellation_reason(),
        order::CancellationReason::CustomerCancelled
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_order_placed_re_driven_after_the_customer_cancelled_holds_no_stock() {
    let mut suite = Suite::start(None).await;
    suite.product("LAMP", 5000, 5).await;
    suite.account("alice", 100_000, false).await;
    suite
        .break_table(
            Service::Inventory,
            "reservations",
            "NEW.status IN ('reserved', 'rejected')",
        )
        .await;
    let id = suite.place("alice-1", "alice", &[("LAMP", 2)]).await;
    suite
        .applied(Service::Inventory, "shop.order.v1.OrderPlaced", 1)
        .await;
    suite
        .clients
        .order
        .cancel_order(order::CancelOrderRequest {
            order_id: id.clone(),
        })
        .await
        .unwrap();
    suite
        .applied(Service::Inventory, "shop.order.v1.OrderCancelled", 1)
        .await;
    suite.fix_table(Service::Inventory, "reservations").await;
    suite.redrive(Service::Inventory, 1).await;
    suite
        .applied(Service::Inventory, "shop.order.v1.OrderPlaced", 1)
        .await;
    suite.settle_and_audit().await;
    let lamp = suite.stock("LAMP").await;
    assert_eq!(
        (lamp.on_hand, lamp.reserved, lamp.available),
        (5, 0, 5),
        "no unit held for the cancelled order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_capture_that_reaches_a_cancelled_order_ends_refunded() {
    // Payment captures after the order was cancelled, and its own refund on OrderCancelled is
    // dead-lettered: only the orchestrator, seeing the late PaymentCaptured, can still get the
    // money back.
    let mut suite = Suite::start(None).await;
    suite.product("LAMP", 2500, 5).await;
    suite.account("alice", 10_000, false).await;
    suite.kill(Service::Payment).await;
    let id = suite.place("alice-1", "alice", &[("LAMP", 1)]).await;
    // Stock reserved, payment requested: the order waits for payment, which is down.
    shop_testkit::eventually("payment requested", Duration::from_secs(30), || {
        let pool = suite.dbs.order.clone();
        let id = id.clone();
        async move {
            sqlx::query_scalar::<_, bool>(
                "SELECT payment_requested FROM orders WHERE order_id = $1::uuid",
            )
            .bind(id)
            .fetch_one(&pool)
            .await
            .ok()?
            .then_some(())
        }
    })
    .await;
    suite
        .clients
        .order
        .cancel_order(order::CancelOrderRequest {
            order_id: id.clone(),
        })
        .await
        .unwrap();
    // The order service is down while payment catches up (once OrderCancelled left its
    // outbox: the relay goes down with it).
    suite.outbox_drained(Service::Order).await;
    suite.kill(Service::Order).await;
    suite
        .break_table(Service::Payment, "payments", "NEW.status = 'refunded'")
        .await;
    suite.restart(Service::Payment).await;
    suite
        .applied(Service::Payment, "shop.order.v1.OrderCancelled", 1)
        .await;
    assert_eq!(
        suite.balance("alice").await,
        7_500,
        "captured, not refunded"
    );
    suite.fix_table(Service::Payment, "payments").await;
    suite.restart(Service::Order).await;
    suite
        .settle_and_audit_expecting(&[ExpectedDeadLetter {
            database: "payment",
            event_type: "shop.order.v1.OrderCancelled",
        }])
        .await;
    assert_eq!(suite.balance("alice").await, 10_000, "refunded");
    assert_eq!(
        suite.terminal(&id).await.status(),
        order::OrderStatus::Cancelled
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_saga_that_cannot_progress_is_cancelled_at_its_deadline_and_compensated() {
    let mut suite = Suite::start_with(None, Duration::from_secs(3)).await;
    suite.product("LAMP", 5000, 5).await;
    suite.account("alice", 100_000, false).await;
    // Inventory prices orders (gRPC) but its consumer reads another topic: nothing reserves.
    let real_topic = {
        let Some(Launch::Inventory(settings)) = suite.launches.get_mut(&Service::Inventory) else {
            unreachable!()
        };
        let idle = TestKafka::unique_topic("idle");
        std::mem::replace(&mut settings.order_events_topic, idle)
    };
    let idle = match &suite.launches[&Service::Inventory] {
        Launch::Inventory(s) => s.order_events_topic.clone(),
        _ => unreachable!(),
    };
    suite.kafka.create_topic(&idle, 1).await;
    suite.kill(Service::Inventory).await;
    suite.restart(Service::Inventory).await;
    let placed = Instant::now();
    let id = suite.place("alice-1", "alice", &[("LAMP", 2)]).await;
    let done = suite.terminal(&id).await;
    let waited = placed.elapsed();
    assert_eq!(
        (done.status(), done.cancellation_reason()),
        (
            order::OrderStatus::Cancelled,
            order::CancellationReason::Timeout
        )
    );
    assert!(
        waited >= Duration::from_secs(3) && waited < Duration::from_secs(15),
        "cancelled after the deadline: {waited:?}"
    );
    // Inventory comes back and applies OrderPlaced, then OrderCancelled: nothing stays held.
    suite.kill(Service::Inventory).await;
    if let Some(Launch::Inventory(settings)) = suite.launches.get_mut(&Service::Inventory) {
        settings.order_events_topic = real_topic;
    }
    suite.restart(Service::Inventory).await;
    suite
        .applied(Service::Inventory, "shop.order.v1.OrderCancelled", 1)
        .await;
    suite.settle_and_audit().await;
    let lamp = suite.stock("LAMP").await;
    assert_eq!((lamp.on_hand, lamp.reserved, lamp.sold), (5, 0, 0));
    assert_eq!(suite.balance("alice").await, 100_000);
    let notes = suite.notifications(&id).await;
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(notes[0].message.contains("in time"), "{}", notes[0].message);
}
