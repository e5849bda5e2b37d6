//! Reading one figure from a process's Prometheus `/metrics`, as a test waiting on a counter
//! the process keeps (the records its consumer passed over, say) needs to.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The sum of the samples named `name` whose labels include every pair of `labels`, read from
/// `http://addr/metrics`; `None` when the endpoint does not answer or no sample matches.
pub async fn scrape_metric(addr: SocketAddr, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await
        .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).await.ok()?;
    sample_sum(&text, name, labels)
}

/// [`scrape_metric`] on an exposition already read.
pub fn sample_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (series_name, series_labels) = series
            .split_once('{')
            .map_or((series, ""), |(n, l)| (n, l.trim_end_matches('}')));
        if series_name != name
            || !labels.iter().all(|(k, v)| {
                series_labels
                    .split(',')
                    .any(|l| l == format!("{k}=\"{v}\""))
            })
        {
            continue;
        }
        if let Ok(value) = value.parse::<f64>() {
            found = Some(found.unwrap_or(0.0) + value);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_the_matching_samples_only() {
        let text = "# TYPE shop_consumer_messages counter\n\
                    shop_consumer_messages_total{group=\"g\",topic=\"a\",outcome=\"ignored\"} 2\n\
                    shop_consumer_messages_total{group=\"g\",topic=\"b\",outcome=\"ignored\"} 3\n\
                    shop_consumer_messages_total{group=\"g\",topic=\"a\",outcome=\"applied\"} 7\n\
                    shop_consumer_messages_total_other{outcome=\"ignored\"} 100\n";
        let sum =
            |labels: &[(&str, &str)]| sample_sum(text, "shop_consumer_messages_total", labels);
        assert_eq!(sum(&[("outcome", "ignored")]), Some(5.0));
        assert_eq!(sum(&[("outcome", "ignored"), ("topic", "b")]), Some(3.0));
        assert_eq!(sum(&[]), Some(12.0));
        assert_eq!(sum(&[("outcome", "duplicate")]), None);
    }
}
