//! `shopctl`: the operators' CLI of the shop suite.
//!
//! Everything it shows comes from each service's admin gRPC API (`shop.admin.v1.AdminService`,
//! a port of its own, operators only), the services' public APIs, or Kafka itself: it never
//! reads a database. Run `shopctl --help`, and `--help` after any command.

mod api;
mod decode;
mod dlq;
mod lag;
mod order;
mod outbox;
mod output;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::output::Format;

/// The operators' CLI of the shop suite: dead letters, outboxes, an order's saga, consumer lag.
///
/// Needs an operator's token (`--token`, `SHOP_TOKEN` or `SHOP_TOKEN_FILE`; deploy/run.sh writes
/// one to $SHOP_STATE_DIR/auth/operator.token). The defaults of the addresses are those of a
/// local run (deploy/run.sh); in Kubernetes, port-forward the services' `admin` ports (see
/// docs/operations.md).
#[derive(Debug, Parser)]
#[command(name = "shopctl", version, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
struct Global {
    /// An operator's bearer token (`shop-token mint --operator NAME`).
    #[arg(long, env = "SHOP_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// A file holding the token (used when no token is given).
    #[arg(long, env = "SHOP_TOKEN_FILE", global = true)]
    token_file: Option<PathBuf>,
    /// How to print: aligned tables, or one JSON document.
    #[arg(long, short = 'o', value_enum, default_value_t = Format::Table, global = true)]
    output: Format,
    /// The order service's admin API.
    #[arg(
        long,
        env = "ORDER_ADMIN_URL",
        default_value = "http://127.0.0.1:50061",
        global = true
    )]
    order_admin: String,
    /// The inventory service's admin API.
    #[arg(
        long,
        env = "INVENTORY_ADMIN_URL",
        default_value = "http://127.0.0.1:50062",
        global = true
    )]
    inventory_admin: String,
    /// The payment service's admin API.
    #[arg(
        long,
        env = "PAYMENT_ADMIN_URL",
        default_value = "http://127.0.0.1:50063",
        global = true
    )]
    payment_admin: String,
    /// The notification service's admin API.
    #[arg(
        long,
        env = "NOTIFICATION_ADMIN_URL",
        default_value = "http://127.0.0.1:50064",
        global = true
    )]
    notification_admin: String,
    /// The order service's public API (for `order`).
    #[arg(
        long,
        env = "ORDER_URL",
        default_value = "http://127.0.0.1:50051",
        global = true
    )]
    order_url: String,
    /// The inventory service's public API (for `order`).
    #[arg(
        long,
        env = "INVENTORY_URL",
        default_value = "http://127.0.0.1:50052",
        global = true
    )]
    inventory_url: String,
    /// The payment service's public API (for `order`).
    #[arg(
        long,
        env = "PAYMENT_URL",
        default_value = "http://127.0.0.1:50053",
        global = true
    )]
    payment_url: String,
    /// The notification service's public API (for `order`).
    #[arg(
        long,
        env = "NOTIFICATION_URL",
        default_value = "http://127.0.0.1:50054",
        global = true
    )]
    notification_url: String,
    /// Kafka (for `lag`); the security properties come from KAFKA_SECURITY_*, KAFKA_SASL_* and
    /// KAFKA_SSL_* as for the services.
    #[arg(
        long,
        env = "KAFKA_BOOTSTRAP_SERVERS",
        default_value = "127.0.0.1:9092",
        global = true
    )]
    kafka: String,
    /// Longest wait for any one call, in seconds.
    #[arg(long, default_value_t = 10, global = true)]
    timeout_seconds: u64,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Dead letters: records a consumer could not apply and set aside.
    #[command(subcommand)]
    Dlq(dlq::Dlq),
    /// Each service's outbox: events not yet published, and rows parked after failing to.
    #[command(subcommand)]
    Outbox(outbox::Outbox),
    /// One order's whole saga as a timeline, and what it waits for.
    Order(order::OrderArgs),
    /// Every consumer group's lag per partition, from the broker's committed offsets.
    Lag(lag::LagArgs),
    /// What operators did (replays, purges, republishes, retries, drops), from every service's
    /// audit table.
    Audit(dlq::AuditArgs),
}

/// Where `shopctl` talks to, and how it prints.
#[derive(Debug)]
pub(crate) struct Context {
    pub(crate) clients: api::Clients,
    pub(crate) format: Format,
    pub(crate) kafka: String,
}

fn context(global: &Global) -> anyhow::Result<Context> {
    let bearer = api::Bearer::new(global.token.as_deref(), global.token_file.as_deref())?;
    Ok(Context {
        clients: api::Clients {
            bearer,
            admin: [
                global.order_admin.clone(),
                global.inventory_admin.clone(),
                global.payment_admin.clone(),
                global.notification_admin.clone(),
            ],
            public: [
                global.order_url.clone(),
                global.inventory_url.clone(),
                global.payment_url.clone(),
                global.notification_url.clone(),
            ],
            timeout: Duration::from_secs(global.timeout_seconds.max(1)),
        },
        format: global.output,
        kafka: global.kafka.clone(),
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match context(&cli.global) {
        Ok(ctx) => match cli.command {
            Command::Dlq(command) => dlq::run(&ctx, command).await,
            Command::Outbox(command) => outbox::run(&ctx, command).await,
            Command::Order(args) => order::run(&ctx, &args).await,
            Command::Lag(args) => lag::run(&ctx, &args).await,
            Command::Audit(args) => dlq::audit(&ctx, &args).await,
        },
        Err(error) => Err(error),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("shopctl: {error:#}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    #[test]
    fn every_command_has_help() {
        let mut command = super::Cli::command();
        command.build();
        fn walk(command: &clap::Command, path: &str) {
            assert!(command.get_about().is_some(), "`{path}` has no help text");
            for sub in command.get_subcommands() {
                if sub.get_name() != "help" {
                    walk(sub, &format!("{path} {}", sub.get_name()));
                }
            }
        }
        walk(&command, "shopctl");
        super::Cli::command().debug_assert();
    }
}
