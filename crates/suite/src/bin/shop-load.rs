//! Load generator: places orders against a running suite and reports orders/s, refusals and
//! placed-to-terminal latency (PlaceOrder answered → OrderConfirmed or OrderCancelled seen on the
//! order topic), with the CPU each program of the machine spent per order.
//!
//! ```text
//! shop-load [--concurrency 16] [--seconds 60] [--rate N] [--kafka 127.0.0.1:9092] [--topic order.events.v1]
//! shop-load --sweep 50,100,150 [--seconds 20] [--overload-seconds 60] [--report docs/benchmarks.md --label mock --about TEXT]
//! ```
//!
//! Without `--rate`, each of `--concurrency` clients places its next order as soon as the last
//! one was answered (closed loop on PlaceOrder: the most the API takes, which can outrun the
//! saga). With `--rate N`, N new orders arrive per second whatever happens to them (open loop, as
//! customers do; at most `--concurrency` calls in flight): below the saga's capacity,
//! placed-to-terminal latency stays flat; above it the admission control refuses the excess.
//!
//! `--sweep R1,R2,…` offers each rate in turn for `--seconds` (after 10 s of warm-up at the
//! first), finds the knee (the highest rate
//! kept up with: [`shop_suite::sweep::knee`]), then offers twice the knee for
//! `--overload-seconds`, then half the knee for 10 s to show the suite is back to normal; with
//! `--report FILE` it writes the tables and plots into FILE's section `--label` (SVGs beside
//! it, in a folder named after it) — `deploy/load.sh --sweep` does all of this.
//!
//! Service addresses: `ORDER_URL`, `INVENTORY_URL`, `PAYMENT_URL`, `NOTIFICATION_URL`. It seeds
//! its own sku and customers (stock and money enough for every order), so every order should
//! end CONFIRMED; any other outcome is reported. It seeds as the shop's operator and places
//! each order as one of its customers, with tokens minted from the dev signing key
//! `SHOP_SIGNING_KEY` (`shop_suite::clients::dev_issuer`): every call is authenticated, as in
//! production. A PlaceOrder refused for want of capacity (`RESOURCE_EXHAUSTED`) is counted and
//! placed again with the same idempotency key after the delay its `RetryInfo` asks for, as a
//! real client would, at most [`ATTEMPTS`] times; an order still refused then is given up.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use shop_proto::common::v1::Money;
use shop_proto::order::v1::order_service_client::OrderServiceClient;
use shop_proto::{inventory, order, payment};
use shop_suite::clients::{Clients, Endpoints, dev_issuer};
use shop_suite::procstat::Sample;
use shop_suite::sweep::{self, Step};
use shop_testkit::Authed;
use tokio::sync::Semaphore;
use tonic_types::StatusExt as _;

/// Attempts per order: the first and four retries, as gRPC's own retry policy allows at most.
const ATTEMPTS: u32 = 5;

/// HTTP/2 connections the customers' calls are spread over.
const CONNECTIONS: usize = 8;

struct Args {
    concurrency: usize,
    seconds: u64,
    rate: Option<f64>,
    sweep: Vec<f64>,
    overload_seconds: u64,
    report: Option<std::path::PathBuf>,
    label: String,
    about: String,
    kafka: String,
    topic: String,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        concurrency: 16,
        seconds: 60,
        rate: None,
        sweep: Vec::new(),
        overload_seconds: 60,
        report: None,
        label: "mock".into(),
        about: String::new(),
        kafka: std::env::var("KAFKA_BOOTSTRAP_SERVERS").unwrap_or_else(|_| "127.0.0.1:9092".into()),
        topic: shop_proto::topics::ORDER_EVENTS.into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--concurrency" => a.concurrency = value()?.parse()?,
            "--seconds" => a.seconds = value()?.parse()?,
            "--rate" => a.rate = Some(value()?.parse()?),
            "--sweep" => {
                a.sweep = value()?
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<_, _>>()?;
            }
            "--overload-seconds" => a.overload_seconds = value()?.parse()?,
            "--report" => a.report = Some(value()?.into()),
            "--label" => a.label = value()?,
            "--about" => a.about = value()?,
            "--kafka" => a.kafka = value()?,
            "--topic" => a.topic = value()?,
            other => anyhow::bail!("unknown flag {other}"),
        }
    }
    anyhow::ensure!(a.concurrency > 0, "--concurrency must be at least 1");
    Ok(a)
}

fn eur(amount_minor: i64) -> Option<Money> {
    Some(Money {
        amount_minor,
        currency: "EUR".into(),
    })
}

/// Terminal events seen on the order topic, for the step under way.
#[derive(Default)]
struct Outcomes {
    /// When each accepted order was answered, until its terminal event.
    placed_at: HashMap<String, Instant>,
    terminal: Option<Histogram<u64>>,
    confirmed: u64,
    cancelled: u64,
    /// Terminal while orders were still being placed (before `window_end`).
    in_window: u64,
    window_end: Option<Instant>,
}

/// What the placing of one step counted.
struct Placing {
    placed: AtomicU64,
    failed: AtomicU64,
    gave_up: AtomicU64,
    rpc: Mutex<Histogram<u64>>,
    /// How long each refusal for want of capacity took to arrive.
    refusals: Mutex<Histogram<u64>>,
}

impl Placing {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            placed: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            gave_up: AtomicU64::new(0),
            rpc: Mutex::new(Histogram::new(3)?),
            refusals: Mutex::new(Histogram::new(3)?),
        })
    }
}

struct Load {
    run: String,
    sku: String,
    customers: Vec<OrderServiceClient<Authed>>,
    concurrency: usize,
    outcomes: Arc<Mutex<Outcomes>>,
    steps: AtomicU64,
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

impl Load {
    /// The `n`th order of step `step`: its customer's client and its request (one unit of the
    /// load's sku), with a key of its own.
    fn order(
        &self,
        step: u64,
        n: u64,
    ) -> (OrderServiceClient<Authed>, order::v1::PlaceOrderRequest) {
        let customer = usize::try_from(n).unwrap_or(0) % self.customers.len();
        let request = order::v1::PlaceOrderRequest {
            idempotency_key: format!("load-{}-{step}-{n}", self.run),
            customer_id: format!("load-{}-{customer}", self.run),
            lines: vec![order::v1::LineRequest {
                sku: self.sku.clone(),
                quantity: 1,
            }],
        };
        (self.customers[customer].clone(), request)
    }

    /// Places one order, retrying its refusals after their RetryInfo (same key) until it is
    /// accepted, [`ATTEMPTS`] are spent or the step's placing ends.
    async fn place(
        &self,
        mut client: OrderServiceClient<Authed>,
        request: order::v1::PlaceOrderRequest,
        in_flight: &Semaphore,
        deadline: Instant,
        counts: &Placing,
    ) {
        for attempt in 1..=ATTEMPTS {
            let result = {
                let _permit = in_flight.acquire().await;
                let call = Instant::now();
                let result = client.place_order(request.clone()).await;
                (result, micros(call.elapsed()))
            };
            match result {
                (Ok(response), took) => {
                    let id = response
                        .into_inner()
                        .order
                        .map(|o| o.order_id)
                        .unwrap_or_default();
                    self.outcomes
                        .lock()
                        .unwrap()
                        .placed_at
                        .insert(id, Instant::now());
                    let _ = counts.rpc.lock().unwrap().record(took);
                    counts.placed.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                (Err(status), took) if status.code() == tonic::Code::ResourceExhausted => {
                    let _ = counts.refusals.lock().unwrap().record(took);
                    let delay = status
                        .get_details_retry_info()
                        .and_then(|r| r.retry_delay)
                        .unwrap_or(Duration::from_millis(100));
                    if attempt == ATTEMPTS || Instant::now() + delay >= deadline {
                        break;
                    }
                    tokio::time::sleep(delay).await;
                }
                (Err(status), _) => {
                    if counts.failed.fetch_add(1, Ordering::Relaxed) < 5 {
                        eprintln!("PlaceOrder failed: {status}");
                    }
                    return;
                }
            }
        }
        counts.gave_up.fetch_add(1, Ordering::Relaxed);
    }

    /// One step: orders offered at `rate` per second (or, without, by `concurrency` clients as
    /// fast as they are answered) for `seconds`, then drained; what it measured.
    async fn step(self: &Arc<Self>, rate: Option<f64>, seconds: u64) -> anyhow::Result<Step> {
        let step = self.steps.fetch_add(1, Ordering::Relaxed);
        let counts = Arc::new(Placing::new()?);
        let in_flight = Arc::new(Semaphore::new(self.concurrency));
        let started = Instant::now();
        let deadline = started + Duration::from_secs(seconds);
        {
            let mut o = self.outcomes.lock().unwrap();
            o.terminal = Some(Histogram::new(3)?);
            (o.confirmed, o.cancelled, o.in_window) = (0, 0, 0);
            o.window_end = Some(deadline);
        }
        let before = Sample::now();
        let mut orders = tokio::task::JoinSet::new();
        let mut offered = 0_u64;
        match rate {
            Some(rate) => loop {
                // The next order's arrival: one every 1/rate s since the start, whether or not
                // the earlier ones were answered.
                let due = started + Duration::from_secs_f64(offered as f64 / rate);
                if due >= deadline {
                    break;
                }
                tokio::time::sleep_until(due.into()).await;
                let (client, request) = self.order(step, offered);
                offered += 1;
                let (load, in_flight, counts) = (self.clone(), in_flight.clone(), counts.clone());
                orders.spawn(async move {
                    load.place(client, request, &in_flight, deadline, &counts)
                        .await;
                });
            },
            None => {
                let issued = Arc::new(AtomicU64::new(0));
                for _ in 0..self.concurrency {
                    let (load, in_flight, counts, issued) = (
                        self.clone(),
                        in_flight.clone(),
                        counts.clone(),
                        issued.clone(),
                    );
                    orders.spawn(async move {
                        while Instant::now() < deadline {
                            let n = issued.fetch_add(1, Ordering::Relaxed);
                            let (client, request) = load.order(step, n);
                            load.place(client, request, &in_flight, deadline, &counts)
                                .await;
                        }
                    });
                }
                while orders.join_next().await.is_some() {}
                offered = issued.load(Ordering::Relaxed);
            }
        }
        while orders.join_next().await.is_some() {}
        let placing = started.elapsed().as_secs_f64();
        // Let the saga finish the orders still in flight.
        let drain = Instant::now();
        while !self.outcomes.lock().unwrap().placed_at.is_empty()
            && drain.elapsed() < Duration::from_secs(60)
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let drained_s = drain.elapsed().as_secs_f64();
        let after = Sample::now();

        let mut o = self.outcomes.lock().unwrap();
        let not_terminal = o.placed_at.len() as u64;
        // What is left now is not waited for again: it is reported, and the next step starts
        // clean.
        o.placed_at.clear();
        o.window_end = None;
        let terminal = o
            .terminal
            .take()
            .unwrap_or_else(|| Histogram::new(3).unwrap());
        let completed = o.confirmed + o.cancelled;
        let rpc = counts.rpc.lock().unwrap().clone();
        let refusals = counts.refusals.lock().unwrap().clone();
        let per_order = |seconds: f64| {
            if completed == 0 {
                0.0
            } else {
                seconds * 1000.0 / completed as f64
            }
        };
        let cpu = after.cpu_since(&before);
        let (busy, idle) = (
            after.machine.busy() - before.machine.busy(),
            after.machine.idle - before.machine.idle,
        );
        Ok(Step {
            offered_per_s: rate.unwrap_or(offered as f64 / placing),
            seconds: placing,
            accepted_per_s: counts.placed.load(Ordering::Relaxed) as f64 / placing,
            completed_per_s: o.in_window as f64 / placing,
            confirmed: o.confirmed,
            cancelled: o.cancelled,
            not_terminal,
            drained_s,
            refusals: refusals.len(),
            gave_up: counts.gave_up.load(Ordering::Relaxed),
            failures: counts.failed.load(Ordering::Relaxed),
            place_p50_ms: ms(&rpc, 0.5),
            place_p99_ms: ms(&rpc, 0.99),
            refusal_p50_ms: ms(&refusals, 0.5),
            refusal_p99_ms: ms(&refusals, 0.99),
            terminal_p50_ms: ms(&terminal, 0.5),
            terminal_p99_ms: ms(&terminal, 0.99),
            terminal_max_ms: terminal.max() as f64 / 1000.0,
            cpu_ms_per_order: cpu.into_iter().map(|(p, s)| (p, per_order(s))).collect(),
            machine_ms_per_order: per_order(busy),
            machine_busy: if busy + idle > 0.0 {
                busy / (busy + idle)
            } else {
                0.0
            },
            rss_mib: after
                .programs
                .iter()
                .map(|(p, u)| (p.clone(), u.rss_bytes as f64 / (1024.0 * 1024.0)))
                .collect(),
        })
    }
}

/// Reads the order topic's terminal events into `outcomes`, for as long as the process runs.
fn read_terminal_events(consumer: StreamConsumer, outcomes: Arc<Mutex<Outcomes>>) {
    tokio::spawn(async move {
        loop {
            let Ok(message) = consumer.recv().await else {
                continue;
            };
            let kind = message
                .headers()
                .and_then(|h| h.iter().find(|h| h.key == "ce_type").and_then(|h| h.value))
                .map(<[u8]>::to_vec);
            let confirmed = kind.as_deref() == Some(b"shop.order.v1.OrderConfirmed".as_slice());
            let cancelled = kind.as_deref() == Some(b"shop.order.v1.OrderCancelled".as_slice());
            if !(confirmed || cancelled) {
                continue;
            }
            let Some(key) = message
                .key()
                .map(|k| String::from_utf8_lossy(k).into_owned())
            else {
                continue;
            };
            let mut o = outcomes.lock().unwrap();
            let Some(at) = o.placed_at.remove(&key) else {
                continue;
            };
            if let Some(h) = o.terminal.as_mut() {
                let _ = h.record(micros(at.elapsed()));
            }
            if confirmed {
                o.confirmed += 1;
            } else {
                o.cancelled += 1;
            }
            if o.window_end.is_some_and(|end| Instant::now() <= end) {
                o.in_window += 1;
            }
        }
    });
}

fn print_step(step: &Step) {
    println!(
        "placed      {:.0} orders/s accepted of {:.0} offered over {:.1} s ({} PlaceOrder failures, {} orders given up after refusals)",
        step.accepted_per_s, step.offered_per_s, step.seconds, step.failures, step.gave_up
    );
    println!(
        "terminal    {} confirmed, {} cancelled, {} not terminal after the drain ({:.1} s)",
        step.confirmed, step.cancelled, step.not_terminal, step.drained_s
    );
    println!(
        "sustained   {:.0} orders/s reached a terminal state while orders were being placed",
        step.completed_per_s
    );
    println!(
        "PlaceOrder  p50 {:.1} ms, p99 {:.1} ms",
        step.place_p50_ms, step.place_p99_ms
    );
    println!(
        "refused     {} times (RESOURCE_EXHAUSTED, retried after their RetryInfo); refusal p50 {:.1} ms, p99 {:.1} ms",
        step.refusals, step.refusal_p50_ms, step.refusal_p99_ms
    );
    println!(
        "placed->terminal  p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        step.terminal_p50_ms, step.terminal_p99_ms, step.terminal_max_ms
    );
    let mut cpu: Vec<_> = step.cpu_ms_per_order.iter().collect();
    cpu.sort_by(|a, b| b.1.total_cmp(a.1));
    let top: Vec<String> = cpu
        .iter()
        .take(8)
        .map(|(p, ms)| format!("{p} {ms:.2}"))
        .collect();
    println!(
        "CPU         {:.2} ms per order on the machine ({:.0} % busy); by program: {}",
        step.machine_ms_per_order,
        step.machine_busy * 100.0,
        top.join(", ")
    );
}

/// The memory of the programs that matter (those of the CPU table), before, at the end of and
/// after the overload, in MiB.
fn memory_table(before: &Step, over: &Step, after: &Step) -> String {
    let mut out = String::from(
        "| program | before (MiB) | end of the overload | 10 s after |\n| --- | ---: | ---: | ---: |\n",
    );
    let mib = |step: &Step, program: &str| step.rss_mib.get(program).copied().unwrap_or(0.0);
    for program in sweep::programs(std::slice::from_ref(over)) {
        let _ = writeln!(
            out,
            "| {program} | {:.0} | {:.0} | {:.0} |",
            mib(before, &program),
            mib(over, &program),
            mib(after, &program)
        );
    }
    out
}

async fn sweep_run(load: &Arc<Load>, args: &Args) -> anyhow::Result<()> {
    // A warm-up, not reported: a broker just started (a JVM compiling its hot paths), caches
    // and pools still cold, would make the first step look slower than the rest.
    if let Some(&first) = args.sweep.first() {
        println!("\n== warm-up: {first} orders/s for 10 s (not reported)");
        load.step(Some(first), 10).await?;
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let mut steps = Vec::new();
    for &rate in &args.sweep {
        println!("\n== {rate} orders/s offered for {} s", args.seconds);
        let step = load.step(Some(rate), args.seconds).await?;
        print_step(&step);
        steps.push(step);
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let knee = sweep::knee(&steps);
    println!("\nknee: {knee:?} orders/s");
    let mut overload = None;
    if let Some(knee) = knee {
        let baseline = steps.last().cloned().unwrap_or_default();
        println!(
            "\n== overload: {} orders/s (2x the knee) for {} s",
            2.0 * knee,
            args.overload_seconds
        );
        let over = load.step(Some(2.0 * knee), args.overload_seconds).await?;
        print_step(&over);
        println!("\n== after: {} orders/s for 10 s", knee / 2.0);
        let after = load.step(Some(knee / 2.0), 10).await?;
        print_step(&after);
        overload = Some((knee, baseline, over, after));
    }
    let Some(path) = &args.report else {
        return Ok(());
    };
    let label = &args.label;
    let dir = path.with_extension("");
    std::fs::create_dir_all(&dir)?;
    let folder = dir
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut section = String::new();
    let _ = writeln!(section, "{}\n", args.about.trim());
    let _ = writeln!(
        section,
        "Each step offers new orders at a fixed rate for {} s (open loop; a refusal is retried after its RetryInfo, {ATTEMPTS} attempts at most), after 10 s of warm-up at the first rate.\n",
        args.seconds
    );
    section.push_str(&sweep::table(&steps));
    match knee {
        Some(k) => {
            let _ = writeln!(
                section,
                "\n**Knee: {k:.0} orders/s** (the highest rate completed within 5 %, with under 1 % refused and p99 placed→terminal ≤ 1 s).\n"
            );
        }
        None => section.push_str("\n**No step was kept up with**: no knee.\n\n"),
    }
    for (name, svg) in sweep::plots(label, &steps) {
        let file = format!("{label}-{name}.svg");
        std::fs::write(dir.join(&file), svg)?;
        let _ = writeln!(section, "![{name} ({label})]({folder}/{file})");
    }
    section.push_str("\nCPU milliseconds per completed order, by program (`/proc`):\n\n");
    section.push_str(&sweep::cpu_table(&steps));
    if let Some((knee, baseline, over, after)) = &overload {
        let _ = writeln!(
            section,
            "\n**Overload: {:.0} orders/s (2× the knee) for {} s**, then {:.0} orders/s for 10 s:\n",
            2.0 * knee,
            args.overload_seconds,
            knee / 2.0
        );
        section.push_str(&sweep::table(&[over.clone(), after.clone()]));
        let _ = writeln!(
            section,
            "\nAccepted orders all terminal {:.1} s after the last was placed; {} not terminal (lost unless found by the audit). Memory (proportional set size, shared pages divided among their processes):\n",
            over.drained_s, over.not_terminal
        );
        section.push_str(&memory_table(baseline, over, after));
    }
    let document = std::fs::read_to_string(path).unwrap_or_default();
    let name = format!("sweep {label}");
    std::fs::write(path, sweep::replace_section(&document, &name, &section))?;
    println!(
        "report: {} (section {name}), plots in {}",
        path.display(),
        dir.display()
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = args()?;
    let issuer = dev_issuer()?;
    let mut c = Clients::connect(
        &Endpoints::from_env(),
        Duration::from_secs(60),
        &issuer.operator("load-operator"),
    )
    .await?;
    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let sku = format!("LOAD-{run}");
    c.inventory
        .upsert_product(inventory::v1::UpsertProductRequest {
            sku: sku.clone(),
            name: "load".into(),
            unit_price: eur(100),
        })
        .await?;
    c.inventory
        .adjust_stock(inventory::v1::AdjustStockRequest {
            sku: sku.clone(),
            delta: 1_000_000_000,
            reason: "load test".into(),
        })
        .await?;
    let lifetime = Duration::from_secs(
        args.seconds * (args.sweep.len() as u64 + 1) + args.overload_seconds + 3600,
    );
    // Customers are many clients, not one: their calls go over several HTTP/2 connections,
    // so that one connection's task (its reads, its writes) is not every call's queue.
    let mut connections = vec![c.with_token(&issuer.operator("load-operator"))];
    for _ in 1..CONNECTIONS.min(args.concurrency) {
        connections.push(
            Clients::connect(
                &Endpoints::from_env(),
                Duration::from_secs(60),
                &issuer.operator("load-operator"),
            )
            .await?,
        );
    }
    let mut customers = Vec::new();
    for i in 0..args.concurrency {
        let id = format!("load-{run}-{i}");
        c.payment
            .open_account(payment::v1::OpenAccountRequest {
                customer_id: id.clone(),
                currency: "EUR".into(),
                frozen: false,
            })
            .await?;
        c.payment
            .deposit(payment::v1::DepositRequest {
                customer_id: id.clone(),
                amount: eur(1_000_000_000_000),
                deposit_id: id.clone(),
            })
            .await?;
        // Each customer calls with a token of its own, on one of the connections.
        let token = issuer.mint(&id, &["customer"], lifetime);
        customers.push(connections[i % connections.len()].with_token(&token).order);
    }

    let mut reading = ClientConfig::new();
    reading
        .set("bootstrap.servers", &args.kafka)
        .set("group.id", format!("shop-load-{run}"))
        .set("auto.offset.reset", "latest")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10");
    // A broker that requires a login (deploy/run.sh --broker kafka: SASL/SCRAM and ACLs) gets
    // the one of the environment, as the services do (KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_*).
    for (key, value) in shop_runtime::kafka::security_properties() {
        reading.set(key, value);
    }
    let consumer: StreamConsumer = reading.create()?;
    consumer.subscribe(&[&args.topic])?;
    // Wait for the assignment before placing anything, so no terminal event is missed.
    let joined = Instant::now();
    while consumer.assignment().map(|a| a.count()).unwrap_or(0) == 0 {
        let _ = tokio::time::timeout(Duration::from_millis(200), consumer.recv()).await;
        anyhow::ensure!(
            joined.elapsed() < Duration::from_secs(60),
            "could not join the order topic"
        );
    }
    let outcomes: Arc<Mutex<Outcomes>> = Arc::default();
    read_terminal_events(consumer, outcomes.clone());
    let load = Arc::new(Load {
        run: run.clone(),
        sku,
        customers,
        concurrency: args.concurrency,
        outcomes,
        steps: AtomicU64::new(0),
    });

    if !args.sweep.is_empty() {
        println!(
            "sweep over {:?} orders/s, {} s each, at most {} calls in flight (run {run})",
            args.sweep, args.seconds, args.concurrency
        );
        return sweep_run(&load, &args).await;
    }
    match args.rate {
        Some(rate) => println!(
            "offering {rate} orders/s (at most {} in flight) for {} s (run {run})",
            args.concurrency, args.seconds
        ),
        None => println!(
            "placing orders with {} concurrent clients for {} s (run {run})",
            args.concurrency, args.seconds
        ),
    }
    let step = load.step(args.rate, args.seconds).await?;
    print_step(&step);
    Ok(())
}
