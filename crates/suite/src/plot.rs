//! Line charts as SVG for the benchmark report (`deploy/load.sh --sweep` writes
//! `docs/benchmarks.md`): written by hand, with no dependency, since the report needs only a few
//! lines over a handful of points and an SVG file renders on GitHub and in any browser.

use std::fmt::Write as _;

/// The size of every chart: the report lays them out one under the other, so one size for all.
const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 420.0;
const TOP: f64 = 44.0;
const RIGHT: f64 = 700.0;
const BOTTOM: f64 = 360.0;

/// Okabe-Ito, told apart with any colour vision; its yellow last, as it is faint on white.
const PALETTE: [&str; 8] = [
    "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442",
];

/// One line of a chart: its legend name and its points (x, y), drawn in x order.
#[derive(Clone, Debug, Default)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// A line chart.
#[derive(Clone, Debug, Default)]
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    /// A logarithmic y axis (latencies spanning ms to seconds); points with y <= 0 are left out.
    pub log_y: bool,
    /// An optional dashed horizontal reference line with its label (e.g. the 1 s target).
    pub reference: Option<(f64, String)>,
}

impl Chart {
    /// The chart as a standalone SVG document. Points that cannot be drawn (non-finite, or
    /// y <= 0 on a log axis) are left out rather than refused, so that one bad sample of a sweep
    /// does not cost the report its chart; with nothing left it still draws the axes and says
    /// "no data".
    pub fn to_svg(&self) -> String {
        let lines: Vec<Vec<(f64, f64)>> = self
            .series
            .iter()
            .map(|series| self.drawable(&series.points))
            .collect();
        let all = || lines.iter().flatten();
        let has_data = all().next().is_some();

        let x_scale = if has_data {
            let (lo, hi) = bounds(all().map(|&(x, _)| x));
            if lo >= 0.0 {
                linear_scale(0.0, hi)
            } else {
                let margin = (hi - lo) * 0.05;
                linear_scale(lo - margin, hi + margin)
            }
        } else {
            linear_scale(0.0, 1.0)
        };
        let reference = self
            .reference
            .as_ref()
            .filter(|(y, _)| y.is_finite() && (!self.log_y || *y > 0.0));
        let ys = all().map(|&(_, y)| y).chain(reference.map(|(y, _)| *y));
        let y_scale = match (self.log_y, has_data || reference.is_some()) {
            (true, true) => {
                let (lo, hi) = bounds(ys);
                log_scale(lo, hi)
            }
            (true, false) => log_scale(1.0, 10.0),
            (false, true) => {
                let (lo, hi) = bounds(ys);
                linear_scale(lo.min(0.0), hi.max(0.0))
            }
            (false, false) => linear_scale(0.0, 1.0),
        };

        // The y tick labels decide the left margin, so that "10000" does not run into the label.
        let widest = y_scale
            .ticks
            .iter()
            .filter_map(|tick| tick.label.as_ref())
            .map(|label| label.chars().count())
            .max()
            .unwrap_or(1);
        let left = (36.0 + 7.0 * widest as f64).max(56.0);
        let plot = Plot {
            left,
            x: x_scale,
            y: y_scale,
        };

        let mut svg = String::new();
        let _ = write!(
            svg,
            r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#,
            w = num(WIDTH),
            h = num(HEIGHT),
        );
        let _ = write!(svg, "<title>{}</title>", escape(&self.title));
        let _ = write!(
            svg,
            r#"<rect x="0" y="0" width="{}" height="{}" fill="white"/>"#,
            num(WIDTH),
            num(HEIGHT)
        );
        plot.grid(&mut svg);
        self.labels(&mut svg, left);
        if let Some((y, label)) = reference {
            let py = plot.py(*y);
            let _ = write!(
                svg,
                r##"<line x1="{}" y1="{y}" x2="{}" y2="{y}" stroke="#555555" stroke-width="1.5" stroke-dasharray="6 4"/>"##,
                num(left),
                num(RIGHT),
                y = num(py),
            );
            let _ = write!(
                svg,
                r##"<text x="{}" y="{}" text-anchor="end" fill="#555555">{}</text>"##,
                num(RIGHT - 4.0),
                num(py - 5.0),
                escape(label)
            );
        }
        for (index, points) in lines.iter().enumerate() {
            plot.line(&mut svg, points, PALETTE[index % PALETTE.len()]);
        }
        if !has_data {
            let _ = write!(
                svg,
                r##"<text x="{}" y="{}" text-anchor="middle" font-size="16" fill="#777777">no data</text>"##,
                num((left + RIGHT) / 2.0),
                num((TOP + BOTTOM) / 2.0)
            );
        }
        self.legend(&mut svg, left);
        svg.push_str("</svg>");
        svg
    }

    /// The points of a series that can be drawn on this chart, in x order.
    fn drawable(&self, points: &[(f64, f64)]) -> Vec<(f64, f64)> {
        let mut points: Vec<(f64, f64)> = points
            .iter()
            .copied()
            .filter(|(x, y)| x.is_finite() && y.is_finite() && (!self.log_y || *y > 0.0))
            .collect();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        points
    }

    /// The title and the two axis labels.
    fn labels(&self, svg: &mut String, left: f64) {
        let _ = write!(
            svg,
            r#"<text x="{}" y="26" text-anchor="middle" font-size="16" font-weight="bold">{}</text>"#,
            num(WIDTH / 2.0),
            escape(&self.title)
        );
        let _ = write!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="middle" font-size="13">{}</text>"#,
            num((left + RIGHT) / 2.0),
            num(BOTTOM + 42.0),
            escape(&self.x_label)
        );
        let (x, y) = (18.0, (TOP + BOTTOM) / 2.0);
        let _ = write!(
            svg,
            r#"<text x="{x}" y="{y}" transform="rotate(-90 {x} {y})" text-anchor="middle" font-size="13">{}</text>"#,
            escape(&self.y_label),
            x = num(x),
            y = num(y),
        );
    }

    /// The legend, top left inside the plot area: the report's lines start low on the left, so
    /// that corner is the one most often empty.
    fn legend(&self, svg: &mut String, left: f64) {
        if self.series.is_empty() {
            return;
        }
        let widest = self
            .series
            .iter()
            .map(|series| series.name.chars().count())
            .max()
            .unwrap_or(0);
        let (x, y) = (left + 10.0, TOP + 10.0);
        let _ = write!(
            svg,
            r##"<rect x="{}" y="{}" width="{}" height="{}" fill="white" fill-opacity="0.9" stroke="#cccccc"/>"##,
            num(x),
            num(y),
            num(44.0 + 7.0 * widest as f64),
            num(8.0 + 18.0 * self.series.len() as f64)
        );
        for (index, series) in self.series.iter().enumerate() {
            let colour = PALETTE[index % PALETTE.len()];
            let row = y + 13.0 + 18.0 * index as f64;
            let _ = write!(
                svg,
                r#"<line x1="{}" y1="{row}" x2="{}" y2="{row}" stroke="{colour}" stroke-width="2"/><circle cx="{}" cy="{row}" r="3" fill="{colour}"/><text x="{}" y="{}">{}</text>"#,
                num(x + 8.0),
                num(x + 28.0),
                num(x + 18.0),
                num(x + 34.0),
                num(row + 4.0),
                escape(&series.name),
                row = num(row),
            );
        }
    }
}

/// Where the data goes: the plot area and its two scales.
#[derive(Debug)]
struct Plot {
    left: f64,
    x: Scale,
    y: Scale,
}

impl Plot {
    fn px(&self, x: f64) -> f64 {
        self.left + self.x.fraction(x) * (RIGHT - self.left)
    }

    fn py(&self, y: f64) -> f64 {
        BOTTOM - self.y.fraction(y) * (BOTTOM - TOP)
    }

    /// Gridlines and tick labels, then the two axes over them.
    fn grid(&self, svg: &mut String) {
        for tick in &self.x.ticks {
            let x = num(self.px(tick.value));
            let _ = write!(
                svg,
                r##"<line x1="{x}" y1="{}" x2="{x}" y2="{}" stroke="{}" stroke-width="1"/>"##,
                num(TOP),
                num(BOTTOM),
                grey(tick)
            );
            if let Some(label) = &tick.label {
                let _ = write!(
                    svg,
                    r#"<text x="{x}" y="{}" text-anchor="middle">{}</text>"#,
                    num(BOTTOM + 18.0),
                    escape(label)
                );
            }
        }
        for tick in &self.y.ticks {
            let y = self.py(tick.value);
            let _ = write!(
                svg,
                r#"<line x1="{}" y1="{y}" x2="{}" y2="{y}" stroke="{}" stroke-width="1"/>"#,
                num(self.left),
                num(RIGHT),
                grey(tick),
                y = num(y),
            );
            if let Some(label) = &tick.label {
                let _ = write!(
                    svg,
                    r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
                    num(self.left - 8.0),
                    num(y + 4.0),
                    escape(label)
                );
            }
        }
        let _ = write!(
            svg,
            r#"<polyline points="{l},{t} {l},{b} {r},{b}" fill="none" stroke="black" stroke-width="1"/>"#,
            l = num(self.left),
            t = num(TOP),
            b = num(BOTTOM),
            r = num(RIGHT),
        );
    }

    /// One series: the line, then a marker at each point (a single point has no line to show).
    fn line(&self, svg: &mut String, points: &[(f64, f64)], colour: &str) {
        let coordinates: Vec<String> = points
            .iter()
            .map(|&(x, y)| format!("{},{}", num(self.px(x)), num(self.py(y))))
            .collect();
        let _ = write!(
            svg,
            r#"<polyline class="series" points="{}" fill="none" stroke="{colour}" stroke-width="2" stroke-linejoin="round"/>"#,
            coordinates.join(" ")
        );
        for &(x, y) in points {
            let _ = write!(
                svg,
                r#"<circle cx="{}" cy="{}" r="3" fill="{colour}"/>"#,
                num(self.px(x)),
                num(self.py(y))
            );
        }
    }
}

/// The stroke of a gridline: minor ones (a log axis's 2 and 5) lighter still.
fn grey(tick: &Tick) -> &'static str {
    if tick.major { "#dddddd" } else { "#eeeeee" }
}

/// An axis: its range, in log10 units when `log`, and its ticks.
#[derive(Clone, Debug, PartialEq)]
struct Scale {
    lo: f64,
    hi: f64,
    log: bool,
    ticks: Vec<Tick>,
}

/// A tick, in data units; `label` is `None` for an unlabelled gridline.
#[derive(Clone, Debug, PartialEq)]
struct Tick {
    value: f64,
    label: Option<String>,
    major: bool,
}

impl Scale {
    /// Where `value` falls between the two ends of the axis, 0 to 1, clamped a little beyond so
    /// that a stray value cannot push a coordinate to infinity.
    fn fraction(&self, value: f64) -> f64 {
        let value = if self.log { value.log10() } else { value };
        let fraction = (value - self.lo) / (self.hi - self.lo);
        if fraction.is_finite() {
            fraction.clamp(-0.5, 1.5)
        } else {
            0.0
        }
    }
}

/// The smallest and the largest of `values` (all finite).
fn bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    })
}

/// Slack for the rounding of `value / step`, so that 0.8 / 0.2 counts as 4 steps, not 5.
const EPSILON: f64 = 1e-9;

/// A linear axis over at least `lo..hi` whose ends and ticks fall on multiples of a step of
/// 1, 2 or 5 × 10^k: 5 to 8 ticks, few enough to read and enough to interpolate between.
fn linear_scale(lo: f64, hi: f64) -> Scale {
    let (lo, hi) = if hi > lo {
        (lo, hi)
    } else {
        // One value: give it a range around it (or above it, when it is 0).
        let pad = lo.abs().max(1.0) * 0.5;
        if lo == 0.0 {
            (0.0, 1.0)
        } else {
            (lo - pad, hi + pad)
        }
    };
    let span = hi - lo;
    if !span.is_finite() || span <= 0.0 {
        return linear_scale(0.0, 1.0);
    }
    // The smallest step that needs at most 7 intervals; the steps grow by 2, 2.5, 2, so it needs
    // at least 3, and an interval more is added when it does.
    let mut exponent = (span / 8.0).log10().floor() as i32 - 1;
    let (step, first, mut last) = 'search: loop {
        for mantissa in [1.0, 2.0, 5.0] {
            let step = mantissa * 10f64.powi(exponent);
            let first = (lo / step + EPSILON).floor();
            let last = (hi / step - EPSILON).ceil();
            if last - first <= 7.0 {
                break 'search (step, first, last);
            }
        }
        exponent += 1;
    };
    while last - first < 4.0 {
        last += 1.0;
    }
    let decimals = if step >= 1.0 {
        0
    } else {
        (-step.log10() - EPSILON).ceil() as usize
    };
    let ticks: Vec<Tick> = (0..=(last - first) as i64)
        .map(|i| {
            let value = (first + i as f64) * step;
            Tick {
                value,
                label: Some(label(value, decimals)),
                major: true,
            }
        })
        .collect();
    let (lo, hi) = (first * step, last * step);
    if !(lo.is_finite() && hi.is_finite()) {
        return linear_scale(0.0, 1.0);
    }
    Scale {
        lo,
        hi,
        log: false,
        ticks,
    }
}

/// A log10 axis over the whole decades covering `lo..hi` (both > 0): a tick at each decade,
/// labelled (every other one, or fewer, past 8 decades); over 2 decades or less, with too few
/// decades to read it by, 2 and 5 are labelled too, and over up to 6 they are faint gridlines.
fn log_scale(lo: f64, hi: f64) -> Scale {
    let first = (lo.log10() + EPSILON).floor();
    let mut last = (hi.log10() - EPSILON).ceil();
    if !(first.is_finite() && last.is_finite()) {
        return log_scale(1.0, 10.0);
    }
    if last <= first {
        last = first + 1.0;
    }
    let decades = (last - first) as i64;
    let stride = (decades + 7) / 8;
    let mut ticks = Vec::new();
    for i in 0..=decades {
        let exponent = first as i32 + i as i32;
        let decade = 10f64.powi(exponent);
        let decimals = usize::try_from(-exponent).unwrap_or(0);
        ticks.push(Tick {
            value: decade,
            label: (i % stride == 0).then(|| label(decade, decimals)),
            major: true,
        });
        if i < decades && decades <= 6 {
            for mantissa in [2.0, 5.0] {
                let value = mantissa * decade;
                ticks.push(Tick {
                    value,
                    label: (decades <= 2).then(|| label(value, decimals)),
                    major: false,
                });
            }
        }
    }
    Scale {
        lo: first,
        hi: last,
        log: true,
        ticks,
    }
}

/// A tick label with `decimals` places, and no "-0".
fn label(value: f64, decimals: usize) -> String {
    let text = format!("{value:.decimals$}");
    if text.starts_with('-') && text[1..].chars().all(|c| c == '0' || c == '.') {
        text[1..].to_owned()
    } else {
        text
    }
}

/// A coordinate with at most one decimal place: a tenth of a pixel is finer than any screen.
fn num(value: f64) -> String {
    if !value.is_finite() {
        return "0".to_owned();
    }
    let text = format!("{value:.1}");
    let text = text.strip_suffix(".0").unwrap_or(&text);
    if text == "-0" {
        "0".to_owned()
    } else {
        text.to_owned()
    }
}

/// `text` safe inside an SVG element or attribute.
fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(name: &str, points: &[(f64, f64)]) -> Series {
        Series {
            name: name.to_owned(),
            points: points.to_vec(),
        }
    }

    fn chart(series: Vec<Series>) -> Chart {
        Chart {
            title: "Throughput".to_owned(),
            x_label: "offered (orders/s)".to_owned(),
            y_label: "completed (orders/s)".to_owned(),
            series,
            log_y: false,
            reference: None,
        }
    }

    /// The `points` attribute of each series' `<polyline`, in order.
    fn polylines(svg: &str) -> Vec<Vec<(f64, f64)>> {
        svg.split(r#"<polyline class="series" points=""#)
            .skip(1)
            .map(|rest| {
                let points = &rest[..rest.find('"').unwrap()];
                points
                    .split_whitespace()
                    .map(|pair| {
                        let (x, y) = pair.split_once(',').unwrap();
                        (x.parse().unwrap(), y.parse().unwrap())
                    })
                    .collect()
            })
            .collect()
    }

    fn labels(scale: &Scale) -> Vec<&str> {
        scale
            .ticks
            .iter()
            .filter_map(|tick| tick.label.as_deref())
            .collect()
    }

    #[test]
    fn one_polyline_per_series_with_its_finite_points() {
        let svg = chart(vec![
            series("completed", &[(100.0, 98.0), (0.0, 0.0), (200.0, 190.0)]),
            series(
                "refused",
                &[
                    (0.0, 0.0),
                    (100.0, f64::NAN),
                    (f64::INFINITY, 3.0),
                    (200.0, 10.0),
                ],
            ),
        ])
        .to_svg();
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(svg.ends_with("</svg>"), "{svg}");
        assert_eq!(svg.matches("<svg").count(), 1);
        let lines = polylines(&svg);
        assert_eq!(
            lines.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![3, 2],
            "{svg}"
        );
        // Drawn in x order: the x coordinates only grow.
        assert!(lines[0].windows(2).all(|w| w[0].0 < w[1].0), "{lines:?}");
        // A circle per point, plus one per legend entry.
        assert_eq!(svg.matches("<circle").count(), 3 + 2 + 2);
        assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
    }

    #[test]
    fn legend_names_and_texts_are_escaped() {
        let mut chart = chart(vec![series("p99 <1 s & more", &[(1.0, 2.0)])]);
        chart.title = r#"Latency "p99" & 'p50'"#.to_owned();
        let svg = chart.to_svg();
        assert!(svg.contains("p99 &lt;1 s &amp; more"), "{svg}");
        assert!(!svg.contains("<1 s"), "{svg}");
        assert!(
            svg.contains("Latency &quot;p99&quot; &amp; &#39;p50&#39;"),
            "{svg}"
        );
    }

    #[test]
    fn linear_ticks_are_nice() {
        let scale = linear_scale(0.0, 437.0);
        assert_eq!((scale.lo, scale.hi), (0.0, 500.0));
        assert_eq!(labels(&scale), ["0", "100", "200", "300", "400", "500"]);

        let scale = linear_scale(0.0, 0.8);
        assert_eq!(labels(&scale), ["0.0", "0.2", "0.4", "0.6", "0.8"]);
        assert!((scale.hi - 0.8).abs() < 1e-12, "{scale:?}");

        // 2 would need 8 intervals, 5 only 3: one more interval rather than 4 ticks.
        let scale = linear_scale(0.0, 14.1);
        assert_eq!(labels(&scale), ["0", "5", "10", "15", "20"]);

        // Below zero too: 2 would need 8 intervals (-4..12).
        let scale = linear_scale(-3.0, 12.0);
        assert_eq!(labels(&scale), ["-5", "0", "5", "10", "15"]);
    }

    #[test]
    fn log_axis_covers_the_decades_of_the_data() {
        let scale = log_scale(3.0, 2500.0);
        assert_eq!((scale.lo, scale.hi), (0.0, 4.0));
        assert_eq!(labels(&scale), ["1", "10", "100", "1000", "10000"]);

        let scale = log_scale(0.004, 0.09);
        assert_eq!(
            labels(&scale),
            ["0.001", "0.002", "0.005", "0.01", "0.02", "0.05", "0.1"]
        );
    }

    #[test]
    fn reference_line_is_dashed_and_within_the_axis() {
        let mut chart = chart(vec![series("p99", &[(100.0, 0.2), (200.0, 0.5)])]);
        chart.reference = Some((1.0, "target 1 s".to_owned()));
        let svg = chart.to_svg();
        assert!(svg.contains("stroke-dasharray"), "{svg}");
        assert!(svg.contains(">target 1 s</text>"), "{svg}");
        // The axis rises to the reference, which the data alone would not: 0 to 1 by 0.2.
        assert!(svg.contains(">1.0</text>"), "{svg}");
        assert!(!svg.contains(">1.2</text>"), "{svg}");
    }

    #[test]
    fn log_chart_leaves_out_points_at_or_below_zero() {
        let mut chart = chart(vec![series(
            "p50",
            &[(50.0, 0.0), (100.0, -1.0), (150.0, 5.0), (200.0, 50.0)],
        )]);
        chart.log_y = true;
        let svg = chart.to_svg();
        let lines = polylines(&svg);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].len(), 2, "{svg}");
        // 5 and 50 on 1..100: one quarter and three quarters up the plot area.
        let height = BOTTOM - TOP;
        assert!(
            (lines[0][0].1 - (BOTTOM - 0.35 * height)).abs() < 1.0,
            "{lines:?}"
        );
        assert!(
            (lines[0][1].1 - (BOTTOM - 0.85 * height)).abs() < 1.0,
            "{lines:?}"
        );
        assert!(svg.contains(">100</text>"), "{svg}");
    }

    #[test]
    fn a_chart_without_data_still_renders() {
        let svg = chart(Vec::new()).to_svg();
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"), "{svg}");
        assert!(svg.contains("no data"), "{svg}");
        assert!(polylines(&svg).is_empty());

        let mut only_bad = chart(vec![series("p99", &[(f64::NAN, 1.0), (1.0, -2.0)])]);
        only_bad.log_y = true;
        let svg = only_bad.to_svg();
        assert!(svg.contains("no data"), "{svg}");
        assert_eq!(polylines(&svg), vec![Vec::new()]);
        assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
    }

    #[test]
    fn numbers_have_at_most_one_decimal_and_are_finite() {
        let svg = chart(vec![
            series("a", &[(0.0, 1.0 / 3.0), (7.0, 2.0 / 3.0)]),
            series(
                "huge",
                &[(f64::MAX, f64::MAX), (-f64::MAX, f64::MIN_POSITIVE)],
            ),
        ])
        .to_svg();
        assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
        // Every run of digits after a '.' in the document is at most one digit long.
        let longest = svg
            .split('.')
            .skip(1)
            .map(|rest| rest.chars().take_while(char::is_ascii_digit).count())
            .max()
            .unwrap_or(0);
        assert!(longest <= 1, "{svg}");
        assert_eq!(num(-0.04), "0");
        assert_eq!(num(12.345), "12.3");
        assert_eq!(num(300.0), "300");
    }

    /// Writes a sample chart to look at: `cargo test -p shop-suite --lib plot -- --ignored`.
    #[test]
    #[ignore = "writes /tmp/plot-sample.svg"]
    fn sample() {
        let offered = [50.0, 100.0, 200.0, 400.0, 800.0, 1600.0];
        let chart = Chart {
            title: "Latency vs offered rate".to_owned(),
            x_label: "offered (orders/s)".to_owned(),
            y_label: "latency (ms)".to_owned(),
            series: vec![
                series("p50", &offered.map(|x| (x, 8.0 + x * x / 20_000.0))),
                series(
                    "p99 <1 s & more",
                    &offered.map(|x| (x, 30.0 + x * x / 1_000.0)),
                ),
            ],
            log_y: true,
            reference: Some((1000.0, "target 1 s".to_owned())),
        };
        std::fs::write("/tmp/plot-sample.svg", chart.to_svg()).unwrap();
    }
}
