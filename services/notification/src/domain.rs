//! Notification rules, free of I/O: the kinds of notification and their messages, delivery
//! statuses, what happens after a failed attempt, and how a listing request is read.

use std::time::Duration;

use chrono::{DateTime, Utc};
use shop_eventing::RetryPolicy;
use shop_proto::order::v1::CancellationReason;
use uuid::Uuid;

/// A customer id, whose notifications are listed together ([`shop_proto::ids`]).
pub use shop_proto::ids::CustomerId;

/// The order outcome a notification tells. One notification per order and kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    OrderConfirmed,
    OrderCancelled,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OrderConfirmed => "order_confirmed",
            Self::OrderCancelled => "order_cancelled",
        }
    }

    /// # Errors
    /// A description of what is wrong.
    pub fn parse(raw: &str) -> Result<Self, String> {
        match raw {
            "order_confirmed" => Ok(Self::OrderConfirmed),
            "order_cancelled" => Ok(Self::OrderCancelled),
            other => Err(format!("unknown notification kind {other:?}")),
        }
    }
}

/// Where a notification's delivery stands: PENDING until delivered, or FAILED once every
/// attempt failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeliveryStatus {
    Pending,
    Delivered,
    Failed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Delivered => "DELIVERED",
            Self::Failed => "FAILED",
        }
    }

    /// # Errors
    /// A description of what is wrong.
    pub fn parse(raw: &str) -> Result<Self, String> {
        match raw {
            "PENDING" => Ok(Self::Pending),
            "DELIVERED" => Ok(Self::Delivered),
            "FAILED" => Ok(Self::Failed),
            other => Err(format!("unknown delivery status {other:?}")),
        }
    }
}

/// A recorded notification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notification {
    pub notification_id: Uuid,
    pub order_id: String,
    pub customer_id: CustomerId,
    pub kind: Kind,
    pub message: String,
    /// The channel it goes (or went) through: `log` or `webhook`.
    pub channel: String,
    pub status: DeliveryStatus,
    /// Delivery attempts made so far.
    pub attempts: u32,
    pub created_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
    /// The trace its deliveries continue (the order's).
    pub traceparent: Option<String>,
}

/// A notification to record for an order outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewNotification {
    pub notification_id: Uuid,
    pub order_id: String,
    pub customer_id: CustomerId,
    pub kind: Kind,
    pub message: String,
}

impl NewNotification {
    /// The confirmation of `order_id`, with its total `(amount_minor, currency)` when known.
    pub fn order_confirmed(
        order_id: &str,
        customer_id: CustomerId,
        total: Option<(i64, &str)>,
    ) -> Self {
        let message = match total {
            Some((amount_minor, currency)) => format!(
                "Your order {order_id} is confirmed: total {}.",
                format_money(amount_minor, currency)
            ),
            None => format!("Your order {order_id} is confirmed."),
        };
        Self::new(order_id, customer_id, Kind::OrderConfirmed, message)
    }

    /// The cancellation of `order_id`, saying why (and that the payment is refunded when the
    /// order had been confirmed).
    pub fn order_cancelled(
        order_id: &str,
        customer_id: CustomerId,
        reason: CancellationReason,
        detail: &str,
        was_confirmed: bool,
    ) -> Self {
        let why = match reason {
            CancellationReason::OutOfStock => "out of stock",
            CancellationReason::PaymentDeclined => "the payment was declined",
            CancellationReason::CustomerCancelled => "cancelled at your request",
            CancellationReason::Timeout => "it could not be completed in time",
            CancellationReason::Unspecified => "",
        };
        let detail = detail.trim();
        let mut message = format!("Your order {order_id} was cancelled");
        match (why.is_empty(), detail.is_empty()) {
            (false, false) => message.push_str(&format!(": {why} ({detail}).")),
            (false, true) => message.push_str(&format!(": {why}.")),
            (true, false) => message.push_str(&format!(": {detail}.")),
            (true, true) => message.push('.'),
        }
        if was_confirmed {
            message.push_str(" Your payment will be refunded.");
        }
        Self::new(order_id, customer_id, Kind::OrderCancelled, message)
    }

    fn new(order_id: &str, customer_id: CustomerId, kind: Kind, message: String) -> Self {
        Self {
            notification_id: Uuid::now_v7(),
            order_id: order_id.to_owned(),
            customer_id,
            kind,
            message,
        }
    }
}

/// `amount_minor` in the currency's major unit with its ISO 4217 number of decimals, then the
/// currency: `1999, "EUR"` is `19.99 EUR`, `500, "JPY"` is `500 JPY`.
pub fn format_money(amount_minor: i64, currency: &str) -> String {
    let decimals: u32 = match currency {
        "BIF" | "CLP" | "DJF" | "GNF" | "ISK" | "JPY" | "KMF" | "KRW" | "PYG" | "RWF" | "UGX"
        | "UYI" | "VND" | "VUV" | "XAF" | "XOF" | "XPF" => 0,
        "BHD" | "IQD" | "JOD" | "KWD" | "LYD" | "OMR" | "TND" => 3,
        _ => 2,
    };
    let sign = if amount_minor < 0 { "-" } else { "" };
    let abs = amount_minor.unsigned_abs();
    if decimals == 0 {
        return format!("{sign}{abs} {currency}");
    }
    let unit = 10u64.pow(decimals);
    let width = decimals as usize;
    format!(
        "{sign}{}.{:0width$} {currency}",
        abs / unit,
        abs % unit,
        width = width
    )
}

/// What follows a failed delivery attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterFailure {
    /// Try again once this much time has passed.
    RetryIn(Duration),
    /// Every attempt was made: the notification is FAILED.
    GiveUp,
}

/// Decides what follows when attempt number `attempt` (1 for the first) failed: another one
/// after a jittered exponential backoff, or none once `retry.max_attempts` were made.
pub fn after_failure(attempt: u32, retry: &RetryPolicy) -> AfterFailure {
    if attempt >= retry.max_attempts {
        AfterFailure::GiveUp
    } else {
        AfterFailure::RetryIn(retry.backoff(attempt))
    }
}

/// Whose notifications to list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Filter {
    Customer(CustomerId),
    Order(String),
}

/// Where a page ends: the last notification it held, in (created_at, id) order, newest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cursor {
    pub created_at: DateTime<Utc>,
    pub notification_id: Uuid,
}

/// The listing name in ListNotifications' page tokens.
const NOTIFICATIONS: &str = "notifications";

impl Cursor {
    /// The page token continuing after this cursor.
    pub fn encode(&self) -> String {
        shop_runtime::page_token::encode(
            NOTIFICATIONS,
            &[
                &self.created_at.timestamp_micros().to_string(),
                &self.notification_id.simple().to_string(),
            ],
        )
    }

    /// The cursor of a token from [`Cursor::encode`], if it is one.
    pub fn decode(token: &str) -> Option<Self> {
        let fields = shop_runtime::page_token::decode(NOTIFICATIONS, token, 2)?;
        Some(Self {
            created_at: DateTime::from_timestamp_micros(fields[0].parse().ok()?)?,
            notification_id: Uuid::try_parse(&fields[1]).ok()?,
        })
    }
}

/// A customer id as every service accepts it ([`shop_proto::ids`]); empty (no filter) too, which
/// is `None`.
///
/// # Errors
/// What is wrong.
pub fn parse_customer_id(raw: &str) -> Result<Option<CustomerId>, String> {
    if raw.is_empty() {
        return Ok(None);
    }
    CustomerId::parse(raw).map(Some)
}

/// An order id (opaque here, a UUID from the order service): 1 to 128 characters without
/// whitespace or control characters.
///
/// # Errors
/// What is wrong.
pub fn parse_order_id(raw: &str) -> Result<(), String> {
    if raw.chars().count() > 128 {
        return Err("must be 1 to 128 characters".into());
    }
    if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain whitespace or control characters".into());
    }
    Ok(())
}

/// A valid listing request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListQuery {
    pub filter: Filter,
    pub limit: i64,
    pub after: Option<Cursor>,
}

/// Page size when the request asks for none.
pub const DEFAULT_PAGE_SIZE: u32 = 20;
/// Largest page size.
pub const MAX_PAGE_SIZE: u32 = 100;

impl ListQuery {
    /// Reads a listing request: exactly one of `customer_id` and `order_id`, a page size of at
    /// most [`MAX_PAGE_SIZE`] (0 means [`DEFAULT_PAGE_SIZE`]), and an empty or previously
    /// returned page token.
    ///
    /// # Errors
    /// Every `(field, description)` violation.
    pub fn parse(
        customer_id: &str,
        order_id: &str,
        page_size: u32,
        page_token: &str,
    ) -> Result<Self, Vec<(String, String)>> {
        let mut violations = Vec::new();
        let customer = parse_customer_id(customer_id)
            .map_err(|e| violations.push(("customer_id".to_owned(), e)))
            .ok()
            .flatten();
        if let Err(e) = parse_order_id(order_id) {
            violations.push(("order_id".to_owned(), e));
        }
        let filter = match (customer_id.is_empty(), order_id.is_empty()) {
            // `None` when it did not parse (a violation recorded above).
            (false, true) => customer.map(Filter::Customer),
            (true, false) => Some(Filter::Order(order_id.to_owned())),
            (both_empty, _) => {
                let description = if both_empty {
                    "one of customer_id and order_id is required"
                } else {
                    "only one of customer_id and order_id may be set"
                };
                violations.push(("customer_id".to_owned(), description.to_owned()));
                violations.push(("order_id".to_owned(), description.to_owned()));
                None
            }
        };
        if page_size > MAX_PAGE_SIZE {
            violations.push((
                "page_size".to_owned(),
                format!("must be at most {MAX_PAGE_SIZE}"),
            ));
        }
        let after = if page_token.is_empty() {
            None
        } else {
            let cursor = Cursor::decode(page_token);
            if cursor.is_none() {
                violations.push((
                    "page_token".to_owned(),
                    "is not a token from a previous page".to_owned(),
                ));
            }
            cursor
        };
        let Some(filter) = filter.filter(|_| violations.is_empty()) else {
            return Err(violations);
        };
        let size = if page_size == 0 {
            DEFAULT_PAGE_SIZE
        } else {
            page_size
        };
        Ok(Self {
            filter,
            limit: i64::from(size),
            after,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_is_written_with_the_currency_s_decimals() {
        assert_eq!(format_money(1999, "EUR"), "19.99 EUR");
        assert_eq!(format_money(5, "USD"), "0.05 USD");
        assert_eq!(format_money(-150, "EUR"), "-1.50 EUR");
        assert_eq!(format_money(500, "JPY"), "500 JPY");
        assert_eq!(format_money(1234, "KWD"), "1.234 KWD");
        assert_eq!(format_money(i64::MIN, "EUR"), "-92233720368547758.08 EUR");
    }

    #[test]
    fn messages_tell_the_outcome() {
        let alice = || CustomerId::parse("alice").unwrap();
        let confirmed = NewNotification::order_confirmed("o-1", alice(), Some((1999, "EUR")));
        assert_eq!(confirmed.kind, Kind::OrderConfirmed);
        assert_eq!(
            confirmed.message,
            "Your order o-1 is confirmed: total 19.99 EUR."
        );
        assert_eq!(
            NewNotification::order_confirmed("o-1", alice(), None).message,
            "Your order o-1 is confirmed."
        );
        let cancelled = NewNotification::order_cancelled(
            "o-2",
            alice(),
            CancellationReason::OutOfStock,
            "SKU-1: 2 requested, 1 available",
            false,
        );
        assert_eq!(cancelled.kind, Kind::OrderCancelled);
        assert_eq!(
            cancelled.message,
            "Your order o-2 was cancelled: out of stock (SKU-1: 2 requested, 1 available)."
        );
        assert_eq!(
            NewNotification::order_cancelled(
                "o-3",
                alice(),
                CancellationReason::CustomerCancelled,
                " ",
                true
            )
            .message,
            "Your order o-3 was cancelled: cancelled at your request. Your payment will be refunded."
        );
        assert_eq!(
            NewNotification::order_cancelled(
                "o-4",
                CustomerId::parse("a").unwrap(),
                CancellationReason::Unspecified,
                "",
                false
            )
            .message,
            "Your order o-4 was cancelled."
        );
    }

    #[test]
    fn kinds_and_statuses_round_trip() {
        for kind in [Kind::OrderConfirmed, Kind::OrderCancelled] {
            assert_eq!(Kind::parse(kind.as_str()), Ok(kind));
        }
        for status in [
            DeliveryStatus::Pending,
            DeliveryStatus::Delivered,
            DeliveryStatus::Failed,
        ] {
            assert_eq!(DeliveryStatus::parse(status.as_str()), Ok(status));
        }
        assert!(Kind::parse("order_placed").is_err());
        assert!(DeliveryStatus::parse("pending").is_err());
    }

    #[test]
    fn failed_attempts_are_retried_with_bounded_backoff_until_the_last() {
        let retry = RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(300),
        };
        for _ in 0..100 {
            let AfterFailure::RetryIn(first) = after_failure(1, &retry) else {
                panic!("the first failure is retried")
            };
            assert!(first <= Duration::from_millis(100));
            let AfterFailure::RetryIn(second) = after_failure(2, &retry) else {
                panic!("the second failure is retried")
            };
            assert!(second <= Duration::from_millis(200));
        }
        assert_eq!(after_failure(3, &retry), AfterFailure::GiveUp);
        assert_eq!(after_failure(9, &retry), AfterFailure::GiveUp);
    }

    #[test]
    fn page_tokens_round_trip_and_garbage_is_refused() {
        let cursor = Cursor {
            created_at: DateTime::from_timestamp_micros(1_790_000_000_123_456).unwrap(),
            notification_id: Uuid::now_v7(),
        };
        assert_eq!(Cursor::decode(&cursor.encode()), Some(cursor));
        assert_eq!(Cursor::decode("nope"), None);
        assert_eq!(Cursor::decode("12_not-a-uuid"), None);
        assert_eq!(
            Cursor::decode(&format!("{}_{}", i64::MAX, Uuid::nil().simple())),
            None
        );
    }

    #[test]
    fn a_listing_names_exactly_one_of_customer_and_order() {
        let query = ListQuery::parse("alice", "", 0, "").unwrap();
        assert_eq!(
            query.filter,
            Filter::Customer(CustomerId::parse("alice").unwrap())
        );
        assert_eq!(query.limit, 20);
        assert_eq!(
            ListQuery::parse("", "o-1", 100, "").unwrap().filter,
            Filter::Order("o-1".into())
        );
        let fields = |r: Result<ListQuery, Vec<(String, String)>>| {
            r.unwrap_err()
                .into_iter()
                .map(|(f, _)| f)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            fields(ListQuery::parse("", "", 0, "")),
            ["customer_id", "order_id"]
        );
        assert_eq!(
            fields(ListQuery::parse("a", "o", 0, "")),
            ["customer_id", "order_id"]
        );
        assert_eq!(
            fields(ListQuery::parse("a", "", 101, "x")),
            ["page_size", "page_token"]
        );
        assert_eq!(fields(ListQuery::parse("a\0", "", 0, "")), ["customer_id"]);
        assert_eq!(
            fields(ListQuery::parse("", &"o".repeat(129), 0, "")),
            ["order_id"]
        );
    }
}
