//! `shopctl lag`: every consumer group's lag per partition, from the broker (the group's
//! committed offset against the partition's high watermark), whatever the consumers themselves
//! report: a stuck or dead consumer shows a lag that grows.

use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::json;
use shop_proto::admin::v1 as pb;

use crate::Context;
use crate::api::SERVICES;
use crate::output::{self, Format, Table};

#[derive(Debug, Args)]
pub(crate) struct LagArgs {
    /// Only this group.
    #[arg(long)]
    group: Option<String>,
    /// Leave out partitions without lag.
    #[arg(long)]
    lagging: bool,
}

/// One partition of a group.
#[derive(Debug, Clone)]
struct PartitionLag {
    group: String,
    topic: String,
    partition: i32,
    /// `None`: the group never committed on it (its lag then counts from the oldest record).
    committed: Option<i64>,
    low: i64,
    high: i64,
    lag: i64,
}

/// A group as the broker lists it.
#[derive(Debug, Clone, Default)]
struct GroupState {
    state: String,
    members: usize,
}

/// The librdkafka properties of the environment that `shopctl` passes on: the same families
/// the services pass (`shop_runtime::kafka`): `KAFKA_SECURITY_*`, `KAFKA_SASL_*`, `KAFKA_SSL_*`.
fn client(bootstrap: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("enable.auto.commit", "false")
        .set("log_level", "3");
    for (name, value) in std::env::vars() {
        let Some(rest) = name.strip_prefix("KAFKA_") else {
            continue;
        };
        if value.is_empty()
            || !["SECURITY_", "SASL_", "SSL_"]
                .iter()
                .any(|p| rest.starts_with(p))
        {
            continue;
        }
        config.set(rest.to_lowercase().replace('_', "."), value);
    }
    config
}

/// The groups the services describe (their consumers), with their topics; empty when the admin
/// APIs cannot be reached (the broker's list is then all there is).
async fn described_groups(ctx: &Context) -> BTreeMap<String, Vec<String>> {
    let mut groups = BTreeMap::new();
    for service in SERVICES {
        let Ok(mut admin) = ctx.clients.admin(service) else {
            continue;
        };
        match admin.describe(pb::DescribeRequest {}).await {
            Ok(described) => {
                for consumer in described.into_inner().consumers {
                    groups.insert(consumer.group_id, consumer.topics);
                }
            }
            Err(status) => eprintln!(
                "shopctl: {service}'s admin API did not describe its consumers ({:?}: {}); groups from the broker only",
                status.code(),
                status.message()
            ),
        }
    }
    groups
}

fn measure(
    bootstrap: &str,
    described: &BTreeMap<String, Vec<String>>,
    only: Option<&str>,
    timeout: Duration,
) -> anyhow::Result<(Vec<PartitionLag>, BTreeMap<String, GroupState>)> {
    let admin: BaseConsumer = client(bootstrap).create()?;
    let mut states: BTreeMap<String, GroupState> = BTreeMap::new();
    match admin.fetch_group_list(None, timeout) {
        Ok(list) => {
            for group in list.groups() {
                // Consumer groups only (not Connect workers and the like).
                if group.protocol_type() == "consumer" || group.protocol_type().is_empty() {
                    states.insert(
                        group.name().to_owned(),
                        GroupState {
                            state: group.state().to_owned(),
                            members: group.members().len(),
                        },
                    );
                }
            }
        }
        Err(error) => eprintln!(
            "shopctl: the broker did not list its groups ({error}); the services' groups only"
        ),
    }
    let metadata = admin.fetch_metadata(None, timeout)?;
    let topics: BTreeMap<String, Vec<i32>> = metadata
        .topics()
        .iter()
        .filter(|t| !t.name().starts_with("__"))
        .map(|t| {
            (
                t.name().to_owned(),
                t.partitions().iter().map(|p| p.id()).collect(),
            )
        })
        .collect();
    let mut groups: BTreeSet<String> = states.keys().cloned().collect();
    groups.extend(described.keys().cloned());
    if let Some(only) = only {
        groups.retain(|g| g == only);
    }
    let mut watermarks: BTreeMap<(String, i32), (i64, i64)> = BTreeMap::new();
    let mut lags = Vec::new();
    for group in groups {
        // Its topics: as the service describes them, else every topic it committed on.
        let (candidates, known): (Vec<&String>, bool) = match described.get(&group) {
            Some(own) => (
                own.iter().filter(|t| topics.contains_key(*t)).collect(),
                true,
            ),
            None => (topics.keys().collect(), false),
        };
        if candidates.is_empty() {
            continue;
        }
        let mut list = TopicPartitionList::new();
        for topic in &candidates {
            for partition in &topics[*topic] {
                list.add_partition(topic, *partition);
            }
        }
        let reader: BaseConsumer = client(bootstrap).set("group.id", &group).create()?;
        let committed = reader.committed_offsets(list, timeout)?;
        for element in committed.elements() {
            let offset = match element.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            };
            if offset.is_none() && !known {
                continue;
            }
            let key = (element.topic().to_owned(), element.partition());
            let (low, high) = match watermarks.get(&key) {
                Some(w) => *w,
                None => {
                    let w =
                        admin.fetch_watermarks(element.topic(), element.partition(), timeout)?;
                    watermarks.insert(key.clone(), w);
                    w
                }
            };
            lags.push(PartitionLag {
                group: group.clone(),
                topic: key.0,
                partition: key.1,
                committed: offset,
                low,
                high,
                lag: (high - offset.unwrap_or(low)).max(0),
            });
        }
    }
    lags.sort_by(|a, b| (&a.group, &a.topic, a.partition).cmp(&(&b.group, &b.topic, b.partition)));
    Ok((lags, states))
}

pub(crate) async fn run(ctx: &Context, args: &LagArgs) -> anyhow::Result<ExitCode> {
    let described = described_groups(ctx).await;
    let bootstrap = ctx.kafka.clone();
    let only = args.group.clone();
    let timeout = ctx.clients.timeout;
    let (mut lags, states) = tokio::task::spawn_blocking(move || {
        measure(&bootstrap, &described, only.as_deref(), timeout)
    })
    .await??;
    if args.lagging {
        lags.retain(|l| l.lag > 0);
    }
    let totals: BTreeMap<&str, i64> = lags.iter().fold(BTreeMap::new(), |mut totals, l| {
        *totals.entry(l.group.as_str()).or_default() += l.lag;
        totals
    });
    match ctx.format {
        Format::Json => output::print_json(&json!({
            "groups": totals.iter().map(|(group, total)| {
                let state = states.get(*group).cloned().unwrap_or_default();
                json!({
                    "group": group,
                    "state": state.state,
                    "members": state.members,
                    "lag": total,
                    "partitions": lags.iter().filter(|l| l.group == *group).map(|l| json!({
                        "topic": l.topic,
                        "partition": l.partition,
                        "committed": l.committed,
                        "low": l.low,
                        "high": l.high,
                        "lag": l.lag,
                    })).collect::<Vec<_>>(),
                })
            }).collect::<Vec<_>>(),
        })),
        Format::Table => {
            let mut table = Table::new(&[
                "GROUP",
                "STATE",
                "MEMBERS",
                "TOPIC",
                "PARTITION",
                "COMMITTED",
                "HIGH",
                "LAG",
            ]);
            for l in &lags {
                let state = states.get(&l.group).cloned().unwrap_or_default();
                table.row(vec![
                    l.group.clone(),
                    state.state,
                    state.members.to_string(),
                    l.topic.clone(),
                    l.partition.to_string(),
                    l.committed.map_or("-".to_owned(), |c| c.to_string()),
                    l.high.to_string(),
                    l.lag.to_string(),
                ]);
            }
            if table.is_empty() {
                println!("No consumer group has committed offsets.");
            } else {
                print!("{}", table.render());
                let mut summary = Table::new(&["GROUP", "TOTAL LAG"]);
                for (group, total) in &totals {
                    summary.row(vec![(*group).to_owned(), total.to_string()]);
                }
                println!();
                print!("{}", summary.render());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
