//! `shopctl outbox status|retry|drop`.

use std::process::ExitCode;

use anyhow::bail;
use clap::{Args, Subcommand};
use serde_json::json;
use shop_proto::admin::v1 as pb;

use crate::Context;
use crate::api::{self, SERVICES};
use crate::output::{self, Format, Table, short};

#[derive(Debug, Subcommand)]
pub(crate) enum Outbox {
    /// Per service: events waiting to be published, the oldest one's age, rows in backoff, and
    /// the rows parked after failing to publish (with the rows of their key waiting behind).
    Status(StatusArgs),
    /// Hands parked rows back to the relay (after fixing why they failed: the topic created,
    /// the broker's limit raised). Recorded in the audit.
    Retry(ParkedArgs),
    /// Deletes parked rows: never published; the rows waiting behind them go next. Recorded in
    /// the audit.
    Drop(ParkedArgs),
}

#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    /// Only this service (order, inventory, payment, notification).
    #[arg(long)]
    service: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct ParkedArgs {
    /// The service whose outbox it is (order, inventory, payment, notification).
    #[arg(long)]
    service: String,
    /// Every parked row of the service.
    #[arg(long, conflicts_with_all = ["topic", "ids"])]
    all: bool,
    /// The parked rows of this topic.
    #[arg(long, conflicts_with = "ids")]
    topic: Option<String>,
    /// These rows (the ID column of `outbox status`); repeatable.
    #[arg(long = "id")]
    ids: Vec<i64>,
    /// Count what would be changed; change nothing.
    #[arg(long)]
    dry_run: bool,
}

pub(crate) async fn run(ctx: &Context, command: Outbox) -> anyhow::Result<ExitCode> {
    match command {
        Outbox::Status(args) => status(ctx, &args).await,
        Outbox::Retry(args) => settle(ctx, &args, true).await,
        Outbox::Drop(args) => settle(ctx, &args, false).await,
    }
}

fn services(only: Option<&str>) -> anyhow::Result<Vec<&'static str>> {
    match only {
        None => Ok(SERVICES.to_vec()),
        Some(name) => match SERVICES.iter().find(|s| **s == name) {
            Some(s) => Ok(vec![*s]),
            None => bail!("unknown service {name:?}: one of {SERVICES:?}"),
        },
    }
}

async fn status(ctx: &Context, args: &StatusArgs) -> anyhow::Result<ExitCode> {
    let mut all = Vec::new();
    for service in services(args.service.as_deref())? {
        let status = ctx
            .clients
            .admin(service)?
            .get_outbox_status(pb::GetOutboxStatusRequest {})
            .await
            .map_err(|s| api::failed(service, "reading the outbox", &s))?
            .into_inner();
        all.push((service, status));
    }
    match ctx.format {
        Format::Json => output::print_json(&json!({
            "outboxes": all.iter().map(|(service, s)| json!({
                "service": service,
                "backlog": s.backlog,
                "oldest_age_seconds": s.oldest_age_seconds,
                "retrying": s.retrying,
                "parked": s.parked.iter().map(|p| json!({
                    "id": p.id,
                    "event_id": p.event_id,
                    "topic": p.topic,
                    "key": p.key,
                    "event_type": p.event_type,
                    "attempts": p.attempts,
                    "last_error": p.last_error,
                    "created_at": output::json_time(p.created_at.as_ref()),
                    "parked_at": output::json_time(p.parked_at.as_ref()),
                    "waiting_behind": p.waiting_behind,
                })).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        })),
        Format::Table => {
            let mut table = Table::new(&["SERVICE", "BACKLOG", "OLDEST AGE", "RETRYING", "PARKED"]);
            for (service, s) in &all {
                table.row(vec![
                    (*service).to_owned(),
                    s.backlog.to_string(),
                    format!("{:.1}s", s.oldest_age_seconds),
                    s.retrying.to_string(),
                    s.parked.len().to_string(),
                ]);
            }
            print!("{}", table.render());
            let mut parked = Table::new(&[
                "SERVICE",
                "ID",
                "TOPIC",
                "KEY",
                "EVENT TYPE",
                "ATTEMPTS",
                "PARKED AT",
                "BEHIND",
                "LAST ERROR",
            ]);
            for (service, s) in &all {
                for p in &s.parked {
                    parked.row(vec![
                        (*service).to_owned(),
                        p.id.to_string(),
                        p.topic.clone(),
                        p.key.clone(),
                        p.event_type.clone(),
                        p.attempts.to_string(),
                        output::time(p.parked_at.as_ref()),
                        p.waiting_behind.to_string(),
                        short(&p.last_error, 100),
                    ]);
                }
            }
            if !parked.is_empty() {
                println!(
                    "\nParked rows (fix the cause, then `shopctl outbox retry --service S --id ID`; or `shopctl outbox drop` for rows that must never be published):"
                );
                print!("{}", parked.render());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn settle(ctx: &Context, args: &ParkedArgs, retry: bool) -> anyhow::Result<ExitCode> {
    let service = services(Some(&args.service))?[0];
    if !args.all && args.topic.is_none() && args.ids.is_empty() {
        bail!("select the parked rows: --all, --topic TOPIC or --id ID");
    }
    let selection = pb::ParkedSelection {
        all: args.all,
        topic: args.topic.clone().unwrap_or_default(),
        ids: args.ids.clone(),
    };
    let mut admin = ctx.clients.admin(service)?;
    let count = if retry {
        admin
            .retry_parked(pb::RetryParkedRequest {
                selection: Some(selection),
                dry_run: args.dry_run,
            })
            .await
            .map_err(|s| api::failed(service, "retrying parked rows", &s))?
            .into_inner()
            .count
    } else {
        admin
            .drop_parked(pb::DropParkedRequest {
                selection: Some(selection),
                dry_run: args.dry_run,
            })
            .await
            .map_err(|s| api::failed(service, "dropping parked rows", &s))?
            .into_inner()
            .count
    };
    let verb = match (retry, args.dry_run) {
        (true, false) => "handed back to the relay",
        (true, true) => "would be handed back to the relay (dry run)",
        (false, false) => "dropped",
        (false, true) => "would be dropped (dry run)",
    };
    match ctx.format {
        Format::Json => output::print_json(&json!({
            "service": service,
            "action": if retry { "retry" } else { "drop" },
            "dry_run": args.dry_run,
            "count": count,
        })),
        Format::Table => println!("{service}: {count} parked row(s) {verb}."),
    }
    Ok(ExitCode::SUCCESS)
}
