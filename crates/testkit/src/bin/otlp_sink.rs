//! A minimal OTLP/gRPC trace collector for local runs without Jaeger: point the services'
//! `OTEL_EXPORTER_OTLP_ENDPOINT` at it and it prints every trace as a span tree once the trace
//! has been quiet for a moment.
//!
//! ```text
//! otlp-sink [--listen 127.0.0.1:4317] [--quiet-ms 2000] [--min-spans 1]
//! ```

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use anyhow::{Context, bail};
use shop_testkit::otlp::{OtlpReceiver, render_tree};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut listen = "127.0.0.1:4317".to_owned();
    let mut quiet = Duration::from_millis(2000);
    let mut min_spans = 1;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => listen = args.next().context("--listen needs HOST:PORT")?,
            "--quiet-ms" => {
                quiet = Duration::from_millis(args.next().context("--quiet-ms needs ms")?.parse()?)
            }
            "--min-spans" => min_spans = args.next().context("--min-spans needs N")?.parse()?,
            "-h" | "--help" => {
                println!("otlp-sink [--listen 127.0.0.1:4317] [--quiet-ms 2000] [--min-spans 1]");
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
    let mut printed: HashSet<String> = HashSet::new();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = tick.tick() => {}
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        let mut traces: BTreeMap<String, Vec<_>> = BTreeMap::new();
        for span in receiver.spans() {
            if !printed.contains(&span.trace_id) {
                traces.entry(span.trace_id.clone()).or_default().push(span);
            }
        }
        for (trace_id, spans) in traces {
            let last_end = spans.iter().map(|s| s.end_unix_nanos).max().unwrap_or(0);
            let quiet_nanos = u64::try_from(quiet.as_nanos()).unwrap_or(u64::MAX);
            if now.saturating_sub(last_end) < quiet_nanos {
                continue;
            }
            printed.insert(trace_id.clone());
            if spans.len() >= min_spans {
                println!(
                    "trace {trace_id} ({} spans)\n{}",
                    spans.len(),
                    render_tree(&spans)
                );
            }
        }
    }
}
