//! The payment service as a client sees it: real gRPC over loopback, its own database, a real
//! Kafka-protocol broker; order events arrive through a real outbox and relay.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use payment_service::app::{self, Events};
use payment_service::config::Settings;
use payment_service::startup::Payments;
use prost::Message;
use shop_eventing::{KafkaConfig, NewEvent, Outbox, Publisher, Relay, RelayConfig};
use shop_proto::common::v1::Money;
use shop_proto::order::v1 as order_pb;
use shop_proto::payment::v1 as pb;
use shop_proto::payment::v1::payment_service_client::PaymentServiceClient;
use shop_runtime::skeleton::Service as _;
use shop_testkit::service::bad_request_fields;
use shop_testkit::{Authed, Record, TestDb, TestKafka, connect_authed, test_auth};
use sqlx::postgres::PgPoolOptions;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Status};
use tonic_types::StatusExt;

struct TestApp {
    client: PaymentServiceClient<Authed>,
    settings: Settings,
    db: TestDb,
    kafka: TestKafka,
    order_topic: String,
    payment_topic: String,
    // The order side: its own database, outbox and relay publishing order events.
    order_db: TestDb,
    order_outbox: Outbox,
    stop: CancellationToken,
    addr: std::net::SocketAddr,
    metrics_addr: std::net::SocketAddr,
}

async fn spawn_app() -> TestApp {
    shop_telemetry::init_for_tests();
    let db = TestDb::create().await;
    let kafka = TestKafka::start();
    let order_topic = TestKafka::unique_topic("order-events");
    let payment_topic = TestKafka::unique_topic("payment-events");
    kafka.create_topic(&order_topic, 3).await;
    kafka.create_topic(&payment_topic, 3).await;
    let mut settings = Settings::for_test(shop_testkit::service::service_settings(
        &Payments::IDENTITY,
        db.url(),
        &kafka,
    ));
    settings.order_events_topic = order_topic.clone();
    settings.payment_events_topic = payment_topic.clone();
    let stop = CancellationToken::new();
    let app = shop_testkit::service::spawn::<Payments>(settings.clone(), &stop).await;
    let (addr, metrics_addr) = (app.addr, app.metrics_addr);

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

    let client = PaymentServiceClient::new(
        connect_authed(&format!("http://{addr}"), &test_auth().operator())
            .await
            .unwrap(),
    );
    TestApp {
        client,
        settings,
        db,
        kafka,
        order_topic,
        payment_topic,
        order_db,
        order_outbox,
        stop,
        addr,
        metrics_addr,
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn money(amount_minor: i64, currency: &str) -> Option<Money> {
    Some(Money {
        amount_minor,
        currency: currency.into(),
    })
}

fn eur(amount_minor: i64) -> Option<Money> {
    money(amount_minor, "EUR")
}

impl TestApp {
    async fn open(&mut self, customer_id: &str, currency: &str, frozen: bool) -> pb::Account {
        self.client
            .open_account(pb::OpenAccountRequest {
                customer_id: customer_id.into(),
                currency: currency.into(),
                frozen,
            })
            .await
            .unwrap()
            .into_inner()
            .account
            .unwrap()
    }

    async fn deposit(
        &mut self,
        customer_id: &str,
        amount: Option<Money>,
        deposit_id: &str,
    ) -> Result<pb::Account, Status> {
        self.client
            .deposit(pb::DepositRequest {
                customer_id: customer_id.into(),
                amount,
                deposit_id: deposit_id.into(),
            })
            .await
            .map(|r| r.into_inner().account.unwrap())
    }

    async fn account(&mut self, customer_id: &str) -> pb::Account {
        self.client
            .get_account(pb::GetAccountRequest {
                customer_id: customer_id.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .account
            .unwrap()
    }

    async fn balance(&mut self, customer_id: &str) -> i64 {
        self.account(customer_id)
            .await
            .balance
            .unwrap()
            .amount_minor
    }

    async fn payment(&mut self, order_id: &str) -> pb::Payment {
        self.client
            .get_payment(pb::GetPaymentRequest {
                order_id: order_id.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .payment
            .unwrap()
    }

    /// Publishes order events the way the order service does: appended in a transaction,
    /// relayed from its outbox. Every call is a new event (a new `ce_id`), even for the same
    /// payload: to the consumer's inbox, a duplicate the order service sent, not a redelivery.
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
    /// row), dead-lettered (a dead-letter row), or passed over as a type payment does not
    /// handle (no row: counted by its consumer's `outcome="ignored"`).
    async fn applied(&self, count: i64) {
        let (pool, consumer) = (
            self.db.pool.clone(),
            self.settings.service.consumer_group.clone(),
        );
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

    /// Every event on the payment topic once `count` arrived, the outbox is empty (whatever the
    /// service appended is on the topic) and no more came for a second.
    async fn payment_events(&self, count: usize) -> Vec<Record> {
        let pool = self.db.pool.clone();
        shop_testkit::eventually("the outbox relayed", Duration::from_secs(30), || {
            let pool = pool.clone();
            async move {
                let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM eventing_outbox")
                    .fetch_one(&pool)
                    .await
                    .ok()?;
                (pending == 0).then_some(())
            }
        })
        .await;
        self.kafka
            .read_all(
                &self.payment_topic,
                count,
                Duration::from_secs(30),
                Duration::from_secs(1),
            )
            .await
    }
}

fn requested(
    order_id: &str,
    customer_id: &str,
    amount: Option<Money>,
) -> order_pb::PaymentRequested {
    order_pb::PaymentRequested {
        order_id: order_id.into(),
        customer_id: customer_id.into(),
        amount,
    }
}

fn cancelled(order_id: &str) -> order_pb::OrderCancelled {
    order_pb::OrderCancelled {
        order_id: order_id.into(),
        customer_id: "alice".into(),
        reason: order_pb::CancellationReason::CustomerCancelled.into(),
        ..Default::default()
    }
}

/// The records of event type `M`, decoded, with their keys.
fn decoded<M: Message + prost::Name + Default>(records: &[Record]) -> Vec<(String, M)> {
    records
        .iter()
        .filter(|r| r.header("ce_type") == Some(M::full_name().as_str()))
        .map(|r| {
            (
                r.key.clone().unwrap_or_default(),
                M::decode(r.payload.as_slice()).unwrap(),
            )
        })
        .collect()
}

fn precondition(status: &Status) -> String {
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    status
        .get_details_precondition_failure()
        .unwrap()
        .violations[0]
        .r#type
        .clone()
}

#[tokio::test]
async fn accounts_are_opened_funded_and_read_over_grpc() {
    let mut app = spawn_app().await;
    let opened = app.open("alice", "EUR", false).await;
    assert_eq!(opened.customer_id, "alice");
    assert_eq!(opened.balance, eur(0));
    assert_eq!(opened.status(), pb::AccountStatus::Open);
    assert!(opened.opened_at.is_some_and(|t| t.seconds > 0));

    let funded = app.deposit("alice", eur(1000), "dep-1").await.unwrap();
    assert_eq!(funded.balance, eur(1000));
    // The client did not hear back and retries: credited once, same answer.
    let retried = app.deposit("alice", eur(1000), "dep-1").await.unwrap();
    assert_eq!(retried.balance, eur(1000));
    let more = app.deposit("alice", eur(250), "dep-2").await.unwrap();
    assert_eq!(more.balance, eur(1250));

    let alice = app.account("alice").await;
    assert_eq!(
        (alice.status(), alice.balance, alice.opened_at),
        (pb::AccountStatus::Open, eur(1250), opened.opened_at)
    );
    let deposits: Vec<(String, i64)> =
        sqlx::query_as("SELECT deposit_id, amount_minor FROM deposits ORDER BY deposit_id")
            .fetch_all(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(
        deposits,
        [("dep-1".to_owned(), 1000), ("dep-2".to_owned(), 250)]
    );

    let bob = app.open("bob.b", "USD", true).await;
    assert_eq!(
        (bob.status(), bob.balance),
        (pb::AccountStatus::Frozen, money(0, "USD"))
    );
    assert_eq!(
        app.account("bob.b").await.status(),
        pb::AccountStatus::Frozen
    );
}

#[tokio::test]
async fn bad_input_gets_a_clear_status_with_field_details() {
    let mut app = spawn_app().await;
    app.open("alice", "EUR", false).await;
    app.open("frosty", "EUR", true).await;
    app.deposit("alice", eur(500), "dep-1").await.unwrap();

    // OpenAccount: every field violation at once; an existing customer.
    let status = app
        .client
        .open_account(pb::OpenAccountRequest {
            customer_id: "bad id".into(),
            currency: "eur".into(),
            frozen: false,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(bad_request_fields(&status), ["customer_id", "currency"]);
    let status = app
        .client
        .open_account(pb::OpenAccountRequest {
            customer_id: "alice".into(),
            currency: "USD".into(),
            frozen: false,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);
    assert_eq!(
        status.get_details_resource_info().unwrap().resource_name,
        "alice"
    );

    // Deposit: malformed fields, a missing amount, an unknown or frozen account, another
    // currency than the account's, a deposit id reused for another deposit.
    let status = app
        .deposit(
            "",
            Some(Money {
                amount_minor: 0,
                currency: "EURO".into(),
            }),
            "",
        )
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        bad_request_fields(&status),
        [
            "customer_id",
            "amount.amount_minor",
            "amount.currency",
            "deposit_id"
        ]
    );
    let status = app.deposit("alice", eur(-5), "dep-x").await.unwrap_err();
    assert_eq!(bad_request_fields(&status), ["amount.amount_minor"]);
    let status = app.deposit("alice", None, "dep-x").await.unwrap_err();
    assert_eq!(bad_request_fields(&status), ["amount"]);
    let status = app.deposit("ghost", eur(100), "dep-x").await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(
        status.get_details_resource_info().unwrap().resource_name,
        "ghost"
    );
    let status = app
        .deposit("alice", money(100, "USD"), "dep-x")
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(bad_request_fields(&status), ["amount.currency"]);
    let status = app.deposit("frosty", eur(100), "dep-x").await.unwrap_err();
    assert_eq!(precondition(&status), "ACCOUNT_FROZEN");
    let status = app.deposit("alice", eur(999), "dep-1").await.unwrap_err();
    assert_eq!(precondition(&status), "DEPOSIT_ID_REUSED");
    assert_eq!(
        app.balance("alice").await,
        500,
        "nothing refused was credited"
    );
    assert_eq!(app.balance("frosty").await, 0);
    let refused: i64 =
        sqlx::query_scalar("SELECT count(*) FROM deposits WHERE deposit_id <> 'dep-1'")
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(refused, 0, "no refused deposit was recorded");
    // The id was not burnt by the refusals: it still works for a valid deposit.
    assert_eq!(
        app.deposit("alice", eur(1), "dep-x").await.unwrap().balance,
        eur(501)
    );

    // GetAccount, GetPayment.
    let status = app
        .client
        .get_account(pb::GetAccountRequest {
            customer_id: "n o".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(bad_request_fields(&status), ["customer_id"]);
    let status = app
        .client
        .get_account(pb::GetAccountRequest {
            customer_id: "nobody".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let status = app
        .client
        .get_payment(pb::GetPaymentRequest {
            order_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(bad_request_fields(&status), ["order_id"]);
    let status = app
        .client
        .get_payment(pb::GetPaymentRequest {
            order_id: "order-none".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(
        status.get_details_resource_info().unwrap().resource_type,
        "payment"
    );
}

#[tokio::test]
async fn a_payment_is_captured_once_and_refunded_once() {
    let mut app = spawn_app().await;
    app.open("alice", "EUR", false).await;
    app.deposit("alice", eur(10_000), "dep-1").await.unwrap();

    // The same request twice, as two events: one capture.
    let request = requested("order-1", "alice", eur(2500));
    app.publish("order-1", &request).await;
    app.publish("order-1", &request).await;
    // Events payment does not act on change nothing.
    app.publish(
        "order-1",
        &order_pb::OrderConfirmed {
            order_id: "order-1".into(),
            customer_id: "alice".into(),
            ..Default::default()
        },
    )
    .await;
    app.applied(3).await;
    let ignored: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM eventing_inbox WHERE event_type = 'shop.order.v1.OrderConfirmed'",
    )
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(
        ignored, 0,
        "no inbox row for a type payment does not handle"
    );
    let events = app.payment_events(1).await;
    assert_eq!(events.len(), 1, "one event for two requests: {events:?}");
    let captured = decoded::<pb::PaymentCaptured>(&events);
    assert_eq!(
        captured,
        [(
            "order-1".to_owned(),
            pb::PaymentCaptured {
                order_id: "order-1".into(),
                customer_id: "alice".into(),
                amount: eur(2500),
            }
        )]
    );
    assert_eq!(events[0].header("ce_source"), Some("/shop/payment-service"));
    assert_eq!(app.balance("alice").await, 7500);
    let payment = app.payment("order-1").await;
    assert_eq!(
        (
            payment.status(),
            payment.customer_id.as_str(),
            payment.amount,
            payment.decline_reason.as_str()
        ),
        (pb::PaymentStatus::Captured, "alice", eur(2500), "")
    );

    // Cancelled twice: one refund.
    app.publish("order-1", &cancelled("order-1")).await;
    app.publish("order-1", &cancelled("order-1")).await;
    app.applied(5).await;
    let events = app.payment_events(2).await;
    assert_eq!(
        events.len(),
        2,
        "one refund for two cancellations: {events:?}"
    );
    let refunded = decoded::<pb::PaymentRefunded>(&events);
    assert_eq!(
        refunded,
        [(
            "order-1".to_owned(),
            pb::PaymentRefunded {
                order_id: "order-1".into(),
                customer_id: "alice".into(),
                amount: eur(2500),
            }
        )]
    );
    assert_eq!(app.balance("alice").await, 10_000, "every cent back");
    assert_eq!(
        app.payment("order-1").await.status(),
        pb::PaymentStatus::Refunded
    );

    // A late request for the refunded order captures nothing again.
    app.publish("order-1", &request).await;
    app.applied(6).await;
    assert_eq!(app.payment_events(2).await.len(), 2);
    assert_eq!(app.balance("alice").await, 10_000);
    assert_eq!(
        app.payment("order-1").await.status(),
        pb::PaymentStatus::Refunded
    );
}

#[tokio::test]
async fn a_payment_that_cannot_be_captured_is_declined_with_the_reason() {
    let mut app = spawn_app().await;
    app.open("alice", "EUR", false).await;
    app.deposit("alice", eur(1000), "dep-a").await.unwrap();
    app.open("frosty", "EUR", true).await;
    app.open("yankee", "USD", false).await;
    app.deposit("yankee", money(5000, "USD"), "dep-y")
        .await
        .unwrap();

    let cases = [
        ("order-poor", "alice", 1001, "insufficient_funds"),
        ("order-ghost", "ghost", 100, "unknown_account"),
        ("order-frozen", "frosty", 100, "account_frozen"),
        ("order-usd", "yankee", 100, "currency_mismatch"),
    ];
    for (order_id, customer_id, amount, _) in cases {
        app.publish(order_id, &requested(order_id, customer_id, eur(amount)))
            .await;
    }
    let events = app.payment_events(4).await;
    assert_eq!(events.len(), 4);
    let declined: BTreeMap<String, pb::PaymentDeclined> = decoded::<pb::PaymentDeclined>(&events)
        .into_iter()
        .collect();
    assert_eq!(declined.len(), 4, "every request declined: {events:?}");
    let expected = [
        ("order-poor", "alice", pb::DeclineReason::InsufficientFunds),
        ("order-ghost", "ghost", pb::DeclineReason::UnknownAccount),
        ("order-frozen", "frosty", pb::DeclineReason::AccountFrozen),
        ("order-usd", "yankee", pb::DeclineReason::CurrencyMismatch),
    ];
    for (order_id, customer_id, reason) in expected {
        let event = &declined[order_id];
        assert_eq!(
            (
                event.order_id.as_str(),
                event.customer_id.as_str(),
                event.reason()
            ),
            (order_id, customer_id, reason)
        );
    }
    for (order_id, customer_id, amount, reason) in cases {
        let payment = app.payment(order_id).await;
        assert_eq!(
            (
                payment.status(),
                payment.customer_id.as_str(),
                payment.amount,
                payment.decline_reason.as_str()
            ),
            (
                pb::PaymentStatus::Declined,
                customer_id,
                eur(amount),
                reason
            )
        );
    }
    assert_eq!(app.balance("alice").await, 1000, "nothing debited");
    assert_eq!(app.balance("frosty").await, 0);
    assert_eq!(app.balance("yankee").await, 5000);

    // Cancelling a declined order refunds nothing.
    app.publish("order-poor", &cancelled("order-poor")).await;
    app.applied(5).await;
    assert_eq!(app.payment_events(4).await.len(), 4);
    assert_eq!(app.balance("alice").await, 1000);
    assert_eq!(
        app.payment("order-poor").await.status(),
        pb::PaymentStatus::Declined
    );
}

#[tokio::test]
async fn twenty_concurrent_payments_from_an_account_that_covers_seven_conserve_money() {
    let mut app = spawn_app().await;
    app.open("alice", "EUR", false).await;
    app.deposit("alice", eur(400), "dep-1").await.unwrap();
    app.deposit("alice", eur(300), "dep-2").await.unwrap();
    // A second replica in the same consumer group, on the same database: the order events'
    // partitions are shared between the two, which decide concurrently.
    let _replica = shop_testkit::service::spawn::<Payments>(app.settings.clone(), &app.stop).await;

    let mut tx = app.order_db.pool.begin().await.unwrap();
    for i in 0..20 {
        let id = format!("order-{i}");
        app.order_outbox
            .append(
                &mut tx,
                NewEvent::new(&app.order_topic, &id, &requested(&id, "alice", eur(100))),
            )
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    let events = app.payment_events(20).await;
    assert_eq!(events.len(), 20);
    let captured = decoded::<pb::PaymentCaptured>(&events);
    let declined = decoded::<pb::PaymentDeclined>(&events);
    assert_eq!((captured.len(), declined.len()), (7, 13));
    assert!(
        declined
            .iter()
            .all(|(_, d)| d.reason() == pb::DeclineReason::InsufficientFunds)
    );
    let balance = app.balance("alice").await;
    let captured_sum: i64 = captured
        .iter()
        .map(|(_, c)| c.amount.as_ref().unwrap().amount_minor)
        .sum();
    assert_eq!(balance, 0);
    assert_eq!(captured_sum + balance, 700, "money is conserved");
    let (captured_rows, captured_rows_sum): (i64, Option<i64>) = sqlx::query_as(
        "SELECT count(*), sum(amount_minor)::bigint FROM payments WHERE status = 'captured'",
    )
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!((captured_rows, captured_rows_sum), (7, Some(700)));
}

#[tokio::test]
async fn concurrent_saga_transactions_on_one_account_never_overdraw() {
    let mut app = spawn_app().await;
    app.open("alice", "EUR", false).await;
    app.deposit("alice", eur(700), "dep-1").await.unwrap();
    // Twenty transactions, all begun before any of them decides: they queue on the account's
    // row lock, and each sees the balance the previous one left.
    let pool = PgPoolOptions::new()
        .max_connections(20)
        .connect_with(app.db.connect_options())
        .await
        .unwrap();
    let events = Events {
        publisher: Publisher::new(
            Outbox::new("/shop/payment-service"),
            app.payment_topic.clone(),
        ),
        metrics: Default::default(),
    };
    let barrier = Arc::new(tokio::sync::Barrier::new(20));
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let (pool, events, barrier) = (pool.clone(), events.clone(), barrier.clone());
            tokio::spawn(async move {
                let mut tx = pool.begin().await.unwrap();
                let id = format!("order-{i}");
                barrier.wait().await;
                app::capture(&mut tx, &events, &requested(&id, "alice", eur(100)))
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
            })
        })
        .collect();
    for task in futures::future::join_all(tasks).await {
        task.unwrap();
    }
    let counts: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, count(*) FROM payments GROUP BY status ORDER BY status")
            .fetch_all(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(
        counts,
        [("captured".to_owned(), 7), ("declined".to_owned(), 13)]
    );
    assert_eq!(app.balance("alice").await, 0);
    let events = app.payment_events(20).await;
    assert_eq!(decoded::<pb::PaymentCaptured>(&events).len(), 7);
}

#[tokio::test]
async fn a_request_that_violates_the_contract_is_dead_lettered() {
    let mut app = spawn_app().await;
    app.kafka
        .create_topic(&format!("{}.dlq", app.settings.service.consumer_group), 1)
        .await;
    app.open("alice", "EUR", false).await;
    app.deposit("alice", eur(1000), "dep-1").await.unwrap();
    app.publish("order-0", &requested("order-0", "alice", eur(0)))
        .await;
    app.publish("order-none", &requested("order-none", "alice", None))
        .await;
    app.publish("", &requested("", "alice", eur(100))).await;
    app.applied(3).await;
    let dead: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM eventing_dead_letter WHERE error LIKE 'permanent: %violates the contract%'",
    )
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(dead, 3);
    let payments: i64 = sqlx::query_scalar("SELECT count(*) FROM payments")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(payments, 0);
    assert_eq!(app.balance("alice").await, 1000);
}

#[tokio::test]
async fn health_reports_serving_then_stops_serving_on_shutdown() {
    let app = spawn_app().await;
    shop_testkit::service::assert_serves_then_drains(
        app.addr,
        "shop.payment.v1.PaymentService",
        &app.stop,
    )
    .await;
}

#[tokio::test]
async fn a_request_after_the_order_was_cancelled_takes_no_money() {
    // The reviewer's case: PaymentRequested was dead-lettered, the customer cancelled the
    // pending order (the refund found nothing to refund), then the dead letter was re-driven.
    // The refund must have left a tombstone, so that the late request takes no money.
    let mut app = spawn_app().await;
    app.open("alice", "EUR", false).await;
    app.deposit("alice", eur(10_000), "dep-1").await.unwrap();
    app.publish("order-late", &cancelled("order-late")).await;
    app.applied(1).await;
    app.publish("order-late", &requested("order-late", "alice", eur(4242)))
        .await;
    app.applied(2).await;
    assert_eq!(app.balance("alice").await, 10_000, "no money taken");
    let payment = app.payment("order-late").await;
    assert_eq!(
        (payment.status(), payment.customer_id.as_str()),
        (pb::PaymentStatus::Cancelled, "alice"),
        "the refund left a tombstone"
    );
    // Nothing was captured, so nothing was said; an order never cancelled is still paid.
    app.publish("order-ok", &requested("order-ok", "alice", eur(100)))
        .await;
    let events = app.payment_events(1).await;
    assert_eq!(
        events
            .iter()
            .map(|r| (r.key.as_deref().unwrap(), r.header("ce_type").unwrap()))
            .collect::<Vec<_>>(),
        [("order-ok", "shop.payment.v1.PaymentCaptured")]
    );
    assert_eq!(app.balance("alice").await, 9_900);
}

#[tokio::test]
async fn a_refund_request_refunds_a_late_capture_once() {
    // The order service asks for a refund when a PaymentCaptured reaches an order it already
    // cancelled (a late reply).
    let mut app = spawn_app().await;
    app.open("alice", "EUR", false).await;
    app.deposit("alice", eur(10_000), "dep-1").await.unwrap();
    app.publish("order-1", &requested("order-1", "alice", eur(2500)))
        .await;
    app.payment_events(1).await;
    assert_eq!(app.balance("alice").await, 7_500);
    let refund = order_pb::RefundRequested {
        order_id: "order-1".into(),
        customer_id: "alice".into(),
    };
    app.publish("order-1", &refund).await;
    app.publish("order-1", &refund).await;
    app.applied(3).await;
    let events = app.payment_events(2).await;
    assert_eq!(
        decoded::<pb::PaymentRefunded>(&events).len(),
        1,
        "refunded once: {events:?}"
    );
    assert_eq!(app.balance("alice").await, 10_000, "every cent back");
    assert_eq!(
        app.payment("order-1").await.status(),
        pb::PaymentStatus::Refunded
    );
    // A refund request for an order payment never saw closes it: a later request takes nothing.
    app.publish(
        "order-2",
        &order_pb::RefundRequested {
            order_id: "order-2".into(),
            customer_id: "alice".into(),
        },
    )
    .await;
    app.publish("order-2", &requested("order-2", "alice", eur(100)))
        .await;
    app.applied(5).await;
    assert_eq!(app.balance("alice").await, 10_000);
    assert_eq!(
        app.payment("order-2").await.status(),
        pb::PaymentStatus::Cancelled
    );
}

#[tokio::test]
async fn money_arithmetic_never_overflows() {
    // Reproduced on the old code: a deposit of nearly i64::MAX was accepted, and the refund of
    // a later capture overflowed the balance (22003), so the refund was dead-lettered.
    let mut app = spawn_app().await;
    app.kafka
        .create_topic(&format!("{}.dlq", app.settings.service.consumer_group), 1)
        .await;
    app.open("alice", "EUR", false).await;
    let status = app
        .deposit("alice", eur(i64::MAX - 10), "dep-huge")
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(bad_request_fields(&status), ["amount.amount_minor"]);
    // The largest balance deposits may reach (payment_service::domain::MAX_BALANCE_MINOR).
    let max: i64 = 1_000_000_000_000_000;
    app.deposit("alice", eur(max), "dep-1").await.unwrap();
    let status = app.deposit("alice", eur(1), "dep-2").await.unwrap_err();
    assert_eq!(precondition(&status), "BALANCE_LIMIT");
    app.publish("order-1", &requested("order-1", "alice", eur(600)))
        .await;
    app.payment_events(1).await;
    app.deposit("alice", eur(600), "dep-3").await.unwrap();
    assert_eq!(app.balance("alice").await, max);
    // The refund takes the balance past the deposit limit: a refund is never refused.
    app.publish("order-1", &cancelled("order-1")).await;
    let events = app.payment_events(2).await;
    assert_eq!(decoded::<pb::PaymentRefunded>(&events).len(), 1);
    assert_eq!(app.balance("alice").await, max + 600);
    let dead: i64 = sqlx::query_scalar("SELECT count(*) FROM eventing_dead_letter")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(dead, 0, "nothing dead-lettered");
}

/// One hostile request and the field its answer must name.
struct Hostile {
    what: &'static str,
    field: &'static str,
    call: Result<(), Status>,
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
    app.open("alice", "EUR", false).await;
    app.deposit("alice", eur(1000), "dep-1").await.unwrap();
    let mut client = app.client.clone();
    macro_rules! call {
        ($method:ident, $request:expr) => {
            client.$method($request).await.map(|_| ())
        };
    }
    let open = |customer_id: &str, currency: &str| pb::OpenAccountRequest {
        customer_id: customer_id.into(),
        currency: currency.into(),
        frozen: false,
    };
    let deposit = |customer_id: &str, amount_minor: i64, currency: &str, deposit_id: &str| {
        pb::DepositRequest {
            customer_id: customer_id.into(),
            amount: money(amount_minor, currency),
            deposit_id: deposit_id.into(),
        }
    };
    let cases = vec![
        Hostile {
            what: "OpenAccount customer id with NUL",
            field: "customer_id",
            call: call!(open_account, open(&nul("bob"), "EUR")),
        },
        Hostile {
            what: "OpenAccount 10 kB customer id",
            field: "customer_id",
            call: call!(open_account, open(&ten_kb(), "EUR")),
        },
        Hostile {
            what: "OpenAccount currency with NUL",
            field: "currency",
            call: call!(open_account, open("bob", "EU\0")),
        },
        Hostile {
            what: "Deposit amount i64::MAX",
            field: "amount.amount_minor",
            call: call!(deposit, deposit("alice", i64::MAX, "EUR", "dep-max")),
        },
        Hostile {
            what: "Deposit amount i64::MIN",
            field: "amount.amount_minor",
            call: call!(deposit, deposit("alice", i64::MIN, "EUR", "dep-min")),
        },
        Hostile {
            what: "Deposit deposit id with NUL",
            field: "deposit_id",
            call: call!(deposit, deposit("alice", 1, "EUR", &nul("dep"))),
        },
        Hostile {
            what: "Deposit 10 kB deposit id",
            field: "deposit_id",
            call: call!(deposit, deposit("alice", 1, "EUR", &ten_kb())),
        },
        Hostile {
            what: "Deposit customer id with NUL",
            field: "customer_id",
            call: call!(deposit, deposit(&nul("alice"), 1, "EUR", "dep-n")),
        },
        Hostile {
            what: "Deposit currency with NUL",
            field: "amount.currency",
            call: call!(deposit, deposit("alice", 1, "EU\0", "dep-c")),
        },
        Hostile {
            what: "GetAccount customer id with NUL",
            field: "customer_id",
            call: call!(
                get_account,
                pb::GetAccountRequest {
                    customer_id: nul("alice")
                }
            ),
        },
        Hostile {
            what: "GetAccount 10 kB customer id",
            field: "customer_id",
            call: call!(
                get_account,
                pb::GetAccountRequest {
                    customer_id: ten_kb()
                }
            ),
        },
        Hostile {
            what: "GetPayment order id with NUL",
            field: "order_id",
            call: call!(
                get_payment,
                pb::GetPaymentRequest {
                    order_id: nul("order")
                }
            ),
        },
        Hostile {
            what: "GetPayment 10 kB order id",
            field: "order_id",
            call: call!(get_payment, pb::GetPaymentRequest { order_id: ten_kb() }),
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
    assert_eq!(app.balance("alice").await, 1000, "nothing hostile credited");
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
        "shop.payment.v1.PaymentService",
    ];
    assert_eq!(v1, expected);
    assert_eq!(v1alpha, expected);
}
