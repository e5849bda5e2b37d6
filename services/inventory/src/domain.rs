//! Inventory's rules, free of I/O: what a valid sku, name and price are, and whether an order's
//! lines can be reserved from the current stock (all of them or none).

use std::collections::BTreeMap;

use shop_proto::inventory::v1::RejectionReason;

/// A stock-keeping unit ([`shop_proto::ids`]).
pub use shop_proto::ids::Sku;

/// A product name: 1 to 200 characters, not blank, without control characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProductName(String);

impl ProductName {
    /// # Errors
    /// A description of what is wrong.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.chars().count() > 200 {
            return Err("must be 1 to 200 characters, not blank".into());
        }
        if trimmed.chars().any(char::is_control) {
            return Err("must not contain control characters (such as NUL or a newline)".into());
        }
        Ok(Self(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The most units of one product on hand, and the largest change one AdjustStock may make. A
/// billion is far beyond any warehouse, and keeps every sum of stock (on hand, reserved, sold,
/// an order's lines) far from `i64` overflow.
pub const MAX_UNITS: i64 = 1_000_000_000;

/// The highest unit price, in minor units (10 billion in a currency with cents). With at most
/// 100 lines of 1000 units, an order's total stays far from `i64` overflow.
pub const MAX_UNIT_PRICE_MINOR: i64 = 1_000_000_000_000;

/// A price: a non-negative amount in minor units of an ISO 4217 currency, at most
/// [`MAX_UNIT_PRICE_MINOR`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Price {
    pub amount_minor: i64,
    pub currency: String,
}

impl Price {
    /// # Errors
    /// `(field, description)` of what is wrong.
    pub fn parse(amount_minor: i64, currency: &str) -> Result<Self, (&'static str, String)> {
        if !(0..=MAX_UNIT_PRICE_MINOR).contains(&amount_minor) {
            return Err((
                "amount_minor",
                format!("must be 0 to {MAX_UNIT_PRICE_MINOR}"),
            ));
        }
        if currency.len() != 3 || !currency.chars().all(|c| c.is_ascii_uppercase()) {
            return Err((
                "currency",
                "must be an ISO 4217 code of 3 upper-case letters".into(),
            ));
        }
        Ok(Self {
            amount_minor,
            currency: currency.to_owned(),
        })
    }
}

/// A manual change of the units on hand: not 0, at most [`MAX_UNITS`] either way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StockDelta(i64);

impl StockDelta {
    /// # Errors
    /// A description of what is wrong.
    pub fn parse(raw: i64) -> Result<Self, String> {
        if raw == 0 || !(-MAX_UNITS..=MAX_UNITS).contains(&raw) {
            return Err(format!("must be -{MAX_UNITS} to {MAX_UNITS}, not 0"));
        }
        Ok(Self(raw))
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

/// Why a stock adjustment is refused by the stock it meets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdjustmentRefused {
    /// It would leave fewer units on hand than are reserved for orders in flight.
    BelowReserved,
    /// It would leave more than [`MAX_UNITS`] on hand.
    AboveLimit,
}

/// The units on hand after `delta`, with `reserved` of `on_hand` held for orders.
///
/// # Errors
/// When the result would be below the reserved units or above [`MAX_UNITS`].
pub fn adjust_on_hand(
    on_hand: i64,
    reserved: i64,
    delta: StockDelta,
) -> Result<i64, AdjustmentRefused> {
    // Checked anyway: the bounds make overflow impossible, rows written before them may not.
    match on_hand.checked_add(delta.get()) {
        Some(after) if after < reserved => Err(AdjustmentRefused::BelowReserved),
        Some(after) if after <= MAX_UNITS => Ok(after),
        Some(_) => Err(AdjustmentRefused::AboveLimit),
        None if delta.get() < 0 => Err(AdjustmentRefused::BelowReserved),
        None => Err(AdjustmentRefused::AboveLimit),
    }
}

/// Why AdjustStock was called: 1 to 500 characters, not blank, without control characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdjustmentReason(String);

impl AdjustmentReason {
    /// # Errors
    /// A description of what is wrong.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.chars().count() > 500 {
            return Err("must be 1 to 500 characters".into());
        }
        if trimmed.chars().any(char::is_control) {
            return Err("must not contain control characters (such as NUL or a newline)".into());
        }
        Ok(Self(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A product as the catalog shows it: what it is, what it costs, and its stock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Product {
    pub sku: String,
    pub name: String,
    pub unit_price_minor: i64,
    pub currency: String,
    pub stock: Stock,
}

/// A product's units: in the warehouse (`on_hand`), held for orders in flight (`reserved`, part
/// of `on_hand`) and sold (gone).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stock {
    pub on_hand: i64,
    pub reserved: i64,
    pub sold: i64,
}

impl Stock {
    /// What a new order can still reserve.
    pub fn available(&self) -> i64 {
        self.on_hand - self.reserved
    }
}

/// What inventory holds for an order: its status (`reserved`, `rejected`, `sold`,
/// `released`, `cancelled`) and lines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reservation {
    pub order_id: String,
    pub status: String,
    /// (sku, quantity), by sku.
    pub lines: Vec<(String, i64)>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

/// Current stock of one product, as locked for a reservation.
#[derive(Clone, Debug)]
pub struct StockLevel {
    pub on_hand: i64,
    pub reserved: i64,
}

impl StockLevel {
    pub fn available(&self) -> i64 {
        self.on_hand - self.reserved
    }
}

/// A line that cannot be reserved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shortfall {
    pub sku: String,
    pub requested: i64,
    pub available: i64,
    pub reason: RejectionReason,
}

/// The outcome of trying to reserve an order's lines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReservationPlan {
    /// Every line fits: reserve these quantities (one entry per sku, lines of the same sku summed).
    Reserve(BTreeMap<String, i64>),
    /// At least one line does not fit: reserve nothing; these are the lines that do not.
    Reject(Vec<Shortfall>),
}

/// Decides whether `lines` (sku, quantity) can all be reserved from `stock` (the locked levels
/// of the skus that exist). All or nothing: one short line rejects the whole order.
pub fn plan_reservation(
    lines: &[(String, i64)],
    stock: &BTreeMap<String, StockLevel>,
) -> ReservationPlan {
    let mut wanted: BTreeMap<String, i64> = BTreeMap::new();
    for (sku, quantity) in lines {
        *wanted.entry(sku.clone()).or_default() += quantity;
    }
    let shortfalls: Vec<Shortfall> = wanted
        .iter()
        .filter_map(|(sku, &requested)| match stock.get(sku) {
            None => Some(Shortfall {
                sku: sku.clone(),
                requested,
                available: 0,
                reason: RejectionReason::UnknownSku,
            }),
            Some(level) if level.available() < requested => Some(Shortfall {
                sku: sku.clone(),
                requested,
                available: level.available().max(0),
                reason: RejectionReason::InsufficientStock,
            }),
            Some(_) => None,
        })
        .collect();
    if shortfalls.is_empty() {
        ReservationPlan::Reserve(wanted)
    } else {
        ReservationPlan::Reject(shortfalls)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stock(levels: &[(&str, i64, i64)]) -> BTreeMap<String, StockLevel> {
        levels
            .iter()
            .map(|(s, on_hand, reserved)| {
                (
                    (*s).to_owned(),
                    StockLevel {
                        on_hand: *on_hand,
                        reserved: *reserved,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn lines_that_fit_are_reserved_with_repeated_skus_summed() {
        let plan = plan_reservation(
            &[("a".into(), 2), ("b".into(), 1), ("a".into(), 3)],
            &stock(&[("a", 5, 0), ("b", 1, 0)]),
        );
        assert_eq!(
            plan,
            ReservationPlan::Reserve([("a".to_owned(), 5), ("b".to_owned(), 1)].into())
        );
    }

    #[test]
    fn one_short_line_rejects_the_whole_order_and_names_every_short_line() {
        let plan = plan_reservation(
            &[("a".into(), 1), ("b".into(), 4), ("ghost".into(), 1)],
            &stock(&[("a", 5, 0), ("b", 10, 7)]),
        );
        let ReservationPlan::Reject(short) = plan else {
            panic!("expected a rejection")
        };
        assert_eq!(short.len(), 2);
        assert_eq!(
            short[0],
            Shortfall {
                sku: "b".into(),
                requested: 4,
                available: 3,
                reason: RejectionReason::InsufficientStock
            }
        );
        assert_eq!(short[1].reason, RejectionReason::UnknownSku);
    }

    #[test]
    fn reserved_units_are_not_available() {
        let plan = plan_reservation(&[("a".into(), 1)], &stock(&[("a", 3, 3)]));
        assert!(matches!(plan, ReservationPlan::Reject(_)));
    }

    #[test]
    fn skus_and_prices_are_validated() {
        assert!(Sku::parse("SKU-1_a.b").is_ok());
        assert!(Sku::parse("").is_err());
        assert!(Sku::parse("has space").is_err());
        assert!(Sku::parse(&"x".repeat(65)).is_err());
        assert!(ProductName::parse("  ").is_err());
        assert!(Price::parse(-1, "EUR").is_err());
        assert!(Price::parse(100, "eur").is_err());
        assert_eq!(Price::parse(100, "EUR").unwrap().amount_minor, 100);
        assert!(Price::parse(i64::MAX, "EUR").is_err());
        assert!(ProductName::parse("Lamp\0").is_err());
        assert!(AdjustmentReason::parse("delivery\n4711").is_err());
        assert!(AdjustmentReason::parse(&"r".repeat(501)).is_err());
        assert_eq!(
            AdjustmentReason::parse("  stocktake ").unwrap().as_str(),
            "stocktake"
        );
    }

    #[test]
    fn adjustments_are_bounded_and_never_overflow() {
        for bad in [0, i64::MAX, i64::MIN, MAX_UNITS + 1, -MAX_UNITS - 1] {
            assert!(StockDelta::parse(bad).is_err(), "{bad}");
        }
        let delta = |d| StockDelta::parse(d).unwrap();
        assert_eq!(adjust_on_hand(10, 3, delta(-7)), Ok(3));
        assert_eq!(
            adjust_on_hand(10, 3, delta(-8)),
            Err(AdjustmentRefused::BelowReserved)
        );
        assert_eq!(adjust_on_hand(10, 0, delta(MAX_UNITS - 10)), Ok(MAX_UNITS));
        assert_eq!(
            adjust_on_hand(MAX_UNITS, 0, delta(1)),
            Err(AdjustmentRefused::AboveLimit)
        );
        // A row from before the bounds: still no overflow.
        assert_eq!(
            adjust_on_hand(i64::MAX, 0, delta(MAX_UNITS)),
            Err(AdjustmentRefused::AboveLimit)
        );
    }
}
