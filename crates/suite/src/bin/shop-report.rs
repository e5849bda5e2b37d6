//! Writes standard input into one section of a report, between its markers: how the benchmark
//! scripts that print text (`deploy/bench-relay.sh`, `deploy/bench-ceiling.sh`) put their
//! figures into `docs/benchmarks.md` beside the sweep's, by the same rule
//! ([`shop_suite::sweep::replace_section`]: the prose around a section survives every rerun).
//!
//! ```text
//! some-benchmark | shop-report [--markdown] docs/benchmarks.md "relay mock" "Measured … by deploy/bench-relay.sh"
//! ```
//!
//! The input is kept as printed under the heading line given: in a fenced block, or as it is
//! with `--markdown` (a benchmark that prints tables).

use std::io::Read as _;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1).peekable();
    let markdown = args.next_if(|a| a == "--markdown").is_some();
    let (Some(path), Some(name)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: shop-report [--markdown] FILE SECTION [HEADING] < text");
    };
    let heading = args.next().unwrap_or_default();
    let mut text = String::new();
    std::io::stdin().read_to_string(&mut text)?;
    anyhow::ensure!(
        !text.trim().is_empty(),
        "nothing on standard input to report"
    );
    let section = if markdown {
        format!("{}\n\n{}\n", heading.trim(), text.trim_end())
    } else {
        format!("{}\n\n```text\n{}\n```\n", heading.trim(), text.trim_end())
    };
    let document = std::fs::read_to_string(&path).unwrap_or_default();
    std::fs::write(
        &path,
        shop_suite::sweep::replace_section(&document, &name, section.trim_start()),
    )?;
    eprintln!("report: {path} (section {name})");
    Ok(())
}
