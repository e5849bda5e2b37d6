//! What `shopctl` prints: aligned tables for people, one JSON document for programs.

use chrono::{DateTime, SecondsFormat, Utc};

/// `--output`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    /// Aligned columns.
    Table,
    /// One JSON document on stdout.
    Json,
}

/// A table: a header row and rows of cells, printed with aligned columns.
#[derive(Debug, Default)]
pub(crate) struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub(crate) fn new(header: &[&str]) -> Self {
        Self {
            header: header.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    pub(crate) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table as text; the last column is not padded (it may be long: an error).
    pub(crate) fn render(&self) -> String {
        let columns = self.header.len();
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(columns) {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for row in std::iter::once(&self.header).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate().take(columns) {
                if i + 1 == columns {
                    line.push_str(cell);
                } else {
                    line.push_str(&format!("{cell:<width$}  ", width = widths[i]));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// A protobuf timestamp as RFC 3339 (empty when absent).
pub(crate) fn time(at: Option<&prost_types::Timestamp>) -> String {
    at.and_then(to_utc)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
        .unwrap_or_default()
}

pub(crate) fn to_utc(at: &prost_types::Timestamp) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(at.seconds, u32::try_from(at.nanos).ok()?)
}

pub(crate) fn to_timestamp(at: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

/// A JSON timestamp (null when absent).
pub(crate) fn json_time(at: Option<&prost_types::Timestamp>) -> serde_json::Value {
    match at.and_then(to_utc) {
        Some(t) => serde_json::Value::String(t.to_rfc3339_opts(SecondsFormat::Millis, true)),
        None => serde_json::Value::Null,
    }
}

/// Cuts `text` to `max` characters for a table cell (the JSON output has it whole).
pub(crate) fn short(text: &str, max: usize) -> String {
    let one_line = text.replace('\n', " ");
    if one_line.chars().count() <= max {
        one_line
    } else {
        let cut: String = one_line.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}

/// Prints `value` as pretty JSON.
pub(crate) fn print_json(value: &serde_json::Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
    );
}

/// `when`: an RFC 3339 time, or an age such as `90s`, `15m`, `2h`, `3d` (that long ago).
pub(crate) fn parse_when(when: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(at) = DateTime::parse_from_rfc3339(when) {
        return Ok(at.with_timezone(&Utc));
    }
    let (number, unit) = when.split_at(
        when.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(when.len()),
    );
    let n: i64 = number
        .parse()
        .map_err(|_| format!("{when:?} is neither an RFC 3339 time nor an age like 15m"))?;
    let seconds = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(format!("{when:?}: the unit is one of s, m, h, d")),
    };
    Ok(Utc::now() - chrono::Duration::seconds(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_their_columns_and_leave_the_last_one_unpadded() {
        let mut table = Table::new(&["A", "LONGER", "LAST"]);
        table.row(vec!["xyz".into(), "1".into(), "anything".into()]);
        assert_eq!(table.render(), "A    LONGER  LAST\nxyz  1       anything\n");
    }

    #[test]
    fn times_are_rfc3339_or_ages() {
        let at = parse_when("2026-12-01T10:00:00Z").unwrap();
        assert_eq!(at.to_rfc3339(), "2026-12-01T10:00:00+00:00");
        let ago = Utc::now() - parse_when("15m").unwrap();
        assert!((ago.num_seconds() - 900).abs() <= 2, "{ago}");
        assert!(parse_when("15y").is_err());
        assert!(parse_when("soon").is_err());
    }
}
