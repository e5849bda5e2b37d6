//! The session settings every service connection carries, against a real PostgreSQL: what a
//! vanished client holds is released in seconds.

use std::time::{Duration, Instant};

use shop_runtime::database;
use shop_testkit::{TcpProxy, TestDb};
use sqlx::ConnectOptions;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_left_open_by_a_vanished_client_releases_its_row_locks_within_seconds() {
    shop_telemetry::init_for_tests();
    let db = TestDb::create().await;
    sqlx::query("CREATE TABLE accounts (id integer PRIMARY KEY, balance integer NOT NULL)")
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO accounts VALUES (1, 100)")
        .execute(&db.pool)
        .await
        .unwrap();
    let direct = db.connect_options();
    let upstream = tokio::net::lookup_host((direct.get_host(), direct.get_port()))
        .await
        .unwrap()
        .next()
        .unwrap();
    let proxy = TcpProxy::start(upstream).await.unwrap();
    let through_proxy = direct
        .clone()
        .host("127.0.0.1")
        .port(proxy.addr().port())
        .to_url_lossy()
        .to_string();
    let shutdown = CancellationToken::new();
    let vanishing = database::connect(&through_proxy, 1, Duration::from_secs(10), &shutdown)
        .await
        .unwrap();
    let healthy = database::connect(
        direct.to_url_lossy().as_ref(),
        1,
        Duration::from_secs(10),
        &shutdown,
    )
    .await
    .unwrap();

    // A consumer's batch transaction takes a hot row's lock, then its node drops off the
    // network: the server still sees an open connection, idle in its transaction.
    let mut tx = vanishing.begin().await.unwrap();
    sqlx::query("SELECT balance FROM accounts WHERE id = 1 FOR UPDATE")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    proxy.black_hole();
    let cut_at = Instant::now();

    // Another replica needs the row: it gets it once the server ended the silent transaction.
    let locked = tokio::time::timeout(
        Duration::from_secs(40),
        sqlx::query("UPDATE accounts SET balance = balance - 1 WHERE id = 1").execute(&healthy),
    )
    .await
    .expect("the vanished client's lock is still held after 40 s")
    .unwrap();
    let waited = cut_at.elapsed();
    eprintln!("the row lock of the vanished client was released {waited:?} after the cut");
    assert_eq!(locked.rows_affected(), 1);
    assert!(waited < Duration::from_secs(14), "{waited:?}");
    drop(tx);
}

#[tokio::test]
async fn service_connections_carry_the_session_settings() {
    shop_telemetry::init_for_tests();
    let db = TestDb::create().await;
    let shutdown = CancellationToken::new();
    let pool = database::connect(&db.url(), 1, Duration::from_secs(10), &shutdown)
        .await
        .unwrap();
    for (name, expected) in [
        ("statement_timeout", "30s"),
        ("lock_timeout", "15s"),
        ("idle_in_transaction_session_timeout", "10s"),
        ("tcp_keepalives_idle", "10"),
        ("tcp_keepalives_interval", "3"),
        ("tcp_keepalives_count", "3"),
        ("tcp_user_timeout", "20000"),
    ] {
        let value: String = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SHOW {name}")))
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(value, expected, "{name}");
    }
}
