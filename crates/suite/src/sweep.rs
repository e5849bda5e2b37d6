//! The benchmark sweep's report: what one step of offered load measured, where the knee is, and
//! the markdown table and plots `shop-load --sweep` writes into `docs/benchmarks.md`.
//!
//! The report is regenerated, never edited by hand: each measured section sits between markers
//! (`<!-- begin: sweep mock -->` … `<!-- end: sweep mock -->`) that a new run replaces, so the
//! prose around it (what the figures mean, what was changed) survives every rerun.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::plot::{Chart, Series};

/// What one step measured: orders offered at a fixed rate for a fixed time (open loop), and
/// what became of them.
#[derive(Clone, Debug, Default)]
pub struct Step {
    /// Orders offered per second (new orders, retries not counted).
    pub offered_per_s: f64,
    pub seconds: f64,
    /// Orders accepted per second (PlaceOrder answered OK).
    pub accepted_per_s: f64,
    /// Orders that reached a terminal state per second, while orders were being placed.
    pub completed_per_s: f64,
    pub confirmed: u64,
    pub cancelled: u64,
    /// Accepted and not terminal when the drain gave up: lost, unless the audit says otherwise.
    pub not_terminal: u64,
    /// Time from the last order placed until every accepted order was terminal.
    pub drained_s: f64,
    /// Refusals for want of capacity (RESOURCE_EXHAUSTED), each retried after its RetryInfo.
    pub refusals: u64,
    /// Orders never accepted: refused at every attempt, or still refused when the step ended.
    pub gave_up: u64,
    /// Other PlaceOrder failures.
    pub failures: u64,
    pub place_p50_ms: f64,
    pub place_p99_ms: f64,
    pub refusal_p50_ms: f64,
    pub refusal_p99_ms: f64,
    pub terminal_p50_ms: f64,
    pub terminal_p99_ms: f64,
    pub terminal_max_ms: f64,
    /// CPU milliseconds per completed order, by program (from `/proc`).
    pub cpu_ms_per_order: BTreeMap<String, f64>,
    /// The machine's busy CPU milliseconds per completed order (kernel and softirq included).
    pub machine_ms_per_order: f64,
    /// Share of the machine's CPU time that was busy, 0..1.
    pub machine_busy: f64,
    /// Memory at the step's end, by program, in MiB ([`crate::procstat::Usage::rss_bytes`]).
    pub rss_mib: BTreeMap<String, f64>,
}

impl Step {
    /// Whether the suite kept up: it completed nearly all it was offered, refused next to
    /// nothing, and finished orders within the one-second latency target.
    pub fn kept_up(&self) -> bool {
        self.completed_per_s >= 0.95 * self.offered_per_s
            && (self.refusals as f64) <= 0.01 * self.offered_per_s * self.seconds
            && self.terminal_p99_ms <= 1000.0
    }
}

/// The knee: the highest offered rate the suite kept up with, below the first it did not.
pub fn knee(steps: &[Step]) -> Option<f64> {
    let mut knee = None;
    for step in steps {
        if !step.kept_up() {
            break;
        }
        knee = Some(step.offered_per_s);
    }
    knee
}

/// The programs worth a column: those using at least 2 % of the CPU at some step, the
/// busiest first.
pub fn programs(steps: &[Step]) -> Vec<String> {
    let mut seen: BTreeMap<String, f64> = BTreeMap::new();
    for step in steps {
        let total: f64 = step.cpu_ms_per_order.values().sum();
        for (program, ms) in &step.cpu_ms_per_order {
            let share = if total > 0.0 { ms / total } else { 0.0 };
            let best = seen.entry(program.clone()).or_default();
            *best = best.max(share);
        }
    }
    let mut programs: Vec<(String, f64)> = seen.into_iter().filter(|(_, s)| *s >= 0.02).collect();
    programs.sort_by(|a, b| b.1.total_cmp(&a.1));
    programs.into_iter().map(|(p, _)| p).collect()
}

/// The sweep's table, one row per step.
pub fn table(steps: &[Step]) -> String {
    let mut out = String::from(
        "| offered/s | accepted/s | completed/s | refusals | gave up | refusal p50 / p99 ms | PlaceOrder p50 / p99 ms | placed→terminal p50 / p99 ms | not terminal | CPU busy | CPU ms/order |\n\
         | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for s in steps {
        let refusal = if s.refusals == 0 {
            "-".to_owned()
        } else {
            format!("{:.1} / {:.1}", s.refusal_p50_ms, s.refusal_p99_ms)
        };
        let _ = writeln!(
            out,
            "| {:.0} | {:.0} | {:.0} | {} | {} | {} | {:.1} / {:.1} | {:.0} / {:.0} | {} | {:.0} % | {:.1} |",
            s.offered_per_s,
            s.accepted_per_s,
            s.completed_per_s,
            s.refusals,
            s.gave_up,
            refusal,
            s.place_p50_ms,
            s.place_p99_ms,
            s.terminal_p50_ms,
            s.terminal_p99_ms,
            s.not_terminal,
            s.machine_busy * 100.0,
            s.machine_ms_per_order
        );
    }
    out
}

/// CPU milliseconds per completed order by program, one row per step.
pub fn cpu_table(steps: &[Step]) -> String {
    let programs = programs(steps);
    let mut out = String::from("| offered/s |");
    for p in &programs {
        let _ = write!(out, " {p} |");
    }
    out.push_str(" all processes | machine (kernel included) |\n| ---: |");
    for _ in &programs {
        out.push_str(" ---: |");
    }
    out.push_str(" ---: | ---: |\n");
    for s in steps {
        let _ = write!(out, "| {:.0} |", s.offered_per_s);
        for p in &programs {
            let _ = write!(
                out,
                " {:.2} |",
                s.cpu_ms_per_order.get(p).copied().unwrap_or(0.0)
            );
        }
        let all: f64 = s.cpu_ms_per_order.values().sum();
        let _ = writeln!(out, " {all:.2} | {:.2} |", s.machine_ms_per_order);
    }
    out
}

fn series(name: &str, steps: &[Step], y: impl Fn(&Step) -> f64) -> Series {
    Series {
        name: name.into(),
        points: steps.iter().map(|s| (s.offered_per_s, y(s))).collect(),
    }
}

/// The four plots, as (file name suffix, SVG).
pub fn plots(label: &str, steps: &[Step]) -> Vec<(&'static str, String)> {
    let throughput = Chart {
        title: format!("Throughput ({label})"),
        x_label: "offered orders/s".into(),
        y_label: "orders/s".into(),
        series: vec![
            series("offered", steps, |s| s.offered_per_s),
            series("accepted", steps, |s| s.accepted_per_s),
            series("completed while placing", steps, |s| s.completed_per_s),
        ],
        log_y: false,
        reference: None,
    };
    let latency = Chart {
        title: format!("Placed → terminal latency ({label})"),
        x_label: "offered orders/s".into(),
        y_label: "ms (log)".into(),
        series: vec![
            series("p50", steps, |s| s.terminal_p50_ms),
            series("p99", steps, |s| s.terminal_p99_ms),
            series("PlaceOrder p99", steps, |s| s.place_p99_ms),
        ],
        log_y: true,
        reference: Some((1000.0, "1 s target".into())),
    };
    let refusals = Chart {
        title: format!("Refusals ({label})"),
        x_label: "offered orders/s".into(),
        y_label: "per second".into(),
        series: vec![
            series("refusals (RESOURCE_EXHAUSTED)", steps, |s| {
                s.refusals as f64 / s.seconds.max(1.0)
            }),
            series("orders given up", steps, |s| {
                s.gave_up as f64 / s.seconds.max(1.0)
            }),
        ],
        log_y: false,
        reference: None,
    };
    // The busiest seven: one colour each.
    let mut by_program: Vec<Series> = programs(steps)
        .iter()
        .take(7)
        .map(|p| {
            series(p, steps, |s| {
                s.cpu_ms_per_order.get(p).copied().unwrap_or(0.0)
            })
        })
        .collect();
    by_program.push(series("machine (kernel included)", steps, |s| {
        s.machine_ms_per_order
    }));
    let cpu = Chart {
        title: format!("CPU per completed order ({label})"),
        x_label: "offered orders/s".into(),
        y_label: "CPU ms per order".into(),
        series: by_program,
        log_y: false,
        reference: None,
    };
    vec![
        ("throughput", throughput.to_svg()),
        ("latency", latency.to_svg()),
        ("refusals", refusals.to_svg()),
        ("cpu", cpu.to_svg()),
    ]
}

/// `document` with the section between `<!-- begin: {name} -->` and `<!-- end: {name} -->`
/// replaced by `section` (the markers kept); appended at the end when the markers are absent.
pub fn replace_section(document: &str, name: &str, section: &str) -> String {
    let (open, close) = (
        format!("<!-- begin: {name} -->"),
        format!("<!-- end: {name} -->"),
    );
    let body = format!("{open}\n{}\n{close}", section.trim_end());
    match (document.find(&open), document.find(&close)) {
        (Some(start), Some(end)) if end > start => {
            format!(
                "{}{body}{}",
                &document[..start],
                &document[end + close.len()..]
            )
        }
        _ => {
            let mut out = document.trim_end().to_owned();
            if !out.is_empty() {
                out.push_str("\n\n");
            }
            out.push_str(&body);
            out.push('\n');
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(offered: f64, completed: f64, refusals: u64, p99: f64) -> Step {
        Step {
            offered_per_s: offered,
            seconds: 20.0,
            accepted_per_s: completed,
            completed_per_s: completed,
            refusals,
            terminal_p50_ms: p99 / 2.0,
            terminal_p99_ms: p99,
            cpu_ms_per_order: [("order-service".to_owned(), 1.5), ("bash".to_owned(), 0.01)]
                .into_iter()
                .collect(),
            machine_ms_per_order: 4.0,
            ..Step::default()
        }
    }

    #[test]
    fn the_knee_is_the_last_rate_kept_up_with_before_the_first_that_was_not() {
        let steps = [
            step(100.0, 100.0, 0, 80.0),
            step(200.0, 198.0, 0, 300.0),
            step(300.0, 240.0, 0, 900.0),
            step(400.0, 400.0, 0, 100.0),
        ];
        assert_eq!(knee(&steps), Some(200.0));
        assert_eq!(
            knee(&[step(100.0, 100.0, 500, 80.0)]),
            None,
            "refused too often"
        );
        assert_eq!(knee(&[step(100.0, 100.0, 0, 1500.0)]), None, "too slow");
    }

    #[test]
    fn tables_have_a_row_per_step_and_leave_out_programs_that_do_not_count() {
        let steps = [step(100.0, 100.0, 0, 80.0), step(200.0, 150.0, 30, 900.0)];
        let t = table(&steps);
        assert_eq!(t.lines().count(), 4);
        assert!(t.contains("| 200 | 150 | 150 | 30 |"), "{t}");
        let cpu = cpu_table(&steps);
        assert!(cpu.contains("order-service"), "{cpu}");
        assert!(!cpu.contains("bash"), "under 2 %: {cpu}");
        assert!(
            cpu.contains("| 100 | 1.50 | 1.51 | 4.00 |"),
            "all processes, the small ones too: {cpu}"
        );
    }

    #[test]
    fn a_section_is_replaced_between_its_markers_and_the_rest_kept() {
        let doc = "# Benchmarks\n\nprose\n\n<!-- begin: sweep mock -->\nold\n<!-- end: sweep mock -->\n\nafter\n";
        let new = replace_section(doc, "sweep mock", "new table\n");
        assert_eq!(
            new,
            "# Benchmarks\n\nprose\n\n<!-- begin: sweep mock -->\nnew table\n<!-- end: sweep mock -->\n\nafter\n"
        );
        let added = replace_section(&new, "sweep kafka", "kafka table");
        assert!(added.starts_with(&new.trim_end().to_owned()));
        assert!(
            added
                .ends_with("<!-- begin: sweep kafka -->\nkafka table\n<!-- end: sweep kafka -->\n")
        );
        assert_eq!(
            replace_section(&added, "sweep kafka", "kafka table"),
            added,
            "idempotent"
        );
    }

    #[test]
    fn four_plots_are_drawn() {
        let plots = plots(
            "mock",
            &[step(100.0, 100.0, 0, 80.0), step(200.0, 150.0, 30, 900.0)],
        );
        let names: Vec<_> = plots.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ["throughput", "latency", "refusals", "cpu"]);
        assert!(plots.iter().all(|(_, svg)| svg.starts_with("<svg")));
    }
}
