//! `shopctl lag`: every consumer group's lag per partition, from the broker (the group's
//! committed offset against the partition's high watermark), whatever the consumers themselves
//! report: a stuck or dead consumer shows a lag that grows.

use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use serde_json::json;
use shop_eventing::{KafkaConfig, PartitionLag};
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
struct GroupPartition {
    group: String,
    lag: PartitionLag,
}

/// A group as the broker lists it.
#[derive(Debug, Clone, Default)]
struct GroupState {
    state: String,
    members: usize,
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

/// The broker's consumer groups with their state, and its topics with their partitions. The
/// calls block (librdkafka's synchronous API).
fn list_groups_and_topics(
    kafka: &KafkaConfig,
    timeout: Duration,
) -> anyhow::Result<(BTreeMap<String, GroupState>, Vec<String>)> {
    let mut config = rdkafka::ClientConfig::new();
    config.set("bootstrap.servers", &kafka.bootstrap_servers);
    for (key, value) in &kafka.properties {
        config.set(key, value);
    }
    let admin: BaseConsumer = config.create()?;
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
    let topics = admin
        .fetch_metadata(None, timeout)?
        .topics()
        .iter()
        .map(|t| t.name().to_owned())
        .filter(|name| !name.starts_with("__"))
        .collect();
    Ok((states, topics))
}

/// Every group's lag, measured the way the services measure their own
/// ([`shop_eventing::group_lag`]: committed offsets against the partitions' ends). A group the
/// services describe is measured on its topics; any other group the broker lists, on every
/// topic it has committed on.
async fn measure(
    kafka: &KafkaConfig,
    described: &BTreeMap<String, Vec<String>>,
    only: Option<&str>,
    timeout: Duration,
) -> anyhow::Result<(Vec<GroupPartition>, BTreeMap<String, GroupState>)> {
    let config = kafka.clone();
    let (states, topics) =
        tokio::task::spawn_blocking(move || list_groups_and_topics(&config, timeout)).await??;
    let mut groups: BTreeSet<String> = states.keys().cloned().collect();
    groups.extend(described.keys().cloned());
    if let Some(only) = only {
        groups.retain(|g| g == only);
    }
    let mut lags = Vec::new();
    for group in groups {
        let (own, known) = match described.get(&group) {
            Some(own) => (own.clone(), true),
            None => (topics.clone(), false),
        };
        for lag in shop_eventing::group_lag(kafka, &group, &own).await? {
            // A group the services do not describe has no lag on topics it never read.
            if lag.committed.is_none() && !known {
                continue;
            }
            lags.push(GroupPartition {
                group: group.clone(),
                lag,
            });
        }
    }
    lags.sort_by(|a, b| {
        (&a.group, &a.lag.topic, a.lag.partition).cmp(&(&b.group, &b.lag.topic, b.lag.partition))
    });
    Ok((lags, states))
}

pub(crate) async fn run(ctx: &Context, args: &LagArgs) -> anyhow::Result<ExitCode> {
    let described = described_groups(ctx).await;
    // The services' own login (KAFKA_SECURITY_*, KAFKA_SASL_*, KAFKA_SSL_*): shop_runtime::kafka.
    let kafka = shop_runtime::kafka::client_config(&ctx.kafka);
    let (mut lags, states) = measure(
        &kafka,
        &described,
        args.group.as_deref(),
        ctx.clients.timeout,
    )
    .await?;
    if args.lagging {
        lags.retain(|l| l.lag.lag() > 0);
    }
    let totals: BTreeMap<&str, i64> = lags.iter().fold(BTreeMap::new(), |mut totals, l| {
        *totals.entry(l.group.as_str()).or_default() += l.lag.lag();
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
                        "topic": l.lag.topic,
                        "partition": l.lag.partition,
                        "committed": l.lag.committed,
                        "low": l.lag.low_watermark,
                        "high": l.lag.high_watermark,
                        "lag": l.lag.lag(),
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
                    l.lag.topic.clone(),
                    l.lag.partition.to_string(),
                    l.lag.committed.map_or("-".to_owned(), |c| c.to_string()),
                    l.lag.high_watermark.to_string(),
                    l.lag.lag().to_string(),
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
