//! The local run's launcher (`SuiteProcesses::start_local`, which `shop-run` and so
//! `deploy/run.sh` use): the services on fixed ports, started one after the other, and a
//! service whose port was taken when it started is started again once the port is free.

use std::collections::HashMap;
use std::time::Duration;

use shop_suite::processes::{LocalRun, Service, SuiteConfig, SuiteProcesses, free_port};
use shop_testkit::{TestDb, TestKafka, test_auth};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_whose_port_was_taken_at_its_start_is_started_again_once_it_is_free() {
    let kafka = TestKafka::start();
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let topic = |name: &str| format!("{name}-{suffix}");
    for name in ["order", "inventory", "payment"] {
        kafka.create_topic(&topic(name), 3).await;
    }
    let mut databases = HashMap::new();
    let mut dbs = Vec::new();
    let mut ports = HashMap::new();
    for service in Service::ALL {
        let db = TestDb::create().await;
        databases.insert(service, db.url());
        dbs.push(db);
        ports.insert(service, [free_port(), free_port(), free_port()]);
    }
    let logs = std::env::temp_dir().join(format!("shop-local-run-{suffix}"));
    let auth = test_auth();
    let mut service_env = HashMap::new();
    service_env.insert(
        Service::Order,
        vec![(
            "ORDER_SERVICE_TOKEN_FILE".to_owned(),
            auth.service_token_file("order-service")
                .display()
                .to_string(),
        )],
    );
    // Something else holds inventory's gRPC port as the run starts (as an outgoing
    // connection may hold a port of the ephemeral range), and lets it go 1.5 s later.
    let inventory_grpc = ports[&Service::Inventory][0];
    let squatter = std::net::TcpListener::bind(("127.0.0.1", inventory_grpc)).unwrap();
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        drop(squatter);
    });
    let config = SuiteConfig {
        kafka_bootstrap_servers: kafka.bootstrap_servers().to_owned(),
        databases,
        order_events_topic: topic("order"),
        inventory_events_topic: topic("inventory"),
        payment_events_topic: topic("payment"),
        group_suffix: suffix.clone(),
        otlp_endpoint: None,
        env: auth.env(),
        local: Some(LocalRun {
            ports: ports.clone(),
            logs: logs.clone(),
            service_env,
        }),
    };
    let mut suite = SuiteProcesses::start_local(config, Duration::from_secs(60))
        .await
        .expect("every service serves, inventory at its second or third start");
    release.await.unwrap();
    for service in Service::ALL {
        assert_eq!(
            suite.url(service, 0),
            format!("http://127.0.0.1:{}", ports[&service][0]),
            "{service:?} on the port it was given"
        );
    }
    let inventory_log = std::fs::read_to_string(logs.join("inventory.log")).unwrap();
    assert!(
        inventory_log.contains("Address already in use"),
        "inventory's first start met the taken port:\n{inventory_log}"
    );
    suite.terminate_all(Duration::from_secs(5)).await;
    for service in Service::ALL {
        assert!(suite.pid(service, 0).is_none(), "{service:?} stopped");
    }
    let _ = std::fs::remove_dir_all(&logs);
}
