//! A local Kafka broker for development, with the suite's topics: librdkafka's mock cluster
//! (instant, in memory), or a single-node Apache Kafka from the jars `deploy/lib.sh` resolved.
//! Services, tests and Kafka's own command-line tools in other processes reach it on loopback.
//!
//! ```text
//! dev-kafka [--brokers N] [--bootstrap-file PATH] [--topology FILE] [--topic NAME:PARTITIONS]...
//! dev-kafka --apache LIBS --data DIR [--scram] [--port PORT] [--heap SIZE] [--bootstrap-file PATH] [--topology FILE] [--topic NAME:PARTITIONS]...
//! ```
//!
//! `--scram` (Apache Kafka only) secures the broker as in production: SASL/SCRAM-SHA-512, access
//! by ACL only. Each process of `--topology` gets an identity (user = its binary's name) with
//! the ACLs it needs (`ServiceSpec::kafka_grants`); the passwords, generated on the first start,
//! are in `DIR/credentials` (`user password` lines; the admin's too) and the admin's Java client
//! configuration in `DIR/admin.properties` (`--command-config` of Kafka's tools).
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
use shop_testkit::apache::{self, ApacheKafka, Grants, Scram};
use shop_testkit::topology::{TopicToCreate, Topology};
use tokio::signal::unix::{SignalKind, signal};

const USAGE: &str = "dev-kafka [--brokers N] [--bootstrap-file PATH] [--topology FILE] [--topic NAME:PARTITIONS]...
dev-kafka --apache LIBS --data DIR [--scram] [--port PORT] [--heap SIZE] [--bootstrap-file PATH] [--topology FILE] [--topic NAME:PARTITIONS]...";

#[derive(Default)]
struct Args {
    brokers: i32,
    bootstrap_file: Option<PathBuf>,
    topics: Vec<TopicToCreate>,
    apache_libs: Option<PathBuf>,
    data: Option<PathBuf>,
    port: Option<u16>,
    heap: String,
    scram: bool,
    /// The identities and ACLs of the topology's processes.
    grants: Vec<Grants>,
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
                let topology = Topology::load(&path)?;
                a.topics.extend(topology.topics_to_create(false));
                a.grants
                    .extend(topology.services.iter().map(|s| s.kafka_grants()));
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
            "--scram" => a.scram = true,
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
    if args.scram {
        broker = broker.with_scram(credentials(&data, &args.grants)?);
    }
    eprintln!(
        "dev-kafka: starting Apache Kafka in {} (log {})",
        data.display(),
        broker.log_file().display()
    );
    broker.start().await?;
    let bootstrap = broker.bootstrap_servers();
    apache::create_topics(&bootstrap, &broker.admin_properties(), &args.topics).await?;
    let mut what = "Apache Kafka (KRaft, single node)".to_owned();
    if args.scram {
        grant_once(&broker, &data, &args.grants).await?;
        what.push_str(", SASL/SCRAM-SHA-512 and ACLs");
    }
    announce(&args, &what, &bootstrap)?;
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

/// The identities of `DIR/credentials`, or new ones (the admin and every process of the
/// topology, random passwords) written there on the first start.
fn credentials(data: &std::path::Path, grants: &[Grants]) -> anyhow::Result<Scram> {
    let file = data.join("credentials");
    let text = match std::fs::read_to_string(&file) {
        Ok(text) => text,
        Err(_) => {
            if data.join("data").join("meta.properties").exists() {
                bail!(
                    "the broker in {} was created without --scram (its identities are made when its storage is formatted): remove that directory to start a new one",
                    data.display()
                );
            }
            std::fs::create_dir_all(data)?;
            let mut text = String::new();
            for user in std::iter::once("admin").chain(grants.iter().map(|g| g.user.as_str())) {
                text.push_str(&format!("{user} {}\n", uuid::Uuid::new_v4().simple()));
            }
            std::fs::write(&file, &text).with_context(|| format!("writing {}", file.display()))?;
            text
        }
    };
    let mut users: Vec<(String, String)> = text
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(u, p)| (u.to_owned(), p.to_owned()))
        .collect();
    let admin = users
        .iter()
        .position(|(u, _)| u == "admin")
        .context("no admin in the credentials file")?;
    let (_, admin_password) = users.remove(admin);
    Ok(Scram {
        admin_password,
        users,
    })
}

/// Adds the topology's ACLs unless exactly these were added before (`kafka-acls` starts a JVM
/// per run: seconds each).
async fn grant_once(
    broker: &ApacheKafka,
    data: &std::path::Path,
    grants: &[Grants],
) -> anyhow::Result<()> {
    let marker = data.join("acls.applied");
    let wanted = format!("{grants:?}");
    if std::fs::read_to_string(&marker).is_ok_and(|done| done == wanted) {
        return Ok(());
    }
    eprintln!("dev-kafka: adding the ACLs of {} identities", grants.len());
    broker.grant(grants).await?;
    std::fs::write(&marker, wanted)?;
    Ok(())
}

async fn until_signal() -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    Ok(())
}
