//! What waking the relay costs the writers: outbox-writing commits per second, 16 concurrent
//! writers, with the wake-up the crate uses (in-process, after the commit) and with the NOTIFY
//! trigger it used before (migrations/1_outbox.sql, dropped by 3_relay.sql).
//!
//! ```text
//! cargo bench --locked -p shop-eventing --bench commits
//! ```
//! with `DATABASE_URL` (and optionally `KAFKA_BOOTSTRAP_SERVERS`) set. Knobs: `BENCH_WRITERS`
//! (default 16), `BENCH_SECONDS` (per phase, default 10).
//!
//! Each writer commits transactions of one `Outbox::append` (a 300-byte event) under
//! `committing`, as the services' calls do. Two relays run meanwhile, as two replicas would; the
//! leader publishes and deletes the rows.
//!
//! 1. **Before**: the trigger of the old migration, recreated as it was; the leader is woken by
//!    its NOTIFY (it LISTENs on the same channel), the outbox wakes nothing.
//! 2. **Now**: no trigger; the writers' outbox wakes the *standby*, which passes each wake-up on
//!    with a NOTIFY from a statement of its own: the cross-replica path, and the worst case for
//!    it (every commit happens on a replica that does not relay).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use shop_eventing::{KafkaConfig, NewEvent, Outbox, Relay, RelayConfig};
use shop_testkit::{TestDb, TestKafka};
use sqlx::postgres::PgPoolOptions;
use tokio_util::sync::CancellationToken;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The trigger of migrations/1_outbox.sql.
const NOTIFY_TRIGGER: &str = "
    CREATE FUNCTION eventing_outbox_notify() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_notify('eventing_outbox', '');
        RETURN NULL;
    END
    $$;
    CREATE TRIGGER eventing_outbox_notify
        AFTER INSERT ON eventing_outbox
        FOR EACH STATEMENT EXECUTE FUNCTION eventing_outbox_notify();";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = shop_telemetry::init("commits-bench", "warn");
    let writers = env_or("BENCH_WRITERS", 16);
    let seconds = env_or("BENCH_SECONDS", 10);

    let db = TestDb::create().await;
    shop_eventing::migrate(&db.pool).await?;
    let kafka = TestKafka::start();
    let config = KafkaConfig::new(kafka.bootstrap_servers());
    let topic = TestKafka::unique_topic("bench-commits");
    kafka.create_topic(&topic, 6).await;
    let server_version: String = sqlx::query_scalar("SHOW server_version")
        .fetch_one(&db.pool)
        .await?;
    println!(
        "commit benchmark: {writers} writers, {seconds} s per phase, PostgreSQL {server_version}, {} cores",
        std::thread::available_parallelism().map_or(0, std::num::NonZero::get)
    );

    let stop = CancellationToken::new();
    let leader = Relay::new(db.connect_options(), &config, RelayConfig::default())?;
    let leader_health = leader.health();
    let mut relays = vec![tokio::spawn({
        let stop = stop.clone();
        async move { leader.run(stop).await }
    })];
    while !leader_health.status().leading {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let standby = Relay::new(db.connect_options(), &config, RelayConfig::default())?;
    let waking_standby = Outbox::new("/shop/bench").waking(standby.waker());
    relays.push(tokio::spawn({
        let stop = stop.clone();
        async move { standby.run(stop).await }
    }));

    let pool = PgPoolOptions::new()
        .max_connections(u32::try_from(writers)?)
        .connect_with(db.connect_options())
        .await?;
    sqlx::raw_sql(NOTIFY_TRIGGER).execute(&pool).await?;
    let before = phase(&pool, &Outbox::new("/shop/bench"), &topic, writers, seconds).await?;
    println!("NOTIFY in the business commit (the former trigger): {before:.0} commits/s");
    sqlx::raw_sql(
        "DROP TRIGGER eventing_outbox_notify ON eventing_outbox; DROP FUNCTION eventing_outbox_notify();",
    )
    .execute(&pool)
    .await?;
    let after = phase(&pool, &waking_standby, &topic, writers, seconds).await?;
    println!(
        "wake-up after the commit, NOTIFY from the standby's own statement (now): {after:.0} commits/s ({:.2}x)",
        after / before
    );

    stop.cancel();
    for relay in relays {
        relay.await??;
    }
    Ok(())
}

/// Commits per second of `writers` concurrent writers over `seconds`.
async fn phase(
    pool: &sqlx::PgPool,
    outbox: &Outbox,
    topic: &str,
    writers: u64,
    seconds: u64,
) -> anyhow::Result<f64> {
    let commits = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for writer in 0..writers {
        let (pool, outbox, topic, commits) = (
            pool.clone(),
            outbox.clone(),
            topic.to_owned(),
            commits.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut n = 0_u64;
            while Instant::now() < deadline {
                let event = NewEvent::raw(
                    &topic,
                    format!("order-{writer}-{n}"),
                    "shop.bench.v1.Tick",
                    vec![b'x'; 300],
                );
                shop_eventing::committing(async {
                    let mut tx = pool.begin().await?;
                    outbox.append(&mut tx, event).await?;
                    tx.commit().await
                })
                .await?;
                commits.fetch_add(1, Ordering::Relaxed);
                n += 1;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    #[allow(clippy::cast_precision_loss)]
    Ok(commits.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}
