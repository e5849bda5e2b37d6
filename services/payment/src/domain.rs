//! Payment's rules, free of I/O: what valid customer ids, currencies, deposit ids, order ids and
//! amounts are, and whether an order's payment can be captured from an account (or why not).

use shop_proto::payment::v1 as pb;

/// A customer id, the key of an account ([`shop_proto::ids`]).
pub use shop_proto::ids::CustomerId;

/// An ISO 4217 alphabetic currency code: 3 upper-case letters.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Currency(String);

impl Currency {
    /// # Errors
    /// A description of what is wrong.
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.len() != 3 || !raw.chars().all(|c| c.is_ascii_uppercase()) {
            return Err("must be an ISO 4217 code of 3 upper-case letters".into());
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A client-chosen deposit id that makes retries safe: 1 to 128 characters, without whitespace
/// or control characters (a UUID fits).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DepositId(String);

impl DepositId {
    /// # Errors
    /// A description of what is wrong.
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.is_empty() || raw.chars().count() > 128 {
            return Err("must be 1 to 128 characters".into());
        }
        if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("must not contain whitespace or control characters".into());
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An order id as the order service names it (opaque here): 1 to 128 characters, without
/// whitespace or control characters.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct OrderId(String);

impl OrderId {
    /// # Errors
    /// A description of what is wrong.
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.is_empty() || raw.chars().count() > 128 {
            return Err("must be 1 to 128 characters".into());
        }
        if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("must not contain whitespace or control characters".into());
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The largest balance deposits may bring an account to, and the largest deposit: 10^15 minor
/// units (10 trillion in a currency with cents). Far from `i64::MAX` (about 9.2 * 10^18), so
/// that refunds, which may take a balance past it (a refund is never refused), cannot overflow
/// in any realistic history either; they are checked all the same.
pub const MAX_BALANCE_MINOR: i64 = 1_000_000_000_000_000;

/// A positive amount of money, at most [`MAX_BALANCE_MINOR`], in minor units of an ISO 4217
/// currency.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Amount {
    pub amount_minor: i64,
    pub currency: Currency,
}

impl Amount {
    /// # Errors
    /// Every `(field, description)` that is wrong, fields named as in `Money`.
    pub fn parse(amount_minor: i64, currency: &str) -> Result<Self, Vec<(&'static str, String)>> {
        let mut violations = Vec::new();
        if amount_minor <= 0 {
            violations.push(("amount_minor", "must be positive".to_owned()));
        } else if amount_minor > MAX_BALANCE_MINOR {
            violations.push((
                "amount_minor",
                format!("must be at most {MAX_BALANCE_MINOR}"),
            ));
        }
        let currency = Currency::parse(currency)
            .map_err(|e| violations.push(("currency", e)))
            .ok();
        match currency {
            Some(currency) if violations.is_empty() => Ok(Self {
                amount_minor,
                currency,
            }),
            _ => Err(violations),
        }
    }
}

/// A customer's account as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    pub customer_id: String,
    pub currency: String,
    pub balance_minor: i64,
    /// `None` for a status this version does not know.
    pub status: Option<AccountStatus>,
    pub opened_at: chrono::DateTime<chrono::Utc>,
}

/// The payment of an order as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payment {
    pub order_id: String,
    pub customer_id: String,
    pub amount_minor: i64,
    pub currency: String,
    /// `None` for a status this version does not know.
    pub status: Option<PaymentStatus>,
    pub decline_reason: Option<String>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

/// Whether an account takes deposits and pays for orders.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccountStatus {
    Open,
    Frozen,
}

impl AccountStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Frozen => "frozen",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "open" => Some(Self::Open),
            "frozen" => Some(Self::Frozen),
            _ => None,
        }
    }
}

/// Where an order's payment is: captured, then possibly refunded; or declined for good; or
/// cancelled (a tombstone) when the order was cancelled before any payment was requested.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PaymentStatus {
    Captured,
    Declined,
    Refunded,
    /// No money was taken and none will be: the order is closed.
    Cancelled,
}

impl PaymentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Captured => "captured",
            Self::Declined => "declined",
            Self::Refunded => "refunded",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "captured" => Some(Self::Captured),
            "declined" => Some(Self::Declined),
            "refunded" => Some(Self::Refunded),
            "cancelled" => Some(Self::Cancelled),
            _ => None,
        }
    }
}

/// Why a payment was declined.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeclineReason {
    UnknownAccount,
    AccountFrozen,
    CurrencyMismatch,
    InsufficientFunds,
}

impl DeclineReason {
    /// The stored (and `Payment.decline_reason`) spelling, e.g. `insufficient_funds`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UnknownAccount => "unknown_account",
            Self::AccountFrozen => "account_frozen",
            Self::CurrencyMismatch => "currency_mismatch",
            Self::InsufficientFunds => "insufficient_funds",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "unknown_account" => Some(Self::UnknownAccount),
            "account_frozen" => Some(Self::AccountFrozen),
            "currency_mismatch" => Some(Self::CurrencyMismatch),
            "insufficient_funds" => Some(Self::InsufficientFunds),
            _ => None,
        }
    }
}

impl From<DeclineReason> for pb::DeclineReason {
    fn from(reason: DeclineReason) -> Self {
        match reason {
            DeclineReason::UnknownAccount => Self::UnknownAccount,
            DeclineReason::AccountFrozen => Self::AccountFrozen,
            DeclineReason::CurrencyMismatch => Self::CurrencyMismatch,
            DeclineReason::InsufficientFunds => Self::InsufficientFunds,
        }
    }
}

/// An account as locked for a payment.
#[derive(Clone, Debug)]
pub struct AccountState {
    pub currency: String,
    pub balance_minor: i64,
    pub frozen: bool,
}

/// The outcome of trying to pay for an order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PaymentDecision {
    /// Debit the amount from the account.
    Capture,
    /// Debit nothing, for this reason.
    Decline(DeclineReason),
}

/// Decides whether `amount_minor` (positive) in `currency` can be captured from `account` (the
/// locked account of the customer, `None` when there is none). The first reason that applies
/// wins, in this order: no account, frozen, another currency, not enough money.
pub fn decide_payment(
    account: Option<&AccountState>,
    amount_minor: i64,
    currency: &str,
) -> PaymentDecision {
    let reason = match account {
        None => DeclineReason::UnknownAccount,
        Some(a) if a.frozen => DeclineReason::AccountFrozen,
        Some(a) if a.currency != currency => DeclineReason::CurrencyMismatch,
        Some(a) if a.balance_minor < amount_minor => DeclineReason::InsufficientFunds,
        Some(_) => return PaymentDecision::Capture,
    };
    PaymentDecision::Decline(reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(currency: &str, balance_minor: i64, frozen: bool) -> AccountState {
        AccountState {
            currency: currency.into(),
            balance_minor,
            frozen,
        }
    }

    #[test]
    fn an_open_account_with_enough_money_in_the_currency_pays() {
        let eur = account("EUR", 1000, false);
        assert_eq!(
            decide_payment(Some(&eur), 999, "EUR"),
            PaymentDecision::Capture
        );
        assert_eq!(
            decide_payment(Some(&eur), 1000, "EUR"),
            PaymentDecision::Capture,
            "the whole balance may be spent"
        );
    }

    #[test]
    fn each_decline_reason_applies_on_its_own() {
        use DeclineReason::*;
        let cases = [
            (None, UnknownAccount),
            (Some(account("EUR", 1000, true)), AccountFrozen),
            (Some(account("USD", 1000, false)), CurrencyMismatch),
            (Some(account("EUR", 1000, false)), InsufficientFunds),
        ];
        for (account, reason) in cases {
            let amount = if reason == InsufficientFunds {
                1001
            } else {
                500
            };
            assert_eq!(
                decide_payment(account.as_ref(), amount, "EUR"),
                PaymentDecision::Decline(reason)
            );
        }
    }

    #[test]
    fn frozen_beats_currency_which_beats_funds() {
        let frozen_usd_empty = account("USD", 0, true);
        assert_eq!(
            decide_payment(Some(&frozen_usd_empty), 100, "EUR"),
            PaymentDecision::Decline(DeclineReason::AccountFrozen)
        );
        let usd_empty = account("USD", 0, false);
        assert_eq!(
            decide_payment(Some(&usd_empty), 100, "EUR"),
            PaymentDecision::Decline(DeclineReason::CurrencyMismatch)
        );
    }

    #[test]
    fn ids_currencies_and_amounts_are_validated() {
        assert!(CustomerId::parse("alice-1_a.b").is_ok());
        assert!(CustomerId::parse("").is_err());
        assert!(CustomerId::parse("has space").is_err());
        assert!(CustomerId::parse(&"x".repeat(65)).is_err());
        assert!(Currency::parse("EUR").is_ok());
        assert!(Currency::parse("eur").is_err());
        assert!(Currency::parse("EURO").is_err());
        assert!(DepositId::parse("4f9c2a3e-0b1d-4c55-9a7e-1f2d3c4b5a69").is_ok());
        assert!(DepositId::parse("").is_err());
        assert!(DepositId::parse("a b").is_err());
        assert!(DepositId::parse(&"d".repeat(129)).is_err());
        assert!(OrderId::parse("").is_err());
        assert!(OrderId::parse("order\0").is_err());
        assert!(OrderId::parse("order 1").is_err());
        assert!(Amount::parse(MAX_BALANCE_MINOR, "EUR").is_ok());
        assert!(Amount::parse(MAX_BALANCE_MINOR + 1, "EUR").is_err());
        assert!(Amount::parse(i64::MAX, "EUR").is_err());
        assert_eq!(Amount::parse(100, "EUR").unwrap().amount_minor, 100);
        assert_eq!(
            Amount::parse(0, "eu")
                .unwrap_err()
                .into_iter()
                .map(|(field, _)| field)
                .collect::<Vec<_>>(),
            ["amount_minor", "currency"]
        );
        assert_eq!(Amount::parse(-5, "EUR").unwrap_err().len(), 1);
    }

    #[test]
    fn stored_spellings_round_trip() {
        use DeclineReason::*;
        for reason in [
            UnknownAccount,
            AccountFrozen,
            CurrencyMismatch,
            InsufficientFunds,
        ] {
            assert_eq!(DeclineReason::parse(reason.as_str()), Some(reason));
        }
        for status in [
            PaymentStatus::Captured,
            PaymentStatus::Declined,
            PaymentStatus::Refunded,
            PaymentStatus::Cancelled,
        ] {
            assert_eq!(PaymentStatus::parse(status.as_str()), Some(status));
        }
        for status in [AccountStatus::Open, AccountStatus::Frozen] {
            assert_eq!(AccountStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(
            pb::DeclineReason::from(InsufficientFunds),
            pb::DeclineReason::InsufficientFunds
        );
    }
}
