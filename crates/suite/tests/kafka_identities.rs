//! Kafka identities and ACLs, on a private Apache Kafka secured as in production (SASL/SCRAM-
//! SHA-512, access by ACL only), with each process's identity and ACLs taken from
//! `deploy/topology.yaml` exactly as `deploy/run.sh --broker kafka` sets them up: each service
//! may write only its own topic and dead-letter topic and read only what it consumes; a producer
//! with another service's identity is refused, and so is a wrong password.
//!
//! Needs Apache Kafka (`SHOP_KAFKA_LIBS`): it runs in `deploy/test.sh --broker kafka`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use shop_testkit::apache::{self, ApacheKafka, Scram};
use shop_testkit::{Topology, test_broker_is_apache};

/// The client-level errors librdkafka reported (authentication failures arrive here).
#[derive(Clone, Default)]
struct Errors(Arc<Mutex<Vec<ClientError>>>);

/// An error code and librdkafka's reason.
type ClientError = (Option<RDKafkaErrorCode>, String);

impl ClientContext for Errors {
    fn error(&self, error: KafkaError, reason: &str) {
        self.0
            .lock()
            .unwrap()
            .push((error.rdkafka_error_code(), reason.to_owned()));
    }
}

impl rdkafka::producer::ProducerContext for Errors {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &rdkafka::message::DeliveryResult<'_>, _: Self::DeliveryOpaque) {}
}

fn client(broker: &ApacheKafka, user: &str, password: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", broker.bootstrap_servers())
        .set("message.timeout.ms", "10000")
        .set("log_level", "3");
    for (k, v) in broker.client_properties(user, password) {
        config.set(k, v);
    }
    config
}

/// Produces one record as `user`; the broker's verdict.
async fn produce(
    broker: &ApacheKafka,
    user: &str,
    password: &str,
    topic: &str,
) -> Result<(), KafkaError> {
    let producer: FutureProducer = client(broker, user, password)
        .set("enable.idempotence", "true")
        .create()
        .expect("producer");
    producer
        .send(
            FutureRecord::to(topic).key("k").payload("v"),
            Duration::from_secs(15),
        )
        .await
        .map(|_| ())
        .map_err(|(e, _)| e)
}

fn refused(result: Result<(), KafkaError>) -> RDKafkaErrorCode {
    match result {
        Ok(()) => panic!("the broker accepted what it should have refused"),
        Err(error) => error
            .rdkafka_error_code()
            .unwrap_or_else(|| panic!("refused without a code: {error}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_identity_may_do_only_what_its_service_needs() {
    if !test_broker_is_apache() {
        eprintln!("skipped: needs Apache Kafka (deploy/test.sh --broker kafka)");
        return;
    }
    let topology = Topology::of_repository();
    let password = |user: &str| format!("{user}-password");
    let scram = Scram {
        admin_password: "admin-password".into(),
        users: topology
            .services
            .iter()
            .map(|s| (s.kafka_user().to_owned(), password(s.kafka_user())))
            .collect(),
    };
    let dir = std::env::temp_dir().join(format!("shop-acl-{}", uuid::Uuid::new_v4().simple()));
    let mut broker = ApacheKafka::new(
        ApacheKafka::libs_from_env().expect("SHOP_KAFKA_LIBS"),
        &dir,
        "384m",
    )
    .with_scram(scram);
    broker.start().await.expect("a SCRAM Apache Kafka");
    apache::create_topics(
        &broker.bootstrap_servers(),
        &broker.admin_properties(),
        &topology.topics_to_create(false),
    )
    .await
    .unwrap();
    let grants: Vec<_> = topology.services.iter().map(|s| s.kafka_grants()).collect();
    broker.grant(&grants).await.unwrap();

    // Each service writes its own topic and its own dead-letter topic.
    for service in &topology.services {
        let user = service.kafka_user();
        for topic in service
            .produces
            .iter()
            .chain([&format!("{}.dlq", service.consumer_group)])
        {
            produce(&broker, user, &password(user), topic)
                .await
                .unwrap_or_else(|e| panic!("{user} may write {topic}: {e}"));
        }
    }
    // Another service's identity cannot write the order service's topic.
    let events = shop_proto::topics::ORDER_EVENTS;
    assert_eq!(
        refused(
            produce(
                &broker,
                "payment-service",
                &password("payment-service"),
                events
            )
            .await
        ),
        RDKafkaErrorCode::TopicAuthorizationFailed,
        "payment-service must not write {events}"
    );
    // Nor the example subscriber, which only reads.
    assert_eq!(
        refused(
            produce(
                &broker,
                "sales-analytics",
                &password("sales-analytics"),
                events
            )
            .await
        ),
        RDKafkaErrorCode::TopicAuthorizationFailed
    );
    // Nor anyone without the right password: the broker ends the login, and librdkafka reports
    // why on the connection (a produce would only time out).
    let errors = Errors::default();
    let wrong: BaseProducer<Errors> = client(&broker, "order-service", "wrong")
        .create_with_context(errors.clone())
        .unwrap();
    let polled = errors.clone();
    tokio::task::spawn_blocking(move || {
        let _ = wrong.client().fetch_metadata(None, Duration::from_secs(5));
        // Client errors are delivered by polling.
        for _ in 0..100 {
            wrong.poll(Duration::from_millis(100));
            if !polled.0.lock().unwrap().is_empty() {
                break;
            }
        }
    })
    .await
    .unwrap();
    let seen = errors.0.lock().unwrap().clone();
    assert!(
        seen.iter().any(
            |(code, reason)| *code == Some(RDKafkaErrorCode::Authentication)
                && reason.contains("invalid credentials")
        ),
        "a wrong password must fail the SCRAM login: {seen:?}"
    );

    // Reading: the example subscriber reads order.events.v1 in its own group, and nothing else.
    let read = |user: &'static str, topic: &'static str, group: &'static str| {
        let consumer: StreamConsumer = client(&broker, user, &password(user))
            .set("group.id", group)
            .set("auto.offset.reset", "earliest")
            .create()
            .expect("consumer");
        async move {
            consumer.subscribe(&[topic]).unwrap();
            match tokio::time::timeout(Duration::from_secs(30), consumer.recv()).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(e),
                Err(_) => panic!("{user} reading {topic}: no record and no error in 30 s"),
            }
        }
    };
    read("sales-analytics", events, "sales-analytics")
        .await
        .expect("sales-analytics reads order.events.v1");
    let denied = read(
        "sales-analytics",
        shop_proto::topics::PAYMENT_EVENTS,
        "sales-analytics",
    )
    .await;
    assert!(
        matches!(
            denied.as_ref().map_err(KafkaError::rdkafka_error_code),
            Err(Some(RDKafkaErrorCode::TopicAuthorizationFailed))
        ),
        "sales-analytics must not read payment.events.v1: {denied:?}"
    );
    let other_group = read("sales-analytics", events, "order-service").await;
    assert!(
        matches!(
            other_group.as_ref().map_err(KafkaError::rdkafka_error_code),
            Err(Some(RDKafkaErrorCode::GroupAuthorizationFailed))
        ),
        "sales-analytics must not join order-service's group: {other_group:?}"
    );
    drop(broker);
    let _ = std::fs::remove_dir_all(dir);
}
