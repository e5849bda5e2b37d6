//! Load generator: places orders at a fixed concurrency for a fixed time against a running suite
//! and reports orders/s and placed-to-terminal latency (PlaceOrder answered → OrderConfirmed or
//! OrderCancelled seen on the order topic).
//!
//! ```text
//! shop-load [--concurrency 16] [--seconds 60] [--rate N] [--kafka 127.0.0.1:9092] [--topic order.events.v1]
//! ```
//!
//! Without `--rate`, each client places its next order as soon as the last one was accepted
//! (closed loop on PlaceOrder: the most the API takes, which can outrun the saga). With
//! `--rate N`, orders are offered at N per second (open loop, at most `--concurrency` calls in
//! flight): below the saga's capacity, placed-to-terminal latency stays flat; above it, it grows.
//! Service addresses: `ORDER_URL`, `INVENTORY_URL`, `PAYMENT_URL`, `NOTIFICATION_URL`. It seeds
//! its own sku and customers (stock and money enough for every order), so every order should
//! end CONFIRMED; any other outcome is reported. It seeds as the shop's operator and places
//! each client's orders as that client's customer, with tokens minted from the dev signing key
//! `SHOP_SIGNING_KEY` (`shop_suite::clients::dev_issuer`): every call is authenticated, as in
//! production. A PlaceOrder refused for want of capacity (`RESOURCE_EXHAUSTED`) is counted and
//! placed again with the same idempotency key after the delay its `RetryInfo` asks for, as a
//! real client would.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use shop_proto::common::v1::Money;
use shop_proto::{inventory, order, payment};
use shop_suite::clients::{Clients, Endpoints, dev_issuer};
use tonic_types::StatusExt as _;

struct Args {
    concurrency: usize,
    seconds: u64,
    rate: Option<f64>,
    kafka: String,
    topic: String,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        concurrency: 16,
        seconds: 60,
        rate: None,
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
            "--kafka" => a.kafka = value()?,
            "--topic" => a.topic = value()?,
            other => anyhow::bail!("unknown flag {other}"),
        }
    }
    Ok(a)
}

fn eur(amount_minor: i64) -> Option<Money> {
    Some(Money {
        amount_minor,
        currency: "EUR".into(),
    })
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
    }

    // Terminal events, read from the order topic.
    let placed_at: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let terminal = Arc::new(Mutex::new((Histogram::<u64>::new(3)?, 0_u64, 0_u64)));
    // Orders that reached a terminal state while orders were still being placed.
    let done_in_window = Arc::new(AtomicU64::new(0));
    let window_end: Arc<Mutex<Option<Instant>>> = Arc::default();
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
    let reader = {
        let (placed_at, terminal) = (placed_at.clone(), terminal.clone());
        let (done_in_window, window_end) = (done_in_window.clone(), window_end.clone());
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
                if let Some(at) = placed_at.lock().unwrap().remove(&key) {
                    let mut t = terminal.lock().unwrap();
                    let _ =
                        t.0.record(u64::try_from(at.elapsed().as_micros()).unwrap_or(u64::MAX));
                    if confirmed {
                        t.1 += 1
                    } else {
                        t.2 += 1
                    }
                    if window_end
                        .lock()
                        .unwrap()
                        .is_some_and(|end| Instant::now() <= end)
                    {
                        done_in_window.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        })
    };

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
    let placed = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let rpc = Arc::new(Mutex::new(Histogram::<u64>::new(3)?));
    // How long each refusal for want of capacity (RESOURCE_EXHAUSTED) took to arrive.
    let refusals = Arc::new(Mutex::new(Histogram::<u64>::new(3)?));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.seconds);
    *window_end.lock().unwrap() = Some(deadline);
    let slots = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for i in 0..args.concurrency {
        // Each client is a customer of its own, calling with that customer's token.
        let token = issuer.mint(
            &format!("load-{run}-{i}"),
            &["customer"],
            Duration::from_secs(args.seconds + 600),
        );
        let (mut client, sku, run) = (c.with_token(&token).order, sku.clone(), run.clone());
        let (placed, failed, rpc, refusals, placed_at, slots) = (
            placed.clone(),
            failed.clone(),
            rpc.clone(),
            refusals.clone(),
            placed_at.clone(),
            slots.clone(),
        );
        let rate = args.rate;
        workers.push(tokio::spawn(async move {
            let mut n = 0;
            while Instant::now() < deadline {
                if let Some(rate) = rate {
                    // The next order's arrival time: one every 1/rate s since the start.
                    let slot = slots.fetch_add(1, Ordering::Relaxed);
                    let due = started + Duration::from_secs_f64(slot as f64 / rate);
                    if due >= deadline {
                        break;
                    }
                    tokio::time::sleep_until(due.into()).await;
                }
                n += 1;
                let request = order::v1::PlaceOrderRequest {
                    idempotency_key: format!("load-{run}-{i}-{n}"),
                    customer_id: format!("load-{run}-{i}"),
                    lines: vec![order::v1::LineRequest {
                        sku: sku.clone(),
                        quantity: 1,
                    }],
                };
                // As a real client: a refusal for want of capacity is retried with the same
                // key after the delay its RetryInfo asks for (until the run's end).
                loop {
                    let call = Instant::now();
                    let result = client.place_order(request.clone()).await;
                    let took = u64::try_from(call.elapsed().as_micros()).unwrap_or(u64::MAX);
                    match result {
                        Ok(response) => {
                            let id = response
                                .into_inner()
                                .order
                                .map(|o| o.order_id)
                                .unwrap_or_default();
                            placed_at.lock().unwrap().insert(id, Instant::now());
                            let _ = rpc.lock().unwrap().record(took);
                            placed.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(status) if status.code() == tonic::Code::ResourceExhausted => {
                            let _ = refusals.lock().unwrap().record(took);
                            let delay = status
                                .get_details_retry_info()
                                .and_then(|r| r.retry_delay)
                                .unwrap_or(Duration::from_millis(100));
                            if Instant::now() + delay < deadline {
                                tokio::time::sleep(delay).await;
                                continue;
                            }
                        }
                        Err(status) => {
                            if failed.fetch_add(1, Ordering::Relaxed) < 5 {
                                eprintln!("PlaceOrder failed: {status}");
                            }
                        }
                    }
                    break;
                }
            }
        }));
    }
    for w in workers {
        w.await?;
    }
    let placing = started.elapsed();
    // Let the saga finish the orders still in flight.
    let drain = Instant::now();
    while !placed_at.lock().unwrap().is_empty() && drain.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let settled = started.elapsed();
    reader.abort();

    let placed = placed.load(Ordering::Relaxed);
    let (hist, confirmed, cancelled) = {
        let t = terminal.lock().unwrap();
        (t.0.clone(), t.1, t.2)
    };
    let rpc = rpc.lock().unwrap().clone();
    let refusals = refusals.lock().unwrap().clone();
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "placed      {placed} orders in {:.1} s = {:.0} orders/s ({} PlaceOrder failures)",
        placing.as_secs_f64(),
        placed as f64 / placing.as_secs_f64(),
        failed.load(Ordering::Relaxed)
    );
    println!(
        "terminal    {} confirmed, {} cancelled, {} not terminal after the drain; {:.0} completed orders/s over {:.1} s",
        confirmed,
        cancelled,
        placed_at.lock().unwrap().len(),
        (confirmed + cancelled) as f64 / settled.as_secs_f64(),
        settled.as_secs_f64()
    );
    println!(
        "sustained   {:.0} orders/s reached a terminal state while orders were being placed",
        done_in_window.load(Ordering::Relaxed) as f64 / placing.as_secs_f64()
    );
    println!(
        "PlaceOrder  p50 {:.1} ms, p99 {:.1} ms",
        ms(&rpc, 0.5),
        ms(&rpc, 0.99)
    );
    println!(
        "refused     {} times (RESOURCE_EXHAUSTED, retried after their RetryInfo); refusal p50 {:.1} ms, p99 {:.1} ms",
        refusals.len(),
        ms(&refusals, 0.5),
        ms(&refusals, 0.99)
    );
    println!(
        "placed->terminal  p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ms(&hist, 0.5),
        ms(&hist, 0.9),
        ms(&hist, 0.99),
        hist.max() as f64 / 1000.0
    );
    Ok(())
}
