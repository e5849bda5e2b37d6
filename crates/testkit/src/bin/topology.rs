//! Prints `deploy/topology.yaml` in a form shell scripts read with `while read`, so that the
//! run scripts never write the topology out again.
//!
//! ```text
//! topology [--file FILE] services   # name binary env_prefix grpc_port metrics_port database consumer_group admin_port
//! topology [--file FILE] topics     # name partitions (event topics, then the dead-letter topics)
//! ```
//!
//! A process without a gRPC (or admin) port prints `-` in that column.

use std::path::PathBuf;

use anyhow::{Context, bail};
use shop_testkit::Topology;

fn main() -> anyhow::Result<()> {
    let mut file = Topology::repository_file();
    let mut what = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--file" => file = PathBuf::from(args.next().context("--file needs a path")?),
            "services" | "topics" => what = Some(arg),
            "-h" | "--help" => {
                println!("topology [--file FILE] services|topics");
                return Ok(());
            }
            other => bail!("unknown argument {other}"),
        }
    }
    let topology = Topology::load(&file)?;
    match what.as_deref() {
        Some("services") => {
            for s in &topology.services {
                let grpc = s
                    .grpc_port
                    .map_or_else(|| "-".to_owned(), |p| p.to_string());
                let admin = s
                    .admin_port
                    .map_or_else(|| "-".to_owned(), |p| p.to_string());
                println!(
                    "{} {} {} {grpc} {} {} {} {admin}",
                    s.name, s.binary, s.env_prefix, s.metrics_port, s.database, s.consumer_group
                );
            }
        }
        Some("topics") => {
            for t in topology.topics_to_create(false) {
                println!("{} {}", t.name, t.partitions);
            }
        }
        _ => bail!("say what to print: services or topics"),
    }
    Ok(())
}
