//! Reading the figures back: what `sales-analytics report` prints.

use sqlx::PgPool;

/// Sales of one sku in one currency.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct SkuTotal {
    pub sku: String,
    pub currency: String,
    pub units: i64,
    pub revenue_minor: i64,
    pub orders: i64,
}

/// Every sku's totals, by sku and currency.
///
/// # Errors
/// Database errors.
pub async fn totals(pool: &PgPool) -> Result<Vec<SkuTotal>, sqlx::Error> {
    sqlx::query_as(
        "SELECT sku, currency, units, revenue_minor, orders FROM sales_by_sku ORDER BY sku, currency",
    )
    .fetch_all(pool)
    .await
}

/// The totals as a table, with a line per currency for all skus.
pub fn render(totals: &[SkuTotal]) -> String {
    let mut out = format!(
        "{:<16} {:<8} {:>8} {:>14} {:>8}\n",
        "sku", "currency", "units", "revenue", "orders"
    );
    let money = |minor: i64| format!("{}.{:02}", minor / 100, (minor % 100).abs());
    for t in totals {
        out.push_str(&format!(
            "{:<16} {:<8} {:>8} {:>14} {:>8}\n",
            t.sku,
            t.currency,
            t.units,
            money(t.revenue_minor),
            t.orders
        ));
    }
    let mut currencies: Vec<&str> = totals.iter().map(|t| t.currency.as_str()).collect();
    currencies.sort_unstable();
    currencies.dedup();
    for currency in currencies {
        let (units, revenue) = totals
            .iter()
            .filter(|t| t.currency == currency)
            .fold((0, 0), |(u, r), t| (u + t.units, r + t.revenue_minor));
        out.push_str(&format!(
            "{:<16} {:<8} {:>8} {:>14}\n",
            "(all skus)",
            currency,
            units,
            money(revenue)
        ));
    }
    if totals.is_empty() {
        out.push_str("(no confirmed sales yet)\n");
    }
    out
}
