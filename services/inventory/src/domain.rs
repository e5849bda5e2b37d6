//! Inventory's rules, free of I/O: what a valid sku, name and price are, and whether an order's
//! lines can be reserved from the current stock (all of them or none).

use std::collections::BTreeMap;

use shop_proto::inventory::v1::RejectionReason;

/// A stock-keeping unit: 1 to 64 characters of letters, digits, `-`, `_` or `.`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Sku(String);

impl Sku {
    /// # Errors
    /// A description of what is wrong.
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.is_empty() || raw.len() > 64 {
            return Err("must be 1 to 64 characters".into());
        }
        if !raw
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err("may contain only letters, digits, '-', '_' and '.'".into());
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A product name: 1 to 200 characters, not blank.
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
        Ok(Self(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A price: a non-negative amount in minor units of an ISO 4217 currency.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Price {
    pub amount_minor: i64,
    pub currency: String,
}

impl Price {
    /// # Errors
    /// `(field, description)` of what is wrong.
    pub fn parse(amount_minor: i64, currency: &str) -> Result<Self, (&'static str, String)> {
        if amount_minor < 0 {
            return Err(("amount_minor", "must not be negative".into()));
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
    }
}
