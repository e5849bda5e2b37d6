//! What an idle consumer costs a broker, by `fetch.wait.max.ms`: fetch requests per second and
//! the CPU of the consumer process, over a quiet topic (no record arrives), for each wait given.
//!
//! ```text
//! KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 cargo run --release -p shop-testkit --example idle_fetch -- 20 100 500
//! ```
//! With `BROKER_PID` set, the broker process's CPU over each window too.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};

#[derive(Clone, Default)]
struct Fetches(Arc<Mutex<i64>>);

impl ClientContext for Fetches {
    fn stats(&self, statistics: rdkafka::Statistics) {
        let fetches: i64 = statistics
            .brokers
            .values()
            .filter_map(|b| b.req.get("Fetch"))
            .sum();
        *self.0.lock().unwrap() = fetches;
    }
}
impl ConsumerContext for Fetches {}

/// utime + stime of a process, in seconds (`/proc/<pid>/stat`, clock ticks of 1/100 s).
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

fn main() -> anyhow::Result<()> {
    let bootstrap = std::env::var("KAFKA_BOOTSTRAP_SERVERS")?;
    let broker = std::env::var("BROKER_PID").ok();
    let window = Duration::from_secs(20);
    let waits: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let topic = format!("idle-{}", uuid::Uuid::new_v4().simple());
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(shop_testkit::apache::create_topics(
        &bootstrap,
        &[],
        &[shop_testkit::topology::TopicToCreate {
            name: topic.clone(),
            partitions: 6,
            replicas: 1,
            config: Default::default(),
        }],
    ))?;
    println!("idle consumer of a 6-partition topic, {window:?} per setting, broker {bootstrap}");
    println!("fetch.wait.max.ms  fetches/s  consumer CPU  broker CPU");
    for wait in waits {
        let fetches = Fetches::default();
        let consumer: BaseConsumer<Fetches> = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set(
                "group.id",
                format!("idle-{wait}-{}", uuid::Uuid::new_v4().simple()),
            )
            .set("fetch.wait.max.ms", wait.to_string())
            .set("statistics.interval.ms", "1000")
            .create_with_context(fetches.clone())?;
        consumer.subscribe(&[&topic])?;
        // Joined and fetching before the window starts.
        let warm = Instant::now();
        while warm.elapsed() < Duration::from_secs(8) {
            let _ = consumer.poll(Duration::from_millis(100));
        }
        let (f0, c0, b0) = (
            *fetches.0.lock().unwrap(),
            cpu_seconds("self"),
            broker.as_deref().map_or(0.0, cpu_seconds),
        );
        let started = Instant::now();
        while started.elapsed() < window {
            let _ = consumer.poll(Duration::from_millis(100));
        }
        let secs = started.elapsed().as_secs_f64();
        let f1 = *fetches.0.lock().unwrap();
        let consumer_cpu = (cpu_seconds("self") - c0) / secs * 100.0;
        let broker_cpu = broker.as_deref().map_or("-".to_owned(), |p| {
            format!("{:.1} %", (cpu_seconds(p) - b0) / secs * 100.0)
        });
        println!(
            "{wait:>17}  {:>9.1}  {consumer_cpu:>10.1} %  {broker_cpu:>10}",
            (f1 - f0) as f64 / secs
        );
    }
    Ok(())
}
