//! A chaos run: the four services as real processes, two replicas each, on fresh databases and
//! topics; orders from many customers (some poor, some buying scarce stock, some cancelling)
//! for `--seconds`, while random service processes are killed with SIGKILL and restarted a
//! moment later (and, with `--broker kafka`, the Apache Kafka broker too). Then everything is
//! healed, the suite is given time to settle, and the cross-database audit's invariants are
//! printed as a table, each with its count of violations. Exits non-zero on any violation.
//!
//! ```text
//! shop-chaos [--seconds N] [--broker mock|kafka] [--rate ORDERS_PER_SECOND] [--seed N]
//! ```
//!
//! PostgreSQL comes from `DATABASE_URL` (every database is created for the run and dropped
//! after); the broker is a mock cluster of its own or, with `--broker kafka`, a private Apache
//! Kafka from the jars in `SHOP_KAFKA_LIBS`. `deploy/chaos.sh` sets both up.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use shop_suite::audit::AuditReport;
use shop_suite::harness::{ProcessSuite, ShopSpec, StreamReport};
use shop_suite::processes::Service;
use shop_testkit::TestKafka;

const USAGE: &str =
    "shop-chaos [--seconds N] [--broker mock|kafka] [--rate ORDERS_PER_SECOND] [--seed N]";

/// How long the suite may take to settle once every fault has healed.
const SETTLE: Duration = Duration::from_secs(180);

struct Args {
    seconds: u64,
    apache: bool,
    rate: u32,
    seed: u64,
}

fn parse() -> anyhow::Result<Args> {
    let mut args = Args {
        seconds: 60,
        apache: false,
        rate: 20,
        seed: u64::from(std::process::id()) ^ 0x9e37_79b9_7f4a_7c15,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .with_context(|| format!("{name} needs a value\n{USAGE}"))
        };
        match arg.as_str() {
            "--seconds" => args.seconds = value("--seconds")?.parse()?,
            "--rate" => args.rate = value("--rate")?.parse()?,
            "--seed" => args.seed = value("--seed")?.parse()?,
            "--broker" => {
                args.apache = match value("--broker")?.as_str() {
                    "kafka" => true,
                    "mock" => false,
                    other => bail!("--broker is mock or kafka, not {other}\n{USAGE}"),
                }
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other}\n{USAGE}"),
        }
    }
    Ok(args)
}

/// xorshift64*: enough randomness to pick victims, reproducible with `--seed`.
struct Dice(u64);

impl Dice {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// A duration between `low` and `high` milliseconds.
    fn millis(&mut self, low: u64, high: u64) -> Duration {
        Duration::from_millis(low + self.below(high.saturating_sub(low) + 1))
    }
}

/// What is down, and when it comes back.
enum Down {
    Replica(Service, usize),
    Broker,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() -> anyhow::Result<()> {
    let args = parse()?;
    let outcome = run(&args).await?;
    std::process::exit(i32::from(!outcome));
}

/// Runs the chaos and prints the table; `Ok(false)` when an invariant was violated.
async fn run(args: &Args) -> anyhow::Result<bool> {
    let kafka = if args.apache {
        TestKafka::apache().await
    } else {
        TestKafka::mock(1)
    };
    let broker = if args.apache {
        "Apache Kafka"
    } else {
        "mock cluster"
    };
    eprintln!(
        "shop-chaos: {} s of orders at {}/s with SIGKILLs ({broker}, seed {})",
        args.seconds, args.rate, args.seed
    );
    let mut suite = ProcessSuite::start(kafka, Vec::new()).await?;
    let shop = suite
        .open_shop(&ShopSpec {
            rich: 24,
            poor: 6,
            plentiful: 4,
            scarce: 2,
            scarce_stock: 12,
            ..ShopSpec::default()
        })
        .await?;
    // Two replicas of each service: a kill leaves the other one working.
    for service in Service::ALL {
        suite.processes.add(service, Vec::new())?;
    }
    for service in Service::ALL {
        suite
            .processes
            .wait_serving(service, 1, Duration::from_secs(60))
            .await?;
    }

    let mut dice = Dice(args.seed.max(1));
    let duration = Duration::from_secs(args.seconds);
    let stream = suite.stream_shop(args.rate, duration, &shop);
    let started = Instant::now();
    let mut down: Vec<(Instant, Down)> = Vec::new();
    let mut kills: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut next_kill = started + dice.millis(1500, 4000);
    let mut last_broker_kill = started;
    while started.elapsed() < duration {
        let now = Instant::now();
        // Bring back what is due.
        let mut still_down = Vec::new();
        for (due, what) in down.drain(..) {
            if due > now {
                still_down.push((due, what));
                continue;
            }
            match what {
                Down::Replica(service, replica) => suite.processes.restart(service, replica)?,
                Down::Broker => {
                    suite.kafka.set_brokers_down(false);
                }
            }
        }
        down = still_down;
        if now >= next_kill {
            let broker_down = down.iter().any(|(_, d)| matches!(d, Down::Broker));
            // On Apache Kafka the broker dies too: at random, at most every 20 s, and at least
            // once by a third of the run.
            let broker_due = !kills.contains_key("broker") && now - started > duration / 3;
            let broker_dice =
                now - last_broker_kill > Duration::from_secs(20) && dice.below(6) == 0;
            if args.apache && !broker_down && (broker_due || broker_dice) {
                suite.kafka.set_brokers_down(true);
                last_broker_kill = now;
                *kills.entry("broker").or_default() += 1;
                down.push((now + dice.millis(2000, 6000), Down::Broker));
            } else {
                let service = Service::ALL[usize::try_from(dice.below(4)).unwrap_or(0)];
                let replica = usize::try_from(dice.below(2)).unwrap_or(0);
                if suite.processes.pid(service, replica).is_some() {
                    suite.processes.kill(service, replica);
                    *kills.entry(service.name()).or_default() += 1;
                    down.push((
                        now + dice.millis(500, 3000),
                        Down::Replica(service, replica),
                    ));
                }
            }
            next_kill = now + dice.millis(1500, 4000);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Heal everything.
    for (_, what) in down.drain(..) {
        match what {
            Down::Replica(service, replica) => suite.processes.restart(service, replica)?,
            Down::Broker => {
                suite.kafka.set_brokers_down(false);
            }
        }
    }
    for service in Service::ALL {
        for replica in 0..suite.processes.replicas(service) {
            if suite.processes.exited(service, replica).is_some() {
                eprintln!(
                    "shop-chaos: {service:?} replica {replica} had exited by itself; restarting it"
                );
                suite.processes.restart(service, replica)?;
            }
        }
    }
    let healed = Instant::now();
    let placed = match stream.await {
        Ok(report) => Ok(report),
        Err(error) => Err(format!("the client gave up: {error}")),
    };
    let settled = suite.settle(SETTLE).await;
    let settle_time = healed.elapsed();
    let caught_up = suite.wait_caught_up(Duration::from_secs(30)).await;
    let report = suite.audit().await?;
    let table = Table::build(&suite, &report, placed.as_ref().ok(), caught_up.is_ok()).await?;
    table.print();
    let total_kills: usize = kills.values().sum();
    let kills_text = kills
        .iter()
        .map(|(what, n)| format!("{what} {n}"))
        .collect::<Vec<_>>()
        .join(", ");
    match &placed {
        Ok(stream) => println!(
            "orders: {} placed ({} confirmed, {} cancelled, {} of them by their customer)",
            stream.orders.len(),
            report.confirmed,
            report.cancelled,
            stream.cancelled_by_customer
        ),
        Err(error) => println!("orders: {error}"),
    }
    println!(
        "kills: {total_kills} SIGKILLs ({kills_text}) in {} s ({broker})",
        args.seconds
    );
    match &settled {
        Ok((took, _)) => println!(
            "settled: {:.1} s after the last fault healed (bound {SETTLE:?})",
            took.as_secs_f64()
        ),
        Err(error) => println!("settled: NOT within {SETTLE:?} ({settle_time:?}): {error}"),
    }
    println!(
        "seed: {} (shop-chaos --seed {} reproduces the choice of victims)",
        args.seed, args.seed
    );
    Ok(table.clean() && settled.is_ok() && placed.is_ok())
}

/// Each invariant and its violations.
struct Table {
    rows: Vec<(&'static str, Vec<String>)>,
}

/// The audit's findings, by the invariant they break (the first matching row).
const AUDIT_ROWS: [(&str, &[&str]); 6] = [
    (
        "every order terminal (none still PENDING)",
        &["still PENDING"],
    ),
    (
        "confirmed <=> captured once, for the order's total",
        &["CONFIRMED but payment", "CANCELLED but its payment"],
    ),
    (
        "money: balance = deposits - captured + refunded",
        &["money "],
    ),
    (
        "stock conserved, nothing held by a finished order",
        &[
            "stock ",
            "CONFIRMED but reservation",
            "CANCELLED but its stock",
        ],
    ),
    ("one notification per outcome", &["notifications"]),
    ("other audit findings", &[""]),
];

/// The audit's violations under the invariant each breaks, every row present.
fn classify(violations: &[String]) -> Vec<(&'static str, Vec<String>)> {
    let mut rows: Vec<(&'static str, Vec<String>)> = AUDIT_ROWS
        .iter()
        .map(|(name, _)| (*name, Vec::new()))
        .collect();
    for violation in violations {
        let row = AUDIT_ROWS
            .iter()
            .position(|(_, needles)| needles.iter().any(|n| violation.contains(n)))
            .unwrap_or(AUDIT_ROWS.len() - 1);
        rows[row].1.push(violation.clone());
    }
    rows
}

impl Table {
    async fn build(
        suite: &ProcessSuite,
        report: &AuditReport,
        placed: Option<&StreamReport>,
        caught_up: bool,
    ) -> anyhow::Result<Self> {
        let mut rows = classify(&report.violations);

        let mut keys = Vec::new();
        if let Some(stream) = placed {
            let distinct: std::collections::BTreeSet<&String> = stream.orders.iter().collect();
            if distinct.len() != stream.keys {
                keys.push(format!(
                    "{} idempotency keys gave {} distinct orders",
                    stream.keys,
                    distinct.len()
                ));
            }
            if report.orders != stream.keys {
                keys.push(format!(
                    "{} orders recorded for {} keys",
                    report.orders, stream.keys
                ));
            }
        } else {
            keys.push("the client gave up: orders unknown".to_owned());
        }
        rows.insert(0, ("one order per idempotency key", keys));

        let mut outboxes = Vec::new();
        let mut dead = Vec::new();
        for (service, pool) in Service::ALL.iter().zip(suite.dbs.all()) {
            let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM eventing_outbox")
                .fetch_one(pool)
                .await?;
            if rows > 0 {
                outboxes.push(format!("{service:?}: {rows} event(s) never published"));
            }
            // No invalid record was sent: every dead letter is a valid record given up on.
            let letters: Vec<(String, String)> =
                sqlx::query_as("SELECT coalesce(event_type, ''), error FROM eventing_dead_letter")
                    .fetch_all(pool)
                    .await?;
            dead.extend(
                letters.into_iter().map(|(kind, error)| {
                    format!("{service:?} dead-lettered a valid {kind}: {error}")
                }),
            );
        }
        rows.push(("outboxes drained", outboxes));
        rows.push(("nothing valid dead-lettered", dead));
        let lag = if caught_up {
            Vec::new()
        } else {
            suite
                .lag()
                .await?
                .into_iter()
                .filter(|(_, _, lag)| *lag > 0)
                .map(|(service, topic, lag)| format!("{service:?} lags {lag} on {topic}"))
                .collect()
        };
        rows.push(("every consumer caught up (lag 0)", lag));
        Ok(Self { rows })
    }

    fn clean(&self) -> bool {
        self.rows.iter().all(|(_, v)| v.is_empty())
    }

    fn print(&self) {
        let width = self
            .rows
            .iter()
            .map(|(name, _)| name.len())
            .max()
            .unwrap_or(0);
        println!("{:<width$}  violations", "invariant");
        for (name, violations) in &self.rows {
            println!("{name:<width$}  {}", violations.len());
        }
        for (name, violations) in &self.rows {
            for violation in violations.iter().take(10) {
                println!("  {name}: {violation}");
            }
            if violations.len() > 10 {
                println!("  {name}: ... and {} more", violations.len() - 10);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_audit_finding_counts_against_its_invariant() {
        let violations = [
            "order 1: still PENDING",
            "order 2: CONFIRMED but payment is None (total 250)",
            "order 3: CANCELLED but its payment is still captured",
            "money rich-1: balance 0 + captured 250 != deposits 500",
            "stock SKU-0: reserved 1 != 0 units in open reservations",
            "order 4: CANCELLED but its stock is Some(\"reserved\")",
            "order 5 (confirmed): notifications [], expected [\"order_confirmed\"]",
            "something the audit learns to say later",
        ]
        .map(str::to_owned);
        let counts: Vec<usize> = classify(&violations).iter().map(|(_, v)| v.len()).collect();
        assert_eq!(counts, [1, 2, 1, 2, 1, 1]);
    }
}
