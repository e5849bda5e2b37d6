//! The dev broker process: other processes reach its mock cluster over loopback, with topics
//! created as asked, records and headers intact.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

#[tokio::test(flavor = "multi_thread")]
async fn dev_kafka_serves_other_processes_until_terminated() {
    let dir = std::env::temp_dir().join(format!("dev-kafka-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bootstrap");
    let mut child = Command::new(env!("CARGO_BIN_EXE_dev-kafka"))
        .args([
            "--bootstrap-file",
            file.to_str().unwrap(),
            "--topic",
            "orders:3",
        ])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !file.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "dev-kafka did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let bootstrap = std::fs::read_to_string(&file).unwrap();
    assert!(
        bootstrap.starts_with("127.0.0.1:") || bootstrap.starts_with("localhost:"),
        "{bootstrap}"
    );

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("enable.idempotence", "true")
        .create()
        .unwrap();
    producer
        .send(
            FutureRecord::to("orders")
                .key("order-1")
                .payload("hello")
                .headers(OwnedHeaders::new().insert(Header {
                    key: "ce_id",
                    value: Some("e-1"),
                })),
            Duration::from_secs(10),
        )
        .await
        .unwrap();

    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", "dev-kafka-test")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&["orders"]).unwrap();
    let message = tokio::time::timeout(Duration::from_secs(20), consumer.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(message.key(), Some(&b"order-1"[..]));
    assert_eq!(message.payload(), Some(&b"hello"[..]));
    assert_eq!(message.headers().unwrap().get(0).value, Some(&b"e-1"[..]));
    let metadata = consumer
        .fetch_metadata(Some("orders"), Duration::from_secs(5))
        .unwrap();
    assert_eq!(
        metadata.topics()[0].partitions().len(),
        3,
        "topic created with the asked partitions"
    );
    // Closing a group member blocks until the group coordinator answers, which this test does
    // not need to wait for: the process ends right after.
    std::mem::forget(consumer);
    drop(producer);

    // SIGTERM stops it cleanly and removes the bootstrap file.
    Command::new("kill")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(!file.exists());
    let _ = std::fs::remove_dir_all(dir);
}
