//! Order rules, free of I/O: what a valid order request is, how it is priced, and which status
//! changes are allowed.

use std::collections::HashMap;

use shop_proto::order::v1 as pb;

/// A customer id, the key of a customer's orders ([`shop_proto::ids`]).
pub use shop_proto::ids::CustomerId;
/// A stock-keeping unit, the key of a product in inventory's catalog ([`shop_proto::ids`]).
pub use shop_proto::ids::Sku;

/// Status of an order. `Pending` until the saga ends in one of the two terminal states.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrderStatus {
    Pending,
    Confirmed,
    Cancelled,
}

impl OrderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Confirmed => "confirmed",
            Self::Cancelled => "cancelled",
        }
    }

    /// # Errors
    /// For a value the database constraint would not allow.
    pub fn parse(raw: &str) -> anyhow::Result<Self> {
        match raw {
            "pending" => Ok(Self::Pending),
            "confirmed" => Ok(Self::Confirmed),
            "cancelled" => Ok(Self::Cancelled),
            other => anyhow::bail!("unknown order status {other}"),
        }
    }
}

/// An order as the API shows it: its lines and total, where its saga stands, and how it got
/// there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Order {
    pub order_id: uuid::Uuid,
    pub customer_id: CustomerId,
    pub lines: Vec<OrderedLine>,
    pub total_minor: i64,
    pub currency: String,
    /// `None` for a status this version does not know.
    pub status: Option<OrderStatus>,
    pub cancellation_reason: Option<CancellationReason>,
    /// Every status it was in, oldest first.
    pub history: Vec<StatusChange>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

/// A line of a placed order, at the price it was placed at (in the order's currency).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderedLine {
    pub sku: Sku,
    pub quantity: u32,
    pub unit_price_minor: i64,
}

/// One entry of an order's status history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusChange {
    pub status: Option<OrderStatus>,
    pub reason: String,
    pub at: chrono::DateTime<chrono::Utc>,
}

/// Why an order was cancelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CancellationReason {
    OutOfStock,
    PaymentDeclined,
    CustomerCancelled,
    /// Still PENDING at the saga's deadline (a service it waited for was down or lost a step).
    Timeout,
}

impl CancellationReason {
    /// Every reason, e.g. to show each in the metrics from the start.
    pub const ALL: [Self; 4] = [
        Self::OutOfStock,
        Self::PaymentDeclined,
        Self::CustomerCancelled,
        Self::Timeout,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::OutOfStock => "out_of_stock",
            Self::PaymentDeclined => "payment_declined",
            Self::CustomerCancelled => "customer_cancelled",
            Self::Timeout => "timeout",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|reason| reason.as_str() == raw)
    }
}

impl From<CancellationReason> for pb::CancellationReason {
    fn from(reason: CancellationReason) -> Self {
        match reason {
            CancellationReason::OutOfStock => Self::OutOfStock,
            CancellationReason::PaymentDeclined => Self::PaymentDeclined,
            CancellationReason::CustomerCancelled => Self::CustomerCancelled,
            CancellationReason::Timeout => Self::Timeout,
        }
    }
}

/// Most lines in one order.
pub const MAX_LINES: usize = 100;
/// Most units of one line.
pub const MAX_QUANTITY: u32 = 1000;

/// A validated PlaceOrder request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderRequest {
    pub idempotency_key: String,
    pub customer_id: CustomerId,
    /// (sku, quantity), in the client's order.
    pub lines: Vec<(Sku, u32)>,
}

impl OrderRequest {
    /// Parses a request, collecting every `(field, problem)`.
    ///
    /// # Errors
    /// All violations found.
    pub fn parse(
        idempotency_key: &str,
        customer_id: &str,
        lines: &[(String, u32)],
    ) -> Result<Self, Vec<(String, String)>> {
        let mut violations = Vec::new();
        if let Err(e) = parse_idempotency_key(idempotency_key) {
            violations.push(("idempotency_key".to_owned(), e));
        }
        let customer_id = CustomerId::parse(customer_id)
            .map_err(|e| violations.push(("customer_id".to_owned(), e)))
            .ok();
        if lines.is_empty() || lines.len() > MAX_LINES {
            violations.push((
                "lines".to_owned(),
                format!("must have 1 to {MAX_LINES} lines"),
            ));
        }
        let mut parsed = Vec::with_capacity(lines.len());
        for (i, (sku, quantity)) in lines.iter().enumerate() {
            match Sku::parse(sku) {
                Ok(sku) => parsed.push((sku, *quantity)),
                Err(e) => violations.push((format!("lines[{i}].sku"), e)),
            }
            if *quantity == 0 || *quantity > MAX_QUANTITY {
                violations.push((
                    format!("lines[{i}].quantity"),
                    format!("must be 1 to {MAX_QUANTITY}"),
                ));
            }
        }
        // No violation means the customer id and every sku parsed.
        let Some(customer_id) = customer_id.filter(|_| violations.is_empty()) else {
            return Err(violations);
        };
        Ok(Self {
            idempotency_key: idempotency_key.to_owned(),
            customer_id,
            lines: parsed,
        })
    }

    /// What the request asks for, canonically: a retry under the same key must match it.
    pub fn fingerprint(&self) -> String {
        let lines: Vec<String> = self
            .lines
            .iter()
            .map(|(sku, q)| format!("{sku}x{q}"))
            .collect();
        format!("{}|{}", self.customer_id, lines.join(","))
    }

    /// The skus of the request's lines, sorted, each once.
    pub fn skus(&self) -> Vec<Sku> {
        let mut skus: Vec<Sku> = self.lines.iter().map(|(s, _)| s.clone()).collect();
        skus.sort();
        skus.dedup();
        skus
    }
}

/// A PlaceOrder idempotency key: 1 to 128 printable ASCII characters without spaces (a UUID,
/// a ULID or any client's counter fits), so that it is stored, logged and compared as sent.
///
/// # Errors
/// What is wrong.
pub fn parse_idempotency_key(raw: &str) -> Result<(), String> {
    if raw.is_empty() || raw.len() > 128 {
        return Err("must be 1 to 128 characters".into());
    }
    if !raw.chars().all(|c| c.is_ascii_graphic()) {
        return Err("may contain only printable ASCII characters, no spaces".into());
    }
    Ok(())
}

/// A line with its price.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PricedLine {
    pub sku: Sku,
    pub quantity: u32,
    pub unit_price_minor: i64,
}

/// A priced order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Priced {
    pub lines: Vec<PricedLine>,
    pub total_minor: i64,
    pub currency: String,
}

/// Prices `request` from `catalog` (sku → (unit price, currency)), keyed by the skus as the
/// catalog answered them.
///
/// # Errors
/// `(field, problem)` for unknown skus and for a catalog whose lines use different currencies.
pub fn price(
    request: &OrderRequest,
    catalog: &HashMap<String, (i64, String)>,
) -> Result<Priced, Vec<(String, String)>> {
    let mut violations = Vec::new();
    let mut lines = Vec::with_capacity(request.lines.len());
    let mut currency: Option<&str> = None;
    let mut total: i64 = 0;
    for (i, (sku, quantity)) in request.lines.iter().enumerate() {
        let Some((unit, line_currency)) = catalog.get(sku.as_str()) else {
            violations.push((format!("lines[{i}].sku"), format!("unknown sku {sku}")));
            continue;
        };
        match currency {
            None => currency = Some(line_currency),
            Some(c) if c != line_currency => {
                violations.push((
                    format!("lines[{i}].sku"),
                    format!("priced in {line_currency}, the order is in {c}"),
                ));
            }
            Some(_) => {}
        }
        // Inventory bounds prices, and requests bound lines and quantities, so this never
        // overflows; a catalog that broke its bound is refused rather than mispriced.
        match unit
            .checked_mul(i64::from(*quantity))
            .and_then(|line| total.checked_add(line))
        {
            Some(sum) => total = sum,
            None => {
                violations.push((
                    format!("lines[{i}].sku"),
                    format!("priced at {unit}, the order's total would overflow"),
                ));
            }
        }
        lines.push(PricedLine {
            sku: sku.clone(),
            quantity: *quantity,
            unit_price_minor: *unit,
        });
    }
    if !violations.is_empty() {
        return Err(violations);
    }
    Ok(Priced {
        lines,
        total_minor: total,
        currency: currency.unwrap_or_default().to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(lines: &[(&str, u32)]) -> OrderRequest {
        OrderRequest::parse(
            "key-1",
            "alice",
            &lines
                .iter()
                .map(|(s, q)| ((*s).to_owned(), *q))
                .collect::<Vec<_>>(),
        )
        .unwrap()
    }

    #[test]
    fn every_violation_is_reported_with_its_field() {
        let violations =
            OrderRequest::parse("", "bad id", &[("ok".into(), 0), ("n o".into(), 1)]).unwrap_err();
        let fields: Vec<&str> = violations.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            [
                "idempotency_key",
                "customer_id",
                "lines[0].quantity",
                "lines[1].sku"
            ]
        );
        assert_eq!(
            OrderRequest::parse("k", "a", &[]).unwrap_err()[0].0,
            "lines"
        );
    }

    #[test]
    fn lines_are_priced_and_totalled() {
        let catalog = HashMap::from([
            ("a".to_owned(), (250, "EUR".to_owned())),
            ("b".to_owned(), (1000, "EUR".to_owned())),
        ]);
        let priced = price(&request(&[("a", 2), ("b", 1)]), &catalog).unwrap();
        assert_eq!(
            (priced.total_minor, priced.currency.as_str()),
            (1500, "EUR")
        );
    }

    #[test]
    fn unknown_skus_and_mixed_currencies_are_refused() {
        let catalog = HashMap::from([
            ("a".to_owned(), (250, "EUR".to_owned())),
            ("b".to_owned(), (1000, "USD".to_owned())),
        ]);
        let violations =
            price(&request(&[("a", 1), ("b", 1), ("ghost", 1)]), &catalog).unwrap_err();
        assert_eq!(
            violations
                .iter()
                .map(|(f, _)| f.as_str())
                .collect::<Vec<_>>(),
            ["lines[1].sku", "lines[2].sku"]
        );
    }

    #[test]
    fn idempotency_keys_are_printable_ascii_without_spaces() {
        assert!(parse_idempotency_key("0190a8d2-7c1e-7000-8000-000000000000").is_ok());
        assert!(parse_idempotency_key("order:42/retry=1").is_ok());
        for bad in ["", "a b", "k\0", "k\n", "ключ", &"k".repeat(129)] {
            assert!(parse_idempotency_key(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_total_that_would_overflow_is_refused() {
        let catalog = HashMap::from([("a".to_owned(), (i64::MAX / 2, "EUR".to_owned()))]);
        let violations = price(&request(&[("a", 3)]), &catalog).unwrap_err();
        assert_eq!(violations[0].0, "lines[0].sku");
    }

    #[test]
    fn reasons_round_trip() {
        for reason in CancellationReason::ALL {
            assert_eq!(CancellationReason::parse(reason.as_str()), Some(reason));
        }
        assert_eq!(
            pb::CancellationReason::from(CancellationReason::Timeout),
            pb::CancellationReason::Timeout
        );
    }

    #[test]
    fn the_fingerprint_tells_a_retry_from_another_request() {
        assert_eq!(
            request(&[("a", 1)]).fingerprint(),
            request(&[("a", 1)]).fingerprint()
        );
        assert_ne!(
            request(&[("a", 1)]).fingerprint(),
            request(&[("a", 2)]).fingerprint()
        );
    }
}
