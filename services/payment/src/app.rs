//! Payment's use cases (account RPCs) and saga steps. Each saga step runs in the consumer's
//! transaction and appends the event it causes to the outbox in that same transaction.

use shop_eventing::Publisher;
use shop_proto::common::v1::Money;
use shop_proto::order::v1 as order_pb;
use shop_proto::payment::v1 as pb;
use shop_runtime::auth::Caller;
use shop_runtime::status::{FieldViolations, ServiceError};
use sqlx::{PgConnection, PgPool};

use crate::domain::{
    Account, AccountState, AccountStatus, Amount, Currency, CustomerId, DepositId,
    MAX_BALANCE_MINOR, OrderId, Payment, PaymentDecision, PaymentStatus, decide_payment,
};
use crate::outbound::postgres::{self as db, NewPayment};

/// Where payment's events go, and its outcomes are counted.
#[derive(Clone, Debug)]
pub struct Events {
    pub publisher: Publisher,
    pub metrics: crate::metrics::PaymentMetrics,
}

fn account_not_found(customer_id: &CustomerId) -> ServiceError {
    ServiceError::NotFound {
        resource: "account",
        name: customer_id.as_str().to_owned(),
    }
}

/// Opens an account with a zero balance, open or (with `frozen`) frozen.
///
/// # Errors
/// `Invalid` with every field violation, `AlreadyExists` when the customer has an account.
pub async fn open_account(
    pool: &PgPool,
    customer_id: &str,
    currency: &str,
    frozen: bool,
) -> Result<Account, ServiceError> {
    let mut violations = FieldViolations::new();
    let customer_id = violations.check("customer_id", CustomerId::parse(customer_id));
    let currency = violations.check("currency", Currency::parse(currency));
    let (Some(customer_id), Some(currency)) = (customer_id, currency) else {
        return Err(ServiceError::Invalid(violations));
    };
    let status = if frozen {
        AccountStatus::Frozen
    } else {
        AccountStatus::Open
    };
    let mut conn = pool.acquire().await?;
    db::insert_account(
        &mut conn,
        customer_id.as_str(),
        currency.as_str(),
        status.as_str(),
    )
    .await?
    .map(Account::from)
    .ok_or_else(|| ServiceError::AlreadyExists {
        resource: "account",
        name: customer_id.as_str().to_owned(),
    })
}

/// Credits an open account, once per `deposit_id`: a retry with the same id and the same
/// customer and amount credits nothing and returns the account as it is now.
///
/// # Errors
/// `Invalid` with every field violation (an amount in another currency than the account's
/// included), `NotFound` for an unknown account, `Precondition` `ACCOUNT_FROZEN` for a frozen
/// one, `DEPOSIT_ID_REUSED` when the id was used for a different deposit and `BALANCE_LIMIT`
/// when the balance would overflow.
pub async fn deposit(
    pool: &PgPool,
    customer_id: &str,
    amount: Option<(i64, &str)>,
    deposit_id: &str,
) -> Result<Account, ServiceError> {
    let mut violations = FieldViolations::new();
    let customer_id = violations.check("customer_id", CustomerId::parse(customer_id));
    let amount = match amount {
        None => {
            violations.add("amount", "is required");
            None
        }
        Some((amount_minor, currency)) => Amount::parse(amount_minor, currency)
            .map_err(|errors| violations.extend("amount.", errors))
            .ok(),
    };
    let deposit_id = violations.check("deposit_id", DepositId::parse(deposit_id));
    let (Some(customer_id), Some(amount), Some(deposit_id)) = (customer_id, amount, deposit_id)
    else {
        return Err(ServiceError::Invalid(violations));
    };

    let mut tx = pool.begin().await?;
    let account = db::account(&mut tx, customer_id.as_str(), true)
        .await?
        .ok_or_else(|| account_not_found(&customer_id))?;
    if !db::insert_deposit(
        &mut tx,
        deposit_id.as_str(),
        customer_id.as_str(),
        amount.amount_minor,
    )
    .await?
    {
        // The id is taken: by this very deposit (a retry: it was credited, answer as then) or
        // by another one (refused, so that a client bug cannot silently lose a deposit).
        let earlier = db::deposit(&mut tx, deposit_id.as_str())
            .await?
            .ok_or_else(|| anyhow::anyhow!("deposit {} vanished", deposit_id.as_str()))?;
        if earlier.customer_id == customer_id.as_str()
            && earlier.amount_minor == amount.amount_minor
            && amount.currency.as_str() == account.currency
        {
            return Ok(account.into());
        }
        return Err(ServiceError::Precondition {
            kind: "DEPOSIT_ID_REUSED",
            subject: format!("deposits/{}", deposit_id.as_str()),
            description: format!(
                "deposit id {} was used for a different deposit; use a new id for a new deposit",
                deposit_id.as_str()
            ),
        });
    }
    // Returning early rolls the deposit row back with everything else.
    if amount.currency.as_str() != account.currency {
        let mut violations = FieldViolations::new();
        violations.add(
            "amount.currency",
            format!("must be the account's currency {}", account.currency),
        );
        return Err(ServiceError::Invalid(violations));
    }
    if AccountStatus::parse(&account.status) == Some(AccountStatus::Frozen) {
        return Err(ServiceError::Precondition {
            kind: "ACCOUNT_FROZEN",
            subject: format!("accounts/{}", customer_id.as_str()),
            description: format!("account {} is frozen", customer_id.as_str()),
        });
    }
    if account
        .balance_minor
        .checked_add(amount.amount_minor)
        .is_none_or(|after| after > MAX_BALANCE_MINOR)
    {
        return Err(ServiceError::Precondition {
            kind: "BALANCE_LIMIT",
            subject: format!("accounts/{}", customer_id.as_str()),
            description: format!(
                "the deposit would take the balance past {MAX_BALANCE_MINOR}, the most deposits may bring an account to"
            ),
        });
    }
    let row = db::add_to_balance(&mut tx, customer_id.as_str(), amount.amount_minor).await?;
    tx.commit().await?;
    Ok(row.into())
}

/// # Errors
/// `Invalid` for a malformed customer id, `NotFound` for an unknown one.
pub async fn get_account(pool: &PgPool, customer_id: &str) -> Result<Account, ServiceError> {
    let mut violations = FieldViolations::new();
    let customer_id = violations
        .check("customer_id", CustomerId::parse(customer_id))
        .ok_or(ServiceError::Invalid(violations))?;
    let mut conn = pool.acquire().await?;
    db::account(&mut conn, customer_id.as_str(), false)
        .await?
        .map(Account::from)
        .ok_or_else(|| account_not_found(&customer_id))
}

/// The payment of `order_id`, if `caller` may see it (the paying customer, or an operator).
///
/// # Errors
/// `Invalid` for a malformed order id, `NotFound` when the order has no payment (yet), and for
/// another customer's (the same answer: a customer learns nothing of payments not theirs).
pub async fn get_payment(
    pool: &PgPool,
    order_id: &str,
    caller: &Caller,
) -> Result<Payment, ServiceError> {
    let mut violations = FieldViolations::new();
    let order_id = violations
        .check("order_id", OrderId::parse(order_id))
        .ok_or(ServiceError::Invalid(violations))?;
    let mut conn = pool.acquire().await?;
    db::payment(&mut conn, order_id.as_str(), false)
        .await?
        .filter(|payment| caller.sees_customer(&payment.customer_id))
        .map(Payment::from)
        .ok_or_else(|| ServiceError::NotFound {
            resource: "payment",
            name: order_id.as_str().to_owned(),
        })
}

/// Saga step for `PaymentRequested` (an order id and a positive amount, which the consumer
/// checked): captures the amount from the customer's account, or declines, and says which.
/// An order is decided once: a request for an order that already has a payment changes nothing,
/// and one for an order closed by an earlier refund (the payment's tombstone: the order was
/// cancelled before this request was applied) takes no money and says nothing.
///
/// # Errors
/// Database errors (the consumer retries them).
pub async fn capture(
    tx: &mut PgConnection,
    events: &Events,
    requested: &order_pb::PaymentRequested,
) -> sqlx::Result<()> {
    let order_id = requested.order_id.as_str();
    if let Some(payment) = db::payment(tx, order_id, false).await? {
        if PaymentStatus::parse(&payment.status) == Some(PaymentStatus::Cancelled) {
            tracing::info!(
                order_id,
                customer_id = %requested.customer_id,
                "PaymentRequested for an order closed by an earlier refund; no money taken."
            );
            events.metrics.late_request();
        }
        return Ok(()); // already decided for this order
    }
    let (amount_minor, currency) = requested
        .amount
        .as_ref()
        .map_or((0, ""), |m| (m.amount_minor, m.currency.as_str()));
    // Locked until commit: concurrent payments of one customer are decided one after the other.
    let account = db::account(tx, &requested.customer_id, true)
        .await?
        .map(|a| AccountState {
            frozen: AccountStatus::parse(&a.status) != Some(AccountStatus::Open),
            currency: a.currency,
            balance_minor: a.balance_minor,
        });
    let decision = decide_payment(account.as_ref(), amount_minor, currency);
    let (status, decline_reason) = match decision {
        PaymentDecision::Capture => (PaymentStatus::Captured, None),
        PaymentDecision::Decline(reason) => (PaymentStatus::Declined, Some(reason)),
    };
    let payment = NewPayment {
        order_id,
        customer_id: &requested.customer_id,
        amount_minor,
        currency,
        status: status.as_str(),
        decline_reason: decline_reason.map(|r| r.as_str()),
    };
    if !db::insert_payment(tx, &payment).await? {
        return Ok(()); // decided concurrently for this order
    }
    match decision {
        PaymentDecision::Capture => {
            db::add_to_balance(tx, &requested.customer_id, -amount_minor).await?;
            tracing::info!(
                order_id,
                customer_id = %requested.customer_id,
                amount_minor,
                currency,
                "Payment captured."
            );
            let event = pb::PaymentCaptured {
                order_id: order_id.to_owned(),
                customer_id: requested.customer_id.clone(),
                amount: money(amount_minor, currency),
            };
            events.metrics.captured();
            events.publisher.append(tx, order_id, &event).await
        }
        PaymentDecision::Decline(reason) => {
            tracing::info!(
                order_id,
                customer_id = %requested.customer_id,
                reason = reason.as_str(),
                "Payment declined."
            );
            let event = pb::PaymentDeclined {
                order_id: order_id.to_owned(),
                customer_id: requested.customer_id.clone(),
                reason: pb::DeclineReason::from(reason).into(),
            };
            events.metrics.declined(reason);
            events.publisher.append(tx, order_id, &event).await
        }
    }
}

/// Why a saga step failed.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// The step can never succeed as the data stands (retrying cannot help).
    #[error("{0}")]
    Impossible(String),
}

/// Saga step for `OrderCancelled` and `RefundRequested`: refunds a captured payment to its
/// account. Nothing to do for an order whose payment was declined or is refunded already; for
/// an order payment has no payment of (its `PaymentRequested` not applied yet: a dead letter, a
/// replay), records a tombstone for `customer_id`, so that the late request takes no money.
///
/// # Errors
/// Database errors, and `Impossible` for a refund the balance cannot take (beyond `i64`: not
/// reachable with deposits bounded by [`MAX_BALANCE_MINOR`]).
pub async fn refund(
    tx: &mut PgConnection,
    events: &Events,
    order_id: &str,
    customer_id: &str,
) -> Result<(), StepError> {
    let payment = match db::payment(tx, order_id, true).await? {
        Some(payment) => payment,
        None => {
            if db::insert_payment(tx, &NewPayment::tombstone(order_id, customer_id)).await? {
                tracing::info!(
                    order_id,
                    customer_id,
                    "Refund of an order with no payment; closed it against a late PaymentRequested."
                );
                return Ok(());
            }
            // A payment was inserted concurrently (and is committed now): refund that one.
            db::payment(tx, order_id, true)
                .await?
                .ok_or(sqlx::Error::RowNotFound)?
        }
    };
    if PaymentStatus::parse(&payment.status) != Some(PaymentStatus::Captured) {
        return Ok(());
    }
    // Locked, so that the balance checked is the balance credited.
    let account = db::account(tx, &payment.customer_id, true)
        .await?
        .ok_or_else(|| {
            StepError::Impossible(format!(
                "the account {} of a captured payment is gone",
                payment.customer_id
            ))
        })?;
    if account
        .balance_minor
        .checked_add(payment.amount_minor)
        .is_none()
    {
        return Err(StepError::Impossible(format!(
            "refunding {} would overflow the balance {} of {}",
            payment.amount_minor, account.balance_minor, payment.customer_id
        )));
    }
    db::add_to_balance(tx, &payment.customer_id, payment.amount_minor).await?;
    db::set_payment_status(tx, order_id, PaymentStatus::Refunded.as_str()).await?;
    tracing::info!(
        order_id,
        customer_id = %payment.customer_id,
        amount_minor = payment.amount_minor,
        "Payment refunded."
    );
    let event = pb::PaymentRefunded {
        order_id: order_id.to_owned(),
        customer_id: payment.customer_id,
        amount: money(payment.amount_minor, &payment.currency),
    };
    events.metrics.refunded();
    Ok(events.publisher.append(tx, order_id, &event).await?)
}

fn money(amount_minor: i64, currency: &str) -> Option<Money> {
    Some(Money {
        amount_minor,
        currency: currency.to_owned(),
    })
}

/// Who paid for an order (none before its payment): the account its refund locks.
///
/// # Errors
/// Database errors.
pub async fn payer(tx: &mut PgConnection, order_id: &str) -> sqlx::Result<Option<String>> {
    Ok(db::payment(tx, order_id, false)
        .await?
        .map(|payment| payment.customer_id))
}
