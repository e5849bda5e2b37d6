//! Reading a service's `/metrics` as Prometheus would: families (from `# TYPE`) and samples.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

/// One sample line: `name{labels} value`.
#[derive(Clone, Debug)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A parsed exposition.
#[derive(Clone, Debug, Default)]
pub struct Scrape {
    /// Family name → type (`counter`, `gauge`, `histogram`).
    pub families: BTreeMap<String, String>,
    pub samples: Vec<Sample>,
}

impl Scrape {
    /// GETs `http://addr/metrics` and parses it.
    ///
    /// # Errors
    /// When the request fails or does not answer 200.
    pub async fn fetch(addr: SocketAddr) -> anyhow::Result<Self> {
        let response = reqwest::get(format!("http://{addr}/metrics")).await?;
        anyhow::ensure!(
            response.status().is_success(),
            "/metrics answered {}",
            response.status()
        );
        Ok(Self::parse(&response.text().await?))
    }

    /// Parses the text format (OpenMetrics or Prometheus 0.0.4).
    pub fn parse(text: &str) -> Self {
        let mut scrape = Self::default();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                if let Some((name, kind)) = rest.split_once(' ') {
                    scrape.families.insert(name.to_owned(), kind.to_owned());
                }
                continue;
            }
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            if let Some(sample) = parse_sample(line) {
                scrape.samples.push(sample);
            }
        }
        scrape
    }

    /// The sum of the samples named `name` whose labels include `labels`; `None` when none
    /// matches.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let matching: Vec<f64> = self
            .samples
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
            .collect();
        (!matching.is_empty()).then(|| matching.iter().sum())
    }

    /// Every series name a query could use: the sample names, and for each declared family the
    /// names its type yields (`_total` for counters; `_bucket`, `_sum`, `_count` for
    /// histograms, and the histogram's own name), so a family with no samples yet still counts
    /// as exported.
    pub fn series_names(&self) -> BTreeSet<String> {
        let mut names: BTreeSet<String> = self.samples.iter().map(|s| s.name.clone()).collect();
        for (family, kind) in &self.families {
            match kind.as_str() {
                "counter" => {
                    names.insert(format!("{family}_total"));
                }
                "histogram" => {
                    // The family's own name too: docs and annotations name histograms so.
                    names.insert(family.clone());
                    for suffix in ["_bucket", "_sum", "_count"] {
                        names.insert(format!("{family}{suffix}"));
                    }
                }
                _ => {
                    names.insert(family.clone());
                }
            }
        }
        names
    }
}

fn parse_sample(line: &str) -> Option<Sample> {
    let (series, rest) = match line.find('{') {
        Some(open) => {
            let close = line[open..].find('}')? + open;
            (&line[..=close], &line[close + 1..])
        }
        None => {
            let space = line.find(' ')?;
            (&line[..space], &line[space..])
        }
    };
    let value = rest.split_whitespace().next()?.parse().ok()?;
    let (name, labels) = match series.split_once('{') {
        Some((name, labels)) => (name, parse_labels(labels.trim_end_matches('}'))),
        None => (series, BTreeMap::new()),
    };
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

fn parse_labels(text: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut rest = text;
    while let Some((key, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, escaped)) = chars.next() {
                        value.push(if escaped == 'n' { '\n' } else { escaped });
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        labels.insert(key.trim_start_matches(',').trim().to_owned(), value);
        rest = &after[end..];
    }
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_labels_and_families_are_read() {
        let scrape = Scrape::parse(
            "# HELP shop_orders_cancelled Orders cancelled.\n\
             # TYPE shop_orders_cancelled counter\n\
             shop_orders_cancelled_total{reason=\"out_of_stock\"} 2\n\
             shop_orders_cancelled_total{reason=\"say \\\"hi\\\"\",x=\"1\"} 3\n\
             # TYPE shop_dead_letters counter\n\
             # TYPE shop_outbox_backlog_events gauge\n\
             shop_outbox_backlog_events 7\n\
             # EOF\n",
        );
        assert_eq!(scrape.value("shop_orders_cancelled_total", &[]), Some(5.0));
        assert_eq!(
            scrape.value("shop_orders_cancelled_total", &[("reason", "out_of_stock")]),
            Some(2.0)
        );
        assert_eq!(
            scrape.value("shop_orders_cancelled_total", &[("reason", "say \"hi\"")]),
            Some(3.0)
        );
        assert_eq!(scrape.value("shop_outbox_backlog_events", &[]), Some(7.0));
        assert_eq!(scrape.value("nope", &[]), None);
        let names = scrape.series_names();
        assert!(names.contains("shop_dead_letters_total"), "{names:?}");
        assert!(names.contains("shop_outbox_backlog_events"));
    }
}
