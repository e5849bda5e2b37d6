//! A local Kafka broker for development, with the suite's topics: librdkafka's mock cluster
//! (instant, in memory), or a single-node Apache Kafka from the jars `deploy/lib.sh` resolved.
//! Services, tests and Kafka's own command-line tools in other processes reach it on loopback.
//!
//! ```text
//! dev-kafka [--brokers N] [--bootstrap-file PATH] [--topology FILE] [--topic NAME:PARTITIONS]...
//! dev-kafka --apache LIBS --data DIR [--port PORT] [--heap SIZE] [--bootstrap-file PATH] [--topology FILE] [--topic NAME:PARTITIONS]...
//! ```
//!
//! It creates every topic of `--topology` (`deploy/topology.yaml`: the event topics and one
//! dead-letter topic per consumer group) and each `--topic`, prints the bootstrap address (and
//! writes it to `--bootstrap-file` once the topics exist), and runs until SIGINT or SIGTERM.
//! The mock cluster keeps data in memory and creates unknown topics on first use; Apache Kafka
//! keeps its log in `--data` (a restart on the same directory keeps every record and offset) and,
//! as in production, creates no topic on first use.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use rdkafka::mocking::MockCluster;
use shop_testkit::apache::{self, ApacheKafka};
use shop_testkit::topology::{TopicToCreate, Topology};
use tokio::signal::unix::{SignalKind, signal};

const USAGE: &str = "dev-kafka [--brokers N] [--bootstrap-file PATH] [--topology FILE] [--topic NAME:PARTITIONS]...
dev-kafka --apache LIBS --data DIR [--port PORT] [--heap SIZE] [--bootstrap-file PATH] [--topology FILE] [--topic NAME:PARTITIONS]...";

#[derive(Default)]
struct Args {
    brokers: i32,
    bootstrap_file: Option<PathBuf>,
    topics: Vec<TopicToCreate>,
    apache_libs: Option<PathBuf>,
    data: Option<PathBuf>,
    port: Option<u16>,
    heap: String,
}

fn parse() -> anyhow::Result<Option<Args>> {
    let mut a = Args {
        brokers: 1,
        heap: "1g".into(),
        ..Args::default()
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--brokers" => a.brokers = value()?.parse()?,
            "--bootstrap-file" => a.bootstrap_file = Some(value()?.into()),
            "--topology" => {
                let path = PathBuf::from(value()?);
                a.topics
                    .extend(Topology::load(&path)?.topics_to_create(false));
            }
            "--topic" => {
                let spec = value()?;
                let (name, partitions) = spec.split_once(':').unwrap_or((&spec, "3"));
                a.topics.push(TopicToCreate {
                    name: name.to_owned(),
                    partitions: partitions.parse()?,
                    replicas: 1,
                    config: Default::default(),
                });
            }
            "--apache" => a.apache_libs = Some(value()?.into()),
            "--data" => a.data = Some(value()?.into()),
            "--port" => a.port = Some(value()?.parse()?),
            "--heap" => a.heap = value()?,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(None);
            }
            other => bail!("unknown argument {other}\n{USAGE}"),
        }
    }
    Ok(Some(a))
}

fn main() -> anyhow::Result<()> {
    let Some(args) = parse()? else {
        return Ok(());
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match args.apache_libs.clone() {
        Some(libs) => rt.block_on(run_apache(libs, args)),
        None => run_mock(&rt, &args),
    }
}

fn run_mock(rt: &tokio::runtime::Runtime, args: &Args) -> anyhow::Result<()> {
    let cluster = MockCluster::new(args.brokers).context("starting the mock cluster")?;
    for topic in &args.topics {
        cluster
            .create_topic(&topic.name, topic.partitions, 1)
            .with_context(|| format!("creating topic {}", topic.name))?;
    }
    let bootstrap = cluster.bootstrap_servers();
    announce(
        args,
        &format!("{} mock broker(s)", args.brokers),
        &bootstrap,
    )?;
    rt.block_on(until_signal())?;
    finish(args);
    drop(cluster);
    Ok(())
}

async fn run_apache(libs: PathBuf, args: Args) -> anyhow::Result<()> {
    let data = args.data.clone().context("--apache needs --data DIR")?;
    let mut broker = ApacheKafka::new(libs, &data, &args.heap);
    if let Some(port) = args.port {
        broker = broker.with_port(port);
    }
    eprintln!(
        "dev-kafka: starting Apache Kafka in {} (log {})",
        data.display(),
        broker.log_file().display()
    );
    broker.start().await?;
    let bootstrap = broker.bootstrap_servers();
    apache::create_topics(&bootstrap, &args.topics).await?;
    announce(&args, "Apache Kafka (KRaft, single node)", &bootstrap)?;
    until_signal().await?;
    // A clean shutdown flushes and closes the logs, so the next start needs no recovery.
    broker.stop(Duration::from_secs(30)).await;
    finish(&args);
    Ok(())
}

/// Says where the broker is: on stdout, then (so that whoever waits for the file can read the
/// line in the log already) in the bootstrap file.
fn announce(args: &Args, what: &str, bootstrap: &str) -> anyhow::Result<()> {
    println!(
        "dev-kafka: {what} at {bootstrap}, {} topic(s) created",
        args.topics.len()
    );
    if let Some(path) = &args.bootstrap_file {
        std::fs::write(path, bootstrap).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn finish(args: &Args) {
    if let Some(path) = &args.bootstrap_file {
        let _ = std::fs::remove_file(path);
    }
    println!("dev-kafka: stopped");
}

async fn until_signal() -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    Ok(())
}
