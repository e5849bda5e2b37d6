//! A service whose outbox relay makes no progress says so on its gRPC health service.

use std::time::Duration;

use shop_eventing::{KafkaConfig, NewEvent, Outbox, Relay, RelayConfig};
use shop_runtime::service::ServiceRunner;
use shop_testkit::{TestDb, TestKafka, eventually};
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// The name the runner reports for its API (this test serves no API of its own: only the
/// health and reflection services every runner adds, which is what is under test).
const API: &str = "shop.test.v1.Readiness";

async fn status(
    client: &mut HealthClient<tonic::transport::Channel>,
    service: &str,
) -> ServingStatus {
    let response = client
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .unwrap();
    response.into_inner().status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_without_progress_turns_the_service_not_ready_until_it_recovers() {
    shop_telemetry::init_for_tests();
    let db = TestDb::create().await;
    shop_eventing::migrate(&db.pool).await.unwrap();
    // A broker of its own, which the test takes down (in the Apache Kafka run, a private
    // process killed with SIGKILL).
    let kafka = TestKafka::own().await;
    let topic = TestKafka::unique_topic("readiness");
    kafka.create_topic(&topic, 1).await;
    let relay = Relay::new(
        db.connect_options(),
        &KafkaConfig::new(kafka.bootstrap_servers()),
        RelayConfig {
            stall_timeout: Duration::from_secs(2),
            ..RelayConfig::default()
        },
    )
    .unwrap();
    let outbox = Outbox::new("/shop/test").waking(relay.waker());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let runner = ServiceRunner::new(
        listener,
        Routes::default(),
        API,
        Duration::from_secs(10),
        shop_runtime::auth::Authenticator::from_jwks(
            &shop_testkit::test_auth().issuer().jwks(),
            shop_testkit::auth::ISSUER,
            shop_testkit::auth::AUDIENCE,
        )
        .unwrap(),
        stop.clone(),
    )
    .relay(relay);
    let service = tokio::spawn(runner.run());
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    eventually("the service to be ready", Duration::from_secs(10), || {
        let mut health = health.clone();
        async move { (status(&mut health, API).await == ServingStatus::Serving).then_some(()) }
    })
    .await;

    assert!(kafka.set_brokers_down(true), "a broker of the test's own");
    shop_eventing::committing(async {
        let mut tx = db.pool.begin().await?;
        outbox
            .append(
                &mut tx,
                NewEvent::raw(&topic, "order-1", "shop.test.v1.Sequenced", b"1".to_vec()),
            )
            .await?;
        tx.commit().await
    })
    .await
    .unwrap();

    eventually("readiness to reflect the stalled relay", Duration::from_secs(20), || {
        let mut health = health.clone();
        async move { (status(&mut health, API).await == ServingStatus::NotServing).then_some(()) }
    })
    .await;
    // Liveness stays: restarting the process would not bring the broker back.
    assert_eq!(status(&mut health, "").await, ServingStatus::Serving);

    assert!(kafka.set_brokers_down(false));
    eventually("readiness to come back", Duration::from_secs(30), || {
        let mut health = health.clone();
        async move { (status(&mut health, API).await == ServingStatus::Serving).then_some(()) }
    })
    .await;
    stop.cancel();
    service.await.unwrap().unwrap();
}
