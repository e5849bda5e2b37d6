//! The notification service as a client sees it: real gRPC over loopback, its own database, a
//! real Kafka-protocol broker, order events arriving through a real outbox and relay, and
//! notifications delivered over real HTTP to a webhook receiver running in the test.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use notification_service::config::Settings;
use notification_service::startup::Notifications;
use prost::Message;
use shop_eventing::{KafkaConfig, NewEvent, Outbox, Relay, RelayConfig, RetryPolicy};
use shop_proto::common::v1::Money;
use shop_proto::notification::v1 as pb;
use shop_proto::notification::v1::notification_service_client::NotificationServiceClient;
use shop_proto::order::v1 as order_pb;
use shop_runtime::skeleton::Service as _;
use shop_testkit::{Authed, TestDb, TestKafka, connect_authed, test_auth};
use tokio_util::sync::CancellationToken;
use tonic::{Code, Status};
use tonic_types::StatusExt;

/// How the webhook receiver answers.
#[derive(Clone, Copy, Debug)]
enum Behaviour {
    /// 200 to every request.
    Accept,
    /// 500 to the first `n` requests, 200 afterwards.
    FailFirst(usize),
    /// Never answers.
    Hang,
}

/// A request the webhook receiver got.
#[derive(Clone, Debug)]
struct Received {
    idempotency_key: Option<String>,
    content_type: Option<String>,
    body: serde_json::Value,
}

/// A webhook receiver on a loopback port, recording every request.
#[derive(Clone, Debug)]
struct Webhook {
    url: String,
    behaviour: Behaviour,
    received: Arc<Mutex<Vec<Received>>>,
}

impl Webhook {
    async fn start(behaviour: Behaviour) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let webhook = Self {
            url: format!(
                "http://{}/hooks/notifications",
                listener.local_addr().unwrap()
            ),
            behaviour,
            received: Arc::default(),
        };
        let router = axum::Router::new()
            .route("/hooks/notifications", axum::routing::post(receive))
            .with_state(webhook.clone());
        tokio::spawn(async move { axum::serve(listener, router).await });
        webhook
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

async fn receive(State(webhook): State<Webhook>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let count = {
        let mut received = webhook.received.lock().unwrap();
        received.push(Received {
            idempotency_key: header("idempotency-key"),
            content_type: header("content-type"),
            body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
        });
        received.len()
    };
    match webhook.behaviour {
        Behaviour::Accept => StatusCode::OK,
        Behaviour::FailFirst(n) if count <= n => StatusCode::INTERNAL_SERVER_ERROR,
        Behaviour::FailFirst(_) => StatusCode::NO_CONTENT,
        Behaviour::Hang => std::future::pending().await,
    }
}

struct TestApp {
    client: NotificationServiceClient<Authed>,
    db: TestDb,
    webhook: Option<Webhook>,
    // Kept alive for the test's duration.
    _kafka: TestKafka,
    order_topic: String,
    // The order side: its own database, outbox and relay publishing order events.
    order_db: TestDb,
    order_outbox: Outbox,
    stop: CancellationToken,
    addr: std::net::SocketAddr,
    metrics_addr: std::net::SocketAddr,
}

/// Starts the service delivering to a webhook receiver behaving as `webhook` (to the log when
/// `None`), with fast retries; `tune` adjusts the settings further.
async fn spawn_app(webhook: Option<Behaviour>, tune: impl FnOnce(&mut Settings)) -> TestApp {
    shop_telemetry::init_for_tests();
    let db = TestDb::create().await;
    let kafka = TestKafka::start();
    let order_topic = TestKafka::unique_topic("order-events");
    kafka.create_topic(&order_topic, 3).await;
    let webhook = match webhook {
        Some(behaviour) => Some(Webhook::start(behaviour).await),
        None => None,
    };
    let mut settings = Settings::for_test(shop_testkit::service::service_settings(
        &Notifications::IDENTITY,
        db.url(),
        &kafka,
    ));
    settings.order_events_topic = order_topic.clone();
    settings.webhook_url = webhook.as_ref().map(|w| w.url.parse().unwrap());
    settings.webhook_timeout = Duration::from_secs(5);
    settings.retry = RetryPolicy {
        max_attempts: 8,
        initial_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(200),
    };
    settings.poll_interval = Duration::from_millis(100);
    settings.delivery_concurrency = 16;
    tune(&mut settings);
    let stop = CancellationToken::new();
    let app = shop_testkit::service::spawn::<Notifications>(settings, &stop).await;
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

    let client = NotificationServiceClient::new(
        connect_authed(&format!("http://{addr}"), &test_auth().operator())
            .await
            .unwrap(),
    );
    TestApp {
        client,
        db,
        webhook,
        _kafka: kafka,
        order_topic,
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

fn eur(amount_minor: i64) -> Option<Money> {
    Some(Money {
        amount_minor,
        currency: "EUR".into(),
    })
}

fn confirmed(order_id: &str, customer_id: &str, total_minor: i64) -> order_pb::OrderConfirmed {
    order_pb::OrderConfirmed {
        order_id: order_id.into(),
        customer_id: customer_id.into(),
        lines: vec![order_pb::OrderLine {
            sku: "SKU-1".into(),
            quantity: 1,
            unit_price: eur(total_minor),
        }],
        total: eur(total_minor),
    }
}

fn cancelled(order_id: &str, customer_id: &str, detail: &str) -> order_pb::OrderCancelled {
    order_pb::OrderCancelled {
        order_id: order_id.into(),
        customer_id: customer_id.into(),
        reason: order_pb::CancellationReason::OutOfStock.into(),
        detail: detail.into(),
        was_confirmed: false,
    }
}

/// A stored delivery attempt: (attempt, outcome, error, http status).
type AttemptRow = (i32, String, Option<String>, Option<i32>);

impl TestApp {
    fn webhook(&self) -> &Webhook {
        self.webhook.as_ref().expect("started with a webhook")
    }

    /// Publishes an order event the way the order service does: appended in a transaction,
    /// relayed from its outbox. Each call is a new event (a new `ce_id`).
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

    /// Waits until the consumer settled `count` events: applied (their inbox rows are
    /// committed) or passed over as types notification does not handle (no row: counted by its
    /// consumer's `outcome="ignored"`).
    async fn applied(&self, count: i64) {
        shop_testkit::eventually("events applied", Duration::from_secs(30), || async {
            let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM eventing_inbox")
                .fetch_one(&self.db.pool)
                .await
                .ok()?;
            let ignored = shop_testkit::scrape_metric(
                self.metrics_addr,
                "shop_consumer_messages_total",
                &[("outcome", "ignored")],
            )
            .await?;
            (applied + ignored as i64 >= count).then_some(())
        })
        .await;
    }

    async fn notification_count(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM notifications")
            .fetch_one(&self.db.pool)
            .await
            .unwrap()
    }

    /// Waits until `order_id` has a notification of `kind`; returns it as listed over gRPC.
    async fn recorded(&self, order_id: &str, kind: &str) -> pb::Notification {
        let client = self.client.clone();
        shop_testkit::eventually(
            &format!("a {kind} notification for {order_id}"),
            Duration::from_secs(30),
            || {
                let mut client = client.clone();
                async move {
                    client
                        .list_notifications(by_order(order_id))
                        .await
                        .ok()?
                        .into_inner()
                        .notifications
                        .into_iter()
                        .find(|n| n.kind == kind)
                }
            },
        )
        .await
    }

    /// Waits until `order_id`'s notification of `kind` reaches `status`; returns it.
    async fn settled(
        &self,
        order_id: &str,
        kind: &str,
        status: pb::DeliveryStatus,
    ) -> pb::Notification {
        let client = self.client.clone();
        shop_testkit::eventually(
            &format!("the {kind} notification for {order_id} to be {status:?}"),
            Duration::from_secs(30),
            || {
                let mut client = client.clone();
                async move {
                    client
                        .list_notifications(by_order(order_id))
                        .await
                        .ok()?
                        .into_inner()
                        .notifications
                        .into_iter()
                        .find(|n| n.kind == kind && n.status() == status)
                }
            },
        )
        .await
    }

    async fn attempts(&self, notification_id: &str) -> Vec<AttemptRow> {
        sqlx::query_as(
            "SELECT attempt, outcome, error, http_status FROM delivery_attempts \
             WHERE notification_id = $1::uuid ORDER BY attempt",
        )
        .bind(notification_id)
        .fetch_all(&self.db.pool)
        .await
        .unwrap()
    }

    async fn list(
        &mut self,
        request: pb::ListNotificationsRequest,
    ) -> Result<pb::ListNotificationsResponse, Status> {
        self.client
            .list_notifications(request)
            .await
            .map(tonic::Response::into_inner)
    }
}

fn by_order(order_id: &str) -> pb::ListNotificationsRequest {
    pb::ListNotificationsRequest {
        order_id: order_id.into(),
        ..Default::default()
    }
}

fn by_customer(
    customer_id: &str,
    page_size: u32,
    page_token: &str,
) -> pb::ListNotificationsRequest {
    pb::ListNotificationsRequest {
        customer_id: customer_id.into(),
        page_size,
        page_token: page_token.into(),
        ..Default::default()
    }
}

fn order_ids(response: &pb::ListNotificationsResponse) -> Vec<&str> {
    response
        .notifications
        .iter()
        .map(|n| n.order_id.as_str())
        .collect()
}

fn violated_fields(status: &Status) -> Vec<String> {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    status
        .get_details_bad_request()
        .expect("field violations")
        .field_violations
        .into_iter()
        .map(|v| v.field)
        .collect()
}

#[tokio::test]
async fn an_order_confirmed_twice_is_notified_and_delivered_once() {
    let app = spawn_app(Some(Behaviour::Accept), |_| {}).await;
    // The same outcome published twice, under two event ids (e.g. a re-publish after a crash).
    let event = confirmed("order-1", "alice", 1999);
    app.publish("order-1", &event).await;
    app.publish("order-1", &event).await;
    app.applied(2).await;

    let delivered = app
        .settled("order-1", "order_confirmed", pb::DeliveryStatus::Delivered)
        .await;
    assert_eq!(app.notification_count().await, 1);
    assert_eq!(
        (
            delivered.customer_id.as_str(),
            delivered.message.as_str(),
            delivered.channel.as_str(),
            delivered.attempts
        ),
        (
            "alice",
            "Your order order-1 is confirmed: total 19.99 EUR.",
            "webhook",
            1
        )
    );
    let created = delivered.created_at.unwrap();
    let delivered_at = delivered.delivered_at.unwrap();
    assert!((delivered_at.seconds, delivered_at.nanos) >= (created.seconds, created.nanos));

    let received = app.webhook().received();
    assert_eq!(received.len(), 1, "delivered once: {received:?}");
    let request = &received[0];
    assert_eq!(
        request.idempotency_key.as_deref(),
        Some(delivered.notification_id.as_str())
    );
    assert_eq!(request.content_type.as_deref(), Some("application/json"));
    let body = &request.body;
    assert_eq!(body["notification_id"], delivered.notification_id.as_str());
    assert_eq!(body["order_id"], "order-1");
    assert_eq!(body["customer_id"], "alice");
    assert_eq!(body["kind"], "order_confirmed");
    assert_eq!(
        body["message"],
        "Your order order-1 is confirmed: total 19.99 EUR."
    );
    let body_created =
        chrono::DateTime::parse_from_rfc3339(body["created_at"].as_str().unwrap()).unwrap();
    assert_eq!(body_created.timestamp(), created.seconds);

    assert_eq!(
        app.attempts(&delivered.notification_id).await,
        [(1, "delivered".to_owned(), None, Some(200))]
    );
}

#[tokio::test]
async fn a_failing_webhook_is_retried_until_it_accepts() {
    let app = spawn_app(Some(Behaviour::FailFirst(2)), |_| {}).await;
    app.publish("order-1", &confirmed("order-1", "alice", 500))
        .await;

    let delivered = app
        .settled("order-1", "order_confirmed", pb::DeliveryStatus::Delivered)
        .await;
    assert_eq!(delivered.attempts, 3);
    assert!(delivered.delivered_at.is_some());
    let attempts = app.attempts(&delivered.notification_id).await;
    assert_eq!(
        attempts
            .iter()
            .map(|(n, outcome, _, status)| (*n, outcome.as_str(), *status))
            .collect::<Vec<_>>(),
        [
            (1, "failed", Some(500)),
            (2, "failed", Some(500)),
            (3, "delivered", Some(204))
        ]
    );
    for (_, _, error, _) in &attempts[..2] {
        assert!(
            error.as_deref().unwrap().contains("500"),
            "the error names the answer: {error:?}"
        );
    }
    // Every attempt carried the same idempotency key: the receiver can deduplicate.
    let received = app.webhook().received();
    assert_eq!(received.len(), 3);
    assert!(
        received
            .iter()
            .all(|r| r.idempotency_key.as_deref() == Some(delivered.notification_id.as_str()))
    );
}

#[tokio::test]
async fn a_notification_whose_attempts_are_exhausted_is_failed() {
    let app = spawn_app(Some(Behaviour::FailFirst(usize::MAX)), |s| {
        s.retry.max_attempts = 3;
    })
    .await;
    app.publish("order-1", &confirmed("order-1", "alice", 500))
        .await;

    let failed = app
        .settled("order-1", "order_confirmed", pb::DeliveryStatus::Failed)
        .await;
    assert_eq!(failed.attempts, 3);
    assert!(failed.delivered_at.is_none());
    let attempts = app.attempts(&failed.notification_id).await;
    assert_eq!(
        attempts
            .iter()
            .map(|(n, outcome, _, status)| (*n, outcome.as_str(), *status))
            .collect::<Vec<_>>(),
        [
            (1, "failed", Some(500)),
            (2, "failed", Some(500)),
            (3, "failed", Some(500))
        ]
    );
    // A FAILED notification is not tried again.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(app.webhook().received().len(), 3);
}

#[tokio::test]
async fn cancelled_and_confirmed_orders_are_listed_by_order_and_by_customer() {
    let mut app = spawn_app(Some(Behaviour::Accept), |_| {}).await;
    // One at a time, so that creation order (newest first in listings) is known.
    app.publish(
        "order-a",
        &cancelled("order-a", "alice", "SKU-1: 2 requested, 1 available"),
    )
    .await;
    let a = app.recorded("order-a", "order_cancelled").await;
    app.publish("order-b", &confirmed("order-b", "alice", 500))
        .await;
    app.recorded("order-b", "order_confirmed").await;
    app.publish("order-c", &confirmed("order-c", "bob", 700))
        .await;
    app.recorded("order-c", "order_confirmed").await;
    app.publish("order-d", &confirmed("order-d", "alice", 1000))
        .await;
    app.recorded("order-d", "order_confirmed").await;
    // Other order events tell the customer nothing.
    app.publish(
        "order-e",
        &order_pb::OrderPlaced {
            order_id: "order-e".into(),
            customer_id: "alice".into(),
            lines: vec![],
            total: eur(100),
        },
    )
    .await;
    app.publish(
        "order-e",
        &order_pb::PaymentRequested {
            order_id: "order-e".into(),
            customer_id: "alice".into(),
            amount: eur(100),
        },
    )
    .await;
    app.applied(6).await;
    assert_eq!(app.notification_count().await, 4);
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM eventing_inbox")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(
        rows, 4,
        "inbox rows for the four told, none for the two passed over"
    );

    let by_a = app.list(by_order("order-a")).await.unwrap();
    assert_eq!(by_a.notifications.len(), 1);
    assert!(by_a.next_page_token.is_empty());
    assert_eq!(by_a.notifications[0].notification_id, a.notification_id);
    assert_eq!(
        (a.kind.as_str(), a.customer_id.as_str(), a.message.as_str()),
        (
            "order_cancelled",
            "alice",
            "Your order order-a was cancelled: out of stock (SKU-1: 2 requested, 1 available)."
        )
    );

    // Alice's, newest first, two per page.
    let first = app.list(by_customer("alice", 2, "")).await.unwrap();
    assert_eq!(order_ids(&first), ["order-d", "order-b"]);
    assert!(!first.next_page_token.is_empty());
    let second = app
        .list(by_customer("alice", 2, &first.next_page_token))
        .await
        .unwrap();
    assert_eq!(order_ids(&second), ["order-a"]);
    assert!(second.next_page_token.is_empty());
    let all = app.list(by_customer("alice", 0, "")).await.unwrap();
    assert_eq!(order_ids(&all), ["order-d", "order-b", "order-a"]);
    assert!(all.next_page_token.is_empty());

    let bob = app.list(by_customer("bob", 0, "")).await.unwrap();
    assert_eq!(order_ids(&bob), ["order-c"]);
    assert_eq!(bob.notifications[0].kind, "order_confirmed");
    let nobody = app.list(by_customer("nobody", 0, "")).await.unwrap();
    assert!(nobody.notifications.is_empty() && nobody.next_page_token.is_empty());

    // Every one of them is delivered in the end.
    for order in ["order-a", "order-b", "order-c", "order-d"] {
        let kind = if order == "order-a" {
            "order_cancelled"
        } else {
            "order_confirmed"
        };
        app.settled(order, kind, pb::DeliveryStatus::Delivered)
            .await;
    }
    assert_eq!(app.webhook().received().len(), 4);
}

#[tokio::test]
async fn bad_listing_requests_get_invalid_argument_naming_the_fields() {
    let mut app = spawn_app(None, |_| {}).await;
    let neither = app
        .list(pb::ListNotificationsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&neither), ["customer_id", "order_id"]);

    let both = app
        .list(pb::ListNotificationsRequest {
            customer_id: "alice".into(),
            order_id: "order-1".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&both), ["customer_id", "order_id"]);

    let too_big = app.list(by_customer("alice", 101, "")).await.unwrap_err();
    assert_eq!(violated_fields(&too_big), ["page_size"]);

    let forged = app
        .list(by_customer("alice", 100, "not-a-token"))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&forged), ["page_token"]);

    let everything = app
        .list(pb::ListNotificationsRequest {
            customer_id: String::new(),
            order_id: String::new(),
            page_size: 1000,
            page_token: "x".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        violated_fields(&everything),
        ["customer_id", "order_id", "page_size", "page_token"]
    );
}

#[tokio::test]
async fn without_a_webhook_notifications_are_delivered_to_the_log() {
    let app = spawn_app(None, |_| {}).await;
    app.publish(
        "order-1",
        &cancelled("order-1", "alice", "SKU-9: 1 requested, 0 available"),
    )
    .await;
    let delivered = app
        .settled("order-1", "order_cancelled", pb::DeliveryStatus::Delivered)
        .await;
    assert_eq!((delivered.channel.as_str(), delivered.attempts), ("log", 1));
    assert_eq!(
        app.attempts(&delivered.notification_id).await,
        [(1, "delivered".to_owned(), None, None)]
    );
}

#[tokio::test]
async fn a_hanging_webhook_does_not_stall_consumption() {
    let webhook_timeout = Duration::from_secs(4);
    let mut app = spawn_app(Some(Behaviour::Hang), |s| {
        s.webhook_timeout = webhook_timeout;
        s.delivery_concurrency = 2;
    })
    .await;
    app.publish("order-0", &confirmed("order-0", "alice", 100))
        .await;
    // The delivery worker is now waiting on the receiver, which never answers.
    let webhook = app.webhook().clone();
    shop_testkit::eventually("the first delivery", Duration::from_secs(30), || {
        let webhook = webhook.clone();
        async move { (!webhook.received().is_empty()).then_some(()) }
    })
    .await;

    let started = tokio::time::Instant::now();
    for i in 1..=5 {
        let order = format!("order-{i}");
        app.publish(&order, &confirmed(&order, "alice", 100)).await;
    }
    shop_testkit::eventually("five more notifications", webhook_timeout, || async {
        (app.notification_count().await == 6).then_some(())
    })
    .await;
    let recorded_in = started.elapsed();
    // Recorded while the first delivery was still hanging: no attempt had ended yet.
    let ended: i64 = sqlx::query_scalar("SELECT count(*) FROM delivery_attempts")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(
        ended, 0,
        "recorded in {recorded_in:?}, before any delivery ended"
    );

    // The hanging delivery then times out: a failed attempt, retried later.
    let first = app.recorded("order-0", "order_confirmed").await;
    let attempts = shop_testkit::eventually(
        "the hanging delivery to time out",
        Duration::from_secs(30),
        || {
            let app = &app;
            let id = first.notification_id.clone();
            async move {
                let attempts = app.attempts(&id).await;
                (!attempts.is_empty()).then_some(attempts)
            }
        },
    )
    .await;
    let (number, outcome, error, http_status) = &attempts[0];
    assert_eq!(
        (*number, outcome.as_str(), *http_status),
        (1, "failed", None)
    );
    assert_eq!(error.as_deref(), Some("no answer within 4000 ms"));
    let listed = app.list(by_order("order-0")).await.unwrap().notifications;
    assert_eq!(listed[0].status(), pb::DeliveryStatus::Pending);
    assert!(listed[0].attempts >= 1);
}

#[tokio::test]
async fn health_reports_serving_then_stops_serving_on_shutdown() {
    let app = spawn_app(None, |_| {}).await;
    shop_testkit::service::assert_serves_then_drains(
        app.addr,
        "shop.notification.v1.NotificationService",
        &app.stop,
    )
    .await;
}

#[tokio::test]
async fn an_order_s_notifications_reach_the_customer_in_order_even_when_the_first_is_retried() {
    // The confirmation's first delivery fails; the cancellation, recorded right after it, must
    // not overtake its retry: "cancelled" then "confirmed" would tell the customer the opposite
    // of what happened.
    let app = spawn_app(Some(Behaviour::FailFirst(1)), |s| {
        s.retry = RetryPolicy {
            max_attempts: 8,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_millis(500),
        };
    })
    .await;
    let mut tx = app.order_db.pool.begin().await.unwrap();
    for event in [
        NewEvent::new(
            &app.order_topic,
            "order-1",
            &confirmed("order-1", "alice", 1999),
        ),
        NewEvent::new(
            &app.order_topic,
            "order-1",
            &cancelled("order-1", "alice", "changed my mind"),
        ),
    ] {
        app.order_outbox.append(&mut tx, event).await.unwrap();
    }
    tx.commit().await.unwrap();
    app.settled("order-1", "order_confirmed", pb::DeliveryStatus::Delivered)
        .await;
    app.settled("order-1", "order_cancelled", pb::DeliveryStatus::Delivered)
        .await;
    let received: Vec<String> = app
        .webhook()
        .received()
        .iter()
        .map(|r| r.body["kind"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        received,
        ["order_confirmed", "order_confirmed", "order_cancelled"],
        "the failed first attempt, its retry, then the cancellation"
    );
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
    let mut app = spawn_app(None, |_| {}).await;
    let request = |customer_id: &str, order_id: &str, page_size: u32, page_token: &str| {
        pb::ListNotificationsRequest {
            customer_id: customer_id.into(),
            order_id: order_id.into(),
            page_size,
            page_token: page_token.into(),
        }
    };
    let cases = vec![
        (
            "customer id with NUL",
            "customer_id",
            request(&nul("alice"), "", 0, ""),
        ),
        (
            "10 kB customer id",
            "customer_id",
            request(&ten_kb(), "", 0, ""),
        ),
        (
            "order id with NUL",
            "order_id",
            request("", &nul("order"), 0, ""),
        ),
        ("10 kB order id", "order_id", request("", &ten_kb(), 0, "")),
        (
            "page size u32::MAX",
            "page_size",
            request("alice", "", u32::MAX, ""),
        ),
        (
            "garbage page token",
            "page_token",
            request("alice", "", 0, "garbage"),
        ),
        (
            "page token with NUL",
            "page_token",
            request("alice", "", 0, &nul("1_")),
        ),
        (
            "page token at i64::MAX",
            "page_token",
            request(
                "alice",
                "",
                0,
                &format!("{}_{}", i64::MAX, uuid::Uuid::nil().simple()),
            ),
        ),
        (
            "10 kB page token",
            "page_token",
            request("alice", "", 0, &ten_kb()),
        ),
    ];
    let mut wrong = Vec::new();
    for (what, field, request) in cases {
        let case = Hostile {
            what,
            field,
            call: app.list(request).await.map(|_| ()),
        };
        match case.call {
            Err(status)
                if status.code() == Code::InvalidArgument
                    && status.get_details_bad_request().is_some_and(|b| {
                        b.field_violations.iter().any(|v| v.field == case.field)
                    }) => {}
            other => wrong.push(format!(
                "ListNotifications {}: expected INVALID_ARGUMENT naming {}, got {other:?}",
                case.what, case.field
            )),
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[tokio::test]
async fn reflection_lists_only_what_this_port_serves() {
    let app = spawn_app(None, |_| {}).await;
    let (v1, v1alpha) = shop_testkit::reflected_services(&format!("http://{}", app.addr))
        .await
        .unwrap();
    let expected = [
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
        "shop.notification.v1.NotificationService",
    ];
    assert_eq!(v1, expected);
    assert_eq!(v1alpha, expected);
}
