//! A minimal OTLP/gRPC trace collector for local runs without Jaeger: point the services'
//! `OTEL_EXPORTER_OTLP_ENDPOINT` at it and it prints every trace as a span tree once the trace
//! has been quiet for a moment, or (with `--count`) only counts spans, for load tests.
//!
//! ```text
//! otlp-sink [--listen 127.0.0.1:4317] [--quiet-ms 2000] [--min-spans 1] [--count]
//! ```

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use shop_testkit::otlp::{OtlpReceiver, ReceivedSpan, render_tree};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut listen = "127.0.0.1:4317".to_owned();
    let mut quiet = Duration::from_millis(2000);
    let mut min_spans = 1;
    let mut count_only = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => listen = args.next().context("--listen needs HOST:PORT")?,
            "--quiet-ms" => {
                quiet = Duration::from_millis(args.next().context("--quiet-ms needs ms")?.parse()?)
            }
            "--min-spans" => min_spans = args.next().context("--min-spans needs N")?.parse()?,
            "--count" => count_only = true,
            "-h" | "--help" => {
                println!(
                    "otlp-sink [--listen 127.0.0.1:4317] [--quiet-ms 2000] [--min-spans 1] [--count]"
                );
                return Ok(());
            }
            other => bail!("unknown argument {other}"),
        }
    }
    let receiver = OtlpReceiver::start(listen.parse()?).await?;
    eprintln!(
        "otlp-sink: receiving OTLP/gRPC traces at {}",
        receiver.endpoint()
    );
    // Traces still receiving spans: their spans, and when the last one arrived.
    let mut pending: HashMap<String, (Vec<ReceivedSpan>, Instant)> = HashMap::new();
    let mut printed: HashSet<String> = HashSet::new();
    let mut received = 0_usize;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = terminate.recv() => break,
            _ = tick.tick() => {}
        }
        let spans = receiver.drain();
        received += spans.len();
        if count_only {
            continue;
        }
        let now = Instant::now();
        for span in spans {
            // A span of a trace printed already arrived late: show it on its own.
            let entry = pending
                .entry(span.trace_id.clone())
                .or_insert_with(|| (Vec::new(), now));
            entry.0.push(span);
            entry.1 = now;
        }
        let done: Vec<String> = pending
            .iter()
            .filter(|(_, (_, last))| now.duration_since(*last) >= quiet)
            .map(|(id, _)| id.clone())
            .collect();
        for trace_id in done {
            let Some((spans, _)) = pending.remove(&trace_id) else {
                continue;
            };
            let late = !printed.insert(trace_id.clone());
            if spans.len() >= min_spans || late {
                println!(
                    "trace {trace_id} ({} spans{})\n{}",
                    spans.len(),
                    if late { ", arrived late" } else { "" },
                    render_tree(&spans)
                );
            }
        }
    }
    eprintln!("otlp-sink: received {received} spans");
    println!("otlp-sink: received {received} spans");
    Ok(())
}
