//! Hosts librdkafka's mock cluster as a standalone local broker for development: services,
//! tests and `kcat` in other processes reach it on its loopback ports.
//!
//! ```text
//! dev-kafka [--brokers N] [--bootstrap-file PATH] [--topic NAME:PARTITIONS]...
//! ```
//!
//! It prints the bootstrap address (and writes it to `--bootstrap-file`), creates the given
//! topics (others are created on first use with 4 partitions), and runs until SIGINT or SIGTERM.
//! Data lives in memory only.

use anyhow::{Context, bail};
use rdkafka::mocking::MockCluster;
use tokio::signal::unix::{SignalKind, signal};

fn main() -> anyhow::Result<()> {
    let mut brokers = 1;
    let mut bootstrap_file = None;
    let mut topics = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--brokers" => brokers = args.next().context("--brokers needs a number")?.parse()?,
            "--bootstrap-file" => {
                bootstrap_file = Some(args.next().context("--bootstrap-file needs a path")?)
            }
            "--topic" => {
                let spec = args.next().context("--topic needs NAME:PARTITIONS")?;
                let (name, partitions) = spec.split_once(':').unwrap_or((&spec, "3"));
                topics.push((name.to_owned(), partitions.parse::<i32>()?));
            }
            "-h" | "--help" => {
                println!(
                    "dev-kafka [--brokers N] [--bootstrap-file PATH] [--topic NAME:PARTITIONS]..."
                );
                return Ok(());
            }
            other => bail!("unknown argument {other}"),
        }
    }

    let cluster = MockCluster::new(brokers).context("starting the mock cluster")?;
    for (name, partitions) in &topics {
        cluster
            .create_topic(name, *partitions, 1)
            .with_context(|| format!("creating topic {name}"))?;
    }
    let bootstrap = cluster.bootstrap_servers();
    if let Some(path) = &bootstrap_file {
        std::fs::write(path, &bootstrap).with_context(|| format!("writing {path}"))?;
    }
    println!("dev-kafka: {brokers} mock broker(s) at {bootstrap}");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut term = signal(SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        anyhow::Ok(())
    })?;
    if let Some(path) = &bootstrap_file {
        let _ = std::fs::remove_file(path);
    }
    drop(cluster);
    println!("dev-kafka: stopped");
    Ok(())
}
