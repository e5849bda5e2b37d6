//! `shopctl dlq list|show|replay|purge` and `shopctl audit`.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::bail;
use clap::{Args, Subcommand};
use serde_json::json;
use shop_proto::admin::v1 as pb;

use crate::Context;
use crate::api::{self, SERVICES};
use crate::decode;
use crate::output::{self, Format, Table, short};

/// Exit status of a replay that held records back (the others went).
const HELD_BACK: u8 = 3;

#[derive(Debug, Subcommand)]
pub(crate) enum Dlq {
    /// The dead letters of every consumer (or the selected ones), newest first.
    List(ListArgs),
    /// One dead letter: its error, attempts, where it was read, its headers and its payload
    /// decoded from the published descriptors.
    Show(ShowArgs),
    /// Publishes the selected dead letters again to their source topics, for their consumer
    /// only, once the cause is fixed. A record already replayed --max-replays times and
    /// dead-lettered again each time is held back unless --force. Recorded in the audit.
    Replay(ReplayArgs),
    /// Deletes the selected dead letters: they are never applied (a later replay of the whole
    /// source topic would apply them). Recorded in the audit.
    Purge(PurgeArgs),
}

/// Which dead letters.
#[derive(Debug, Args, Clone, Default)]
pub(crate) struct Filter {
    /// Only this consumer's (its inbox name, e.g. payment-service).
    #[arg(long)]
    consumer: Option<String>,
    /// Only this service's consumers (order, inventory, payment, notification).
    #[arg(long)]
    service: Option<String>,
    /// Only records of this type (e.g. shop.order.v1.PaymentRequested).
    #[arg(long)]
    event_type: Option<String>,
    /// Only records about this order (their key).
    #[arg(long)]
    order_id: Option<String>,
    /// Dead-lettered at or after: an RFC 3339 time or an age (90s, 15m, 2h, 3d).
    #[arg(long, value_parser = output::parse_when)]
    since: Option<chrono::DateTime<chrono::Utc>>,
    /// Dead-lettered before: an RFC 3339 time or an age.
    #[arg(long, value_parser = output::parse_when)]
    until: Option<chrono::DateTime<chrono::Utc>>,
    /// Only these records (their ce_id); repeatable.
    #[arg(long = "event-id")]
    event_ids: Vec<String>,
}

impl Filter {
    /// The dead letters about one order, on every service.
    pub(crate) fn for_order(order_id: &str) -> Self {
        Self {
            order_id: Some(order_id.to_owned()),
            ..Self::default()
        }
    }

    fn is_empty(&self) -> bool {
        self.consumer.is_none()
            && self.service.is_none()
            && self.event_type.is_none()
            && self.order_id.is_none()
            && self.since.is_none()
            && self.until.is_none()
            && self.event_ids.is_empty()
    }

    fn to_pb(&self) -> pb::DeadLetterFilter {
        pb::DeadLetterFilter {
            consumer: self.consumer.clone().unwrap_or_default(),
            event_type: self.event_type.clone().unwrap_or_default(),
            order_id: self.order_id.clone().unwrap_or_default(),
            since: self.since.map(output::to_timestamp),
            until: self.until.map(output::to_timestamp),
            event_ids: self.event_ids.clone(),
        }
    }

    /// The services to ask.
    fn services(&self) -> anyhow::Result<Vec<&'static str>> {
        match &self.service {
            None => Ok(SERVICES.to_vec()),
            Some(name) => match SERVICES.iter().find(|s| **s == name.as_str()) {
                Some(s) => Ok(vec![*s]),
                None => bail!("unknown service {name:?}: one of {SERVICES:?}"),
            },
        }
    }
}

#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    #[command(flatten)]
    filter: Filter,
    /// At most this many per service (1-1000).
    #[arg(long, default_value_t = 100)]
    limit: u32,
}

#[derive(Debug, Args)]
pub(crate) struct ShowArgs {
    /// The record's ce_id (as `dlq list` shows it).
    event_id: String,
    /// The consumer whose dead letter it is (default: every consumer that has one).
    #[arg(long)]
    consumer: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct ReplayArgs {
    #[command(flatten)]
    filter: Filter,
    /// Every dead letter (without a filter, nothing is selected unless this is given).
    #[arg(long)]
    all: bool,
    /// Hold back a record whose replays already reached this many.
    #[arg(long, default_value_t = 3)]
    max_replays: u32,
    /// Replay held-back records too (after fixing why their replays failed).
    #[arg(long)]
    force: bool,
    /// Say what would be replayed; change nothing.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Debug, Args)]
pub(crate) struct PurgeArgs {
    #[command(flatten)]
    filter: Filter,
    /// Every dead letter (without a filter, nothing is selected unless this is given).
    #[arg(long)]
    all: bool,
    /// Say what would be purged; change nothing.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Debug, Args)]
pub(crate) struct AuditArgs {
    /// Only this service's audit.
    #[arg(long)]
    service: Option<String>,
    /// At most this many per service (1-1000).
    #[arg(long, default_value_t = 50)]
    limit: u32,
}

pub(crate) async fn run(ctx: &Context, command: Dlq) -> anyhow::Result<ExitCode> {
    match command {
        Dlq::List(args) => list(ctx, &args).await,
        Dlq::Show(args) => show(ctx, &args).await,
        Dlq::Replay(args) => replay(ctx, &args).await,
        Dlq::Purge(args) => purge(ctx, &args).await,
    }
}

/// The dead letters matching `filter` on each of its services, newest first.
pub(crate) async fn fetch(
    ctx: &Context,
    filter: &Filter,
    limit: u32,
) -> anyhow::Result<Vec<(&'static str, pb::DeadLetter)>> {
    let mut all = Vec::new();
    for service in filter.services()? {
        let answer = ctx
            .clients
            .admin(service)?
            .list_dead_letters(pb::ListDeadLettersRequest {
                filter: Some(filter.to_pb()),
                limit,
            })
            .await
            .map_err(|s| api::failed(service, "listing dead letters", &s))?;
        all.extend(
            answer
                .into_inner()
                .dead_letters
                .into_iter()
                .map(|d| (service, d)),
        );
    }
    all.sort_by(|(_, a), (_, b)| {
        let at = |d: &pb::DeadLetter| d.failed_at.map(|t| (t.seconds, t.nanos));
        at(b).cmp(&at(a))
    });
    Ok(all)
}

pub(crate) fn dead_letter_json(service: &str, d: &pb::DeadLetter) -> serde_json::Value {
    json!({
        "service": service,
        "consumer": d.consumer,
        "event_id": d.event_id,
        "event_type": d.event_type,
        "key": d.key,
        "source": {"topic": d.topic, "partition": d.partition, "offset": d.offset},
        "dead_letter_topic": d.dead_letter_topic,
        "published": d.published,
        "error": d.error,
        "attempts": d.attempts,
        "replays": d.replays,
        "failed_at": output::json_time(d.failed_at.as_ref()),
        "record_kept": d.record_kept,
    })
}

/// The `traceparent` header's trace id, if the record has one.
pub(crate) fn trace_id(d: &pb::DeadLetter) -> Option<String> {
    let traceparent = d.headers.iter().find(|h| h.name == "traceparent")?;
    let text = std::str::from_utf8(&traceparent.value).ok()?;
    text.split('-')
        .nth(1)
        .filter(|id| id.len() == 32)
        .map(str::to_owned)
}

async fn list(ctx: &Context, args: &ListArgs) -> anyhow::Result<ExitCode> {
    let all = fetch(ctx, &args.filter, args.limit).await?;
    match ctx.format {
        Format::Json => output::print_json(&json!({
            "dead_letters": all.iter().map(|(s, d)| dead_letter_json(s, d)).collect::<Vec<_>>(),
        })),
        Format::Table => {
            let mut table = Table::new(&[
                "FAILED AT",
                "CONSUMER",
                "EVENT TYPE",
                "ORDER",
                "EVENT ID",
                "SOURCE",
                "REPLAYS",
                "ERROR",
            ]);
            for (_, d) in &all {
                table.row(vec![
                    output::time(d.failed_at.as_ref()),
                    d.consumer.clone(),
                    d.event_type.clone(),
                    d.key.clone(),
                    d.event_id.clone(),
                    format!("{}/{}@{}", d.topic, d.partition, d.offset),
                    d.replays.to_string(),
                    short(&d.error, 100),
                ]);
            }
            if table.is_empty() {
                println!("No dead letters.");
            } else {
                print!("{}", table.render());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn show(ctx: &Context, args: &ShowArgs) -> anyhow::Result<ExitCode> {
    // Which consumers have it: the listing, by id.
    let filter = Filter {
        consumer: args.consumer.clone(),
        event_ids: vec![args.event_id.clone()],
        ..Filter::default()
    };
    let found = fetch(ctx, &filter, 1000).await?;
    if found.is_empty() {
        bail!(
            "no dead letter with event id {}{}",
            args.event_id,
            args.consumer
                .as_deref()
                .map(|c| format!(" of consumer {c}"))
                .unwrap_or_default()
        );
    }
    let mut shown = Vec::new();
    for (service, listed) in found {
        let whole = ctx
            .clients
            .admin(service)?
            .get_dead_letter(pb::GetDeadLetterRequest {
                consumer: listed.consumer.clone(),
                event_id: listed.event_id.clone(),
            })
            .await
            .map_err(|s| api::failed(service, "reading the dead letter", &s))?
            .into_inner()
            .dead_letter
            .unwrap_or(listed);
        shown.push((service, whole));
    }
    match ctx.format {
        Format::Json => {
            let items: Vec<serde_json::Value> = shown
                .iter()
                .map(|(service, d)| {
                    let mut item = dead_letter_json(service, d);
                    item["headers"] = d
                        .headers
                        .iter()
                        .map(|h| json!({"name": h.name, "value": decode::header_text(&h.value)}))
                        .collect();
                    item["payload"] = match decode::payload(&d.event_type, &d.payload) {
                        Ok(decoded) => decoded,
                        Err(why) => json!({"undecodable": why, "hex": decode::hex(&d.payload)}),
                    };
                    item["trace_id"] = trace_id(d).map_or(serde_json::Value::Null, Into::into);
                    item
                })
                .collect();
            output::print_json(&json!({ "dead_letters": items }));
        }
        Format::Table => {
            for (i, (service, d)) in shown.iter().enumerate() {
                if i > 0 {
                    println!();
                }
                println!("Dead letter {} of {} ({service})", d.event_id, d.consumer);
                println!("  type:         {}", d.event_type);
                println!("  order (key):  {}", d.key);
                println!(
                    "  read from:    {} partition {} offset {}",
                    d.topic, d.partition, d.offset
                );
                println!(
                    "  dead-lettered {} after {} attempt(s), to {}{}",
                    output::time(d.failed_at.as_ref()),
                    d.attempts,
                    d.dead_letter_topic,
                    if d.published {
                        ""
                    } else {
                        " (not published: the database has the only copy)"
                    }
                );
                println!(
                    "  replays:      {} (dead-lettered again after each)",
                    d.replays
                );
                if let Some(trace) = trace_id(d) {
                    println!("  trace id:     {trace}");
                }
                println!("  error:        {}", d.error);
                println!("  headers:");
                for h in &d.headers {
                    println!("    {}: {}", h.name, decode::header_text(&h.value));
                }
                match decode::payload(&d.event_type, &d.payload) {
                    Ok(decoded) => println!(
                        "  payload ({}, {} bytes):\n{}",
                        d.event_type,
                        d.payload.len(),
                        indent(
                            &serde_json::to_string_pretty(&decoded).unwrap_or_default(),
                            4
                        )
                    ),
                    Err(why) => println!(
                        "  payload ({} bytes, undecodable: {why}):\n    {}",
                        d.payload.len(),
                        decode::hex(&d.payload)
                    ),
                }
                if !d.record_kept {
                    println!(
                        "  (the record was not kept with the dead letter: read it from {})",
                        d.dead_letter_topic
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn indent(text: &str, by: usize) -> String {
    text.lines()
        .map(|l| format!("{:by$}{l}", ""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Which service publishes each topic (from every service's `Describe`).
async fn topic_owners(ctx: &Context) -> anyhow::Result<BTreeMap<String, &'static str>> {
    let mut owners = BTreeMap::new();
    for service in SERVICES {
        // A service that does not answer owns nothing this time: the records of its topics are
        // reported as not replayed, the others go.
        match ctx
            .clients
            .admin(service)?
            .describe(pb::DescribeRequest {})
            .await
        {
            Ok(described) => {
                for topic in described.into_inner().produces {
                    owners.insert(topic, service);
                }
            }
            Err(status) => eprintln!(
                "shopctl: {:#}",
                api::failed(service, "describing the service", &status)
            ),
        }
    }
    Ok(owners)
}

/// One line of a replay's report.
struct Replayed {
    service: &'static str,
    decision: pb::ReplayDecision,
    outcome: String,
}

async fn replay(ctx: &Context, args: &ReplayArgs) -> anyhow::Result<ExitCode> {
    if args.filter.is_empty() && !args.all {
        bail!(
            "select what to replay (--consumer, --event-type, --order-id, --since, --event-id, ...) or pass --all"
        );
    }
    let owners = topic_owners(ctx).await?;
    let mut lines: Vec<Replayed> = Vec::new();
    for service in args.filter.services()? {
        let decisions = ctx
            .clients
            .admin(service)?
            .replay_dead_letters(pb::ReplayDeadLettersRequest {
                filter: Some(args.filter.to_pb()),
                max_replays: args.max_replays,
                force: args.force,
                dry_run: args.dry_run,
            })
            .await
            .map_err(|s| api::failed(service, "preparing the replay", &s))?
            .into_inner()
            .decisions;
        lines.extend(decisions.into_iter().map(|decision| Replayed {
            service,
            outcome: String::new(),
            decision,
        }));
    }
    // Each record goes back through the outbox of its topic's owner: the only service the
    // broker lets write that topic.
    let mut by_owner: BTreeMap<&'static str, Vec<usize>> = BTreeMap::new();
    for (i, line) in lines.iter_mut().enumerate() {
        match &line.decision.record {
            None => line.outcome = format!("held back: {}", line.decision.held_back),
            Some(record) => match owners.get(&record.topic) {
                Some(owner) => by_owner.entry(*owner).or_default().push(i),
                None => {
                    line.outcome = format!(
                        "not replayed: no service publishes {} (its owner's admin API did not describe it)",
                        record.topic
                    );
                }
            },
        }
    }
    for (owner, indices) in by_owner {
        let records: Vec<pb::Record> = indices
            .iter()
            .filter_map(|i| lines[*i].decision.record.clone())
            .collect();
        let answer = ctx
            .clients
            .admin(owner)?
            .republish_records(pb::RepublishRecordsRequest {
                records,
                dry_run: args.dry_run,
            })
            .await;
        let outcome = match answer {
            Ok(done) => {
                let done = done.into_inner();
                let how = if args.dry_run {
                    "would be republished"
                } else {
                    "republished"
                };
                if done.already_queued > 0 {
                    format!(
                        "{how} through the {owner} outbox ({} of this batch already waiting there)",
                        done.already_queued
                    )
                } else {
                    format!("{how} through the {owner} outbox")
                }
            }
            Err(status) => format!(
                "not replayed: {:#} (the dead letter is unchanged; replay it again)",
                api::failed(owner, "republishing", &status)
            ),
        };
        for i in indices {
            lines[i].outcome.clone_from(&outcome);
        }
    }
    let held = lines.iter().filter(|l| l.decision.record.is_none()).count();
    let failed = lines
        .iter()
        .filter(|l| l.outcome.starts_with("not replayed"))
        .count();
    match ctx.format {
        Format::Json => output::print_json(&json!({
            "dry_run": args.dry_run,
            "replays": lines.iter().map(|l| json!({
                "service": l.service,
                "consumer": l.decision.consumer,
                "event_id": l.decision.event_id,
                "replay": l.decision.replay,
                "topic": l.decision.record.as_ref().map(|r| r.topic.clone()),
                "held_back": (!l.decision.held_back.is_empty()).then(|| l.decision.held_back.clone()),
                "outcome": l.outcome,
            })).collect::<Vec<_>>(),
        })),
        Format::Table => {
            let mut table = Table::new(&["CONSUMER", "EVENT ID", "REPLAY", "TO", "OUTCOME"]);
            for l in &lines {
                table.row(vec![
                    l.decision.consumer.clone(),
                    l.decision.event_id.clone(),
                    l.decision.replay.to_string(),
                    l.decision
                        .record
                        .as_ref()
                        .map(|r| r.topic.clone())
                        .unwrap_or_default(),
                    l.outcome.clone(),
                ]);
            }
            if table.is_empty() {
                println!("No dead letters selected.");
            } else {
                print!("{}", table.render());
                if args.dry_run {
                    println!("Dry run: nothing was changed or published.");
                } else {
                    println!(
                        "The dead letters stay until their consumer applies the replay (then it deletes them) or dead-letters it again (then they count the replay): check with `shopctl dlq list`."
                    );
                }
            }
        }
    }
    Ok(if failed > 0 {
        ExitCode::FAILURE
    } else if held > 0 {
        ExitCode::from(HELD_BACK)
    } else {
        ExitCode::SUCCESS
    })
}

async fn purge(ctx: &Context, args: &PurgeArgs) -> anyhow::Result<ExitCode> {
    if args.filter.is_empty() && !args.all {
        bail!(
            "select what to purge (--consumer, --event-type, --order-id, --since, --event-id, ...) or pass --all"
        );
    }
    let mut purged = Vec::new();
    for service in args.filter.services()? {
        let answer = ctx
            .clients
            .admin(service)?
            .purge_dead_letters(pb::PurgeDeadLettersRequest {
                filter: Some(args.filter.to_pb()),
                dry_run: args.dry_run,
            })
            .await
            .map_err(|s| api::failed(service, "purging dead letters", &s))?;
        purged.extend(answer.into_inner().purged.into_iter().map(|d| (service, d)));
    }
    match ctx.format {
        Format::Json => output::print_json(&json!({
            "dry_run": args.dry_run,
            "purged": purged.iter().map(|(s, d)| dead_letter_json(s, d)).collect::<Vec<_>>(),
        })),
        Format::Table => {
            let mut table = Table::new(&["CONSUMER", "EVENT TYPE", "ORDER", "EVENT ID", "ERROR"]);
            for (_, d) in &purged {
                table.row(vec![
                    d.consumer.clone(),
                    d.event_type.clone(),
                    d.key.clone(),
                    d.event_id.clone(),
                    short(&d.error, 80),
                ]);
            }
            if table.is_empty() {
                println!("No dead letters selected.");
            } else {
                print!("{}", table.render());
                println!(
                    "{} dead letter(s) {}.",
                    purged.len(),
                    if args.dry_run {
                        "would be purged (dry run: nothing changed)"
                    } else {
                        "purged"
                    }
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn audit(ctx: &Context, args: &AuditArgs) -> anyhow::Result<ExitCode> {
    let services = Filter {
        service: args.service.clone(),
        ..Filter::default()
    }
    .services()?;
    let mut records = Vec::new();
    for service in services {
        let answer = ctx
            .clients
            .admin(service)?
            .list_audit_records(pb::ListAuditRecordsRequest { limit: args.limit })
            .await
            .map_err(|s| api::failed(service, "reading the audit", &s))?;
        records.extend(
            answer
                .into_inner()
                .records
                .into_iter()
                .map(|r| (service, r)),
        );
    }
    records.sort_by(|(_, a), (_, b)| {
        let at = |r: &pb::AuditRecord| r.at.map(|t| (t.seconds, t.nanos));
        at(b).cmp(&at(a))
    });
    match ctx.format {
        Format::Json => output::print_json(&json!({
            "audit": records.iter().map(|(s, r)| json!({
                "service": s,
                "at": output::json_time(r.at.as_ref()),
                "actor": r.actor,
                "action": r.action,
                "consumer": r.consumer,
                "event_id": r.event_id,
                "detail": serde_json::from_str::<serde_json::Value>(&r.detail).unwrap_or_else(|_| r.detail.clone().into()),
            })).collect::<Vec<_>>(),
        })),
        Format::Table => {
            let mut table = Table::new(&[
                "AT", "SERVICE", "ACTOR", "ACTION", "CONSUMER", "EVENT ID", "DETAIL",
            ]);
            for (s, r) in &records {
                table.row(vec![
                    output::time(r.at.as_ref()),
                    (*s).to_owned(),
                    r.actor.clone(),
                    r.action.clone(),
                    r.consumer.clone(),
                    r.event_id.clone(),
                    short(&r.detail, 120),
                ]);
            }
            if table.is_empty() {
                println!("Nothing recorded.");
            } else {
                print!("{}", table.render());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
