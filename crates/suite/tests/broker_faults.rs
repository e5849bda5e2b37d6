//! Faults of the broker and of consumer-group members, with the four services as real processes
//! under a steady stream of orders, each scenario ending with the cross-database audit:
//!
//! - the broker killed with SIGKILL mid-stream and restarted on the same log directory (Apache
//!   Kafka in the `deploy/test.sh --broker kafka` run; the mock cluster's brokers taken down and
//!   up otherwise): the running services' relays and consumers recover by themselves;
//! - every consuming service run as two replicas, one of each killed with SIGKILL mid-stream: its
//!   partitions move to the survivor (after the session timeout), which carries on.
//!
//! Each prints how long the suite took to settle after the fault healed.

use std::time::{Duration, Instant};

use shop_suite::audit::AuditReport;
use shop_suite::harness::ProcessSuite;
use shop_suite::processes::Service;
use shop_testkit::TestKafka;

const CUSTOMERS: usize = 8;
const SKUS: usize = 4;

/// A suite seeded with enough stock and money for every order of a test to confirm.
async fn seeded(kafka: TestKafka) -> (ProcessSuite, Vec<String>, Vec<String>) {
    shop_telemetry::init_for_tests();
    let mut suite = ProcessSuite::start(kafka, Vec::new()).await.unwrap();
    let customers: Vec<String> = (0..CUSTOMERS).map(|i| format!("customer-{i}")).collect();
    let skus: Vec<String> = (0..SKUS).map(|i| format!("SKU-{i}")).collect();
    for sku in &skus {
        suite.product(sku, 250, 10_000).await.unwrap();
    }
    for customer in &customers {
        suite.account(customer, 1_000_000).await.unwrap();
    }
    (suite, customers, skus)
}

/// Every order placed reached CONFIRMED (stock and money were plenty), and the audit is clean.
fn every_order_confirmed(report: &AuditReport, placed: &[String]) {
    report.assert_clean();
    assert_eq!(
        report.orders,
        placed.len(),
        "every order placed is recorded once"
    );
    assert_eq!(
        report.confirmed,
        placed.len(),
        "every order confirmed: {report:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broker_killed_mid_stream_and_restarted_loses_no_order_and_applies_nothing_twice() {
    let kafka = TestKafka::own().await;
    let apache = kafka.is_apache();
    let (suite, customers, skus) = seeded(kafka).await;
    let pids: Vec<Option<u32>> = Service::ALL
        .iter()
        .map(|s| suite.processes.pid(*s, 0))
        .collect();

    let stream = suite.stream_orders(20, Duration::from_secs(24), customers, skus);
    tokio::time::sleep(Duration::from_secs(6)).await;
    // SIGKILL of the broker (Apache Kafka) or every mock broker down: connections refused.
    assert!(suite.kafka.set_brokers_down(true), "this test's own broker");
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert!(suite.kafka.set_brokers_down(false));
    let healed = Instant::now();
    let placed = stream.await.unwrap();
    let streamed = healed.elapsed();
    let (settled, report) = suite.settle(Duration::from_secs(180)).await.unwrap();
    eprintln!(
        "broker ({}) down 8 s under a stream of orders: {} orders; the stream went on {:.1} s after the restart, \
         then everything settled in {:.1} s ({:.1} s after the restart)",
        if apache {
            "Apache Kafka, SIGKILL"
        } else {
            "mock cluster"
        },
        placed.len(),
        streamed.as_secs_f64(),
        settled.as_secs_f64(),
        healed.elapsed().as_secs_f64()
    );
    // The services recovered by themselves: the same processes, never restarted.
    let after: Vec<Option<u32>> = Service::ALL
        .iter()
        .map(|s| suite.processes.pid(*s, 0))
        .collect();
    assert_eq!(pids, after);
    every_order_confirmed(&report, &placed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_killed_mid_stream_hands_its_partitions_to_the_survivor() {
    let (mut suite, customers, skus) = seeded(TestKafka::start()).await;
    // A second replica of every service: same database, same group, ports of its own.
    for service in Service::ALL {
        let replica = suite.processes.add(service, Vec::new()).unwrap();
        suite
            .processes
            .wait_serving(service, replica, Duration::from_secs(60))
            .await
            .unwrap();
    }
    // Let the groups rebalance over both replicas before the stream starts.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let stream = suite.stream_orders(20, Duration::from_secs(20), customers, skus);
    tokio::time::sleep(Duration::from_secs(6)).await;
    // Replica 0 of payment and notification (payment's relay leader, started first) and
    // replica 1 of order and inventory (replica 0 of those serves the clients of this test).
    let killed = Instant::now();
    suite.processes.kill(Service::Payment, 0);
    suite.processes.kill(Service::Notification, 0);
    suite.processes.kill(Service::Order, 1);
    suite.processes.kill(Service::Inventory, 1);
    let placed = stream.await.unwrap();
    let streamed = killed.elapsed();
    let (settled, report) = suite.settle(Duration::from_secs(180)).await.unwrap();
    eprintln!(
        "replicas killed under a stream of orders: {} orders; the stream went on {:.1} s after the kills, \
         then everything settled in {:.1} s",
        placed.len(),
        streamed.as_secs_f64(),
        settled.as_secs_f64()
    );
    every_order_confirmed(&report, &placed);
}
