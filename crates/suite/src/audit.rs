//! The invariants that must hold across the four databases once the saga has settled, whatever
//! crashed or was delivered twice on the way. Each service owns its database; only this audit
//! (an operator's tool, never a service) reads them side by side.

use std::collections::{BTreeMap, BTreeSet};

use sqlx::PgPool;

/// One pool per service database.
#[derive(Clone, Debug)]
pub struct Databases {
    pub order: PgPool,
    pub inventory: PgPool,
    pub payment: PgPool,
    pub notification: PgPool,
}

impl Databases {
    /// Each database with the name the audit reports it under.
    fn named(&self) -> [(&'static str, &PgPool); 4] {
        [
            ("order", &self.order),
            ("inventory", &self.inventory),
            ("payment", &self.payment),
            ("notification", &self.notification),
        ]
    }
}

/// A record a test made a consumer give up on, on purpose: the audit accepts exactly one
/// dead-letter row per expectation (and reports an expectation no row meets).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpectedDeadLetter {
    /// The database whose `eventing_dead_letter` holds it: `order`, `inventory`, `payment` or
    /// `notification`.
    pub database: &'static str,
    /// Its `ce_type`, e.g. `shop.order.v1.OrderCancelled`.
    pub event_type: &'static str,
}

/// What the audit saw, and every invariant it found broken.
#[derive(Debug, Default)]
pub struct AuditReport {
    pub orders: usize,
    pub confirmed: usize,
    pub cancelled: usize,
    pub pending: usize,
    pub violations: Vec<String>,
}

impl AuditReport {
    /// # Panics
    /// When any invariant is broken, listing all of them.
    pub fn assert_clean(&self) {
        assert!(
            self.violations.is_empty(),
            "audit found {} violation(s):\n{}",
            self.violations.len(),
            self.violations.join("\n")
        );
    }
}

/// [`audit_expecting`] with no dead letter expected.
///
/// # Errors
/// Database errors.
pub async fn audit(dbs: &Databases) -> anyhow::Result<AuditReport> {
    audit_expecting(dbs, &[]).await
}

/// Checks:
/// - **stock conserved**: per sku, `on_hand + sold` equals every adjustment summed (the saga
///   never creates or loses units); `reserved` and `sold` equal the lines of reservations in
///   those states;
/// - **money conserved**: per customer, `balance = deposits − captured + refunded`, where
///   captured counts every payment ever captured (a refunded payment was captured first);
/// - **every order terminal**: none is still PENDING;
/// - **one order per idempotency key** of a customer;
/// - **confirmed ⇔ captured once**: a CONFIRMED order has its one payment captured for its
///   total and its stock sold; a CANCELLED one has no payment still captured (one captured
///   before the cancellation is refunded, for its total) and no stock held or sold; a payment
///   captured or refunded, or stock reserved or sold, for an order the order service does not
///   have, is a violation too;
/// - **notifications**: exactly one per outcome (one `order_confirmed` per order ever
///   confirmed, one `order_cancelled` per cancelled order, nothing else);
/// - **outboxes drained**: no event left in any `eventing_outbox`;
/// - **nothing valid dead-lettered**: every `eventing_dead_letter` row is one of `expected`.
///
/// # Errors
/// Database errors.
pub async fn audit_expecting(
    dbs: &Databases,
    expected: &[ExpectedDeadLetter],
) -> anyhow::Result<AuditReport> {
    let mut report = AuditReport::default();
    let v = &mut report.violations;

    // --- stock ---------------------------------------------------------------------------------
    let stock: Vec<(String, i64, i64, i64, i64, i64, i64)> = sqlx::query_as(
        "SELECT p.sku, p.on_hand, p.reserved, p.sold, \
                coalesce((SELECT sum(delta) FROM stock_adjustments a WHERE a.sku = p.sku), 0)::bigint, \
                coalesce((SELECT sum(l.quantity) FROM reservation_lines l JOIN reservations r USING (order_id) \
                          WHERE l.sku = p.sku AND r.status = 'reserved'), 0)::bigint, \
                coalesce((SELECT sum(l.quantity) FROM reservation_lines l JOIN reservations r USING (order_id) \
                          WHERE l.sku = p.sku AND r.status = 'sold'), 0)::bigint \
         FROM products p ORDER BY p.sku",
    )
    .fetch_all(&dbs.inventory)
    .await?;
    for (sku, on_hand, reserved, sold, adjusted, held, sold_lines) in stock {
        if on_hand.checked_add(sold) != Some(adjusted) {
            v.push(format!(
                "stock {sku}: on_hand {on_hand} + sold {sold} != {adjusted} units ever added"
            ));
        }
        if reserved != held {
            v.push(format!(
                "stock {sku}: reserved {reserved} != {held} units in open reservations"
            ));
        }
        if sold != sold_lines {
            v.push(format!(
                "stock {sku}: sold {sold} != {sold_lines} units of sold reservations"
            ));
        }
    }

    // --- money ---------------------------------------------------------------------------------
    let money: Vec<(String, i64, i64, i64, i64)> = sqlx::query_as(
        "SELECT a.customer_id, a.balance_minor, \
                coalesce((SELECT sum(amount_minor) FROM deposits d WHERE d.customer_id = a.customer_id), 0)::bigint, \
                coalesce((SELECT sum(amount_minor) FROM payments p WHERE p.customer_id = a.customer_id \
                          AND p.status IN ('captured', 'refunded')), 0)::bigint, \
                coalesce((SELECT sum(amount_minor) FROM payments p WHERE p.customer_id = a.customer_id \
                          AND p.status = 'refunded'), 0)::bigint \
         FROM accounts a ORDER BY a.customer_id",
    )
    .fetch_all(&dbs.payment)
    .await?;
    for (customer, balance, deposited, captured, refunded) in money {
        let expected_balance = deposited
            .checked_sub(captured)
            .and_then(|b| b.checked_add(refunded));
        if expected_balance != Some(balance) {
            v.push(format!(
                "money {customer}: balance {balance} != deposits {deposited} - captured {captured} + refunded {refunded}"
            ));
        }
    }

    // --- idempotency ---------------------------------------------------------------------------
    let reused: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT customer_id, idempotency_key, count(*) FROM orders \
         GROUP BY customer_id, idempotency_key HAVING count(*) > 1",
    )
    .fetch_all(&dbs.order)
    .await?;
    for (customer, key, count) in reused {
        v.push(format!(
            "idempotency key {key:?} of {customer}: {count} orders"
        ));
    }

    // --- orders, and what the other services did about them -------------------------------------
    let orders: Vec<(uuid::Uuid, String, i64, bool)> = sqlx::query_as(
        "SELECT o.order_id, o.status, o.total_minor, \
                EXISTS (SELECT 1 FROM order_status_history h WHERE h.order_id = o.order_id AND h.status = 'confirmed') \
         FROM orders o",
    )
    .fetch_all(&dbs.order)
    .await?;
    let mut payments: BTreeMap<String, (String, i64)> = sqlx::query_as::<_, (String, String, i64)>(
        "SELECT order_id, status, amount_minor FROM payments",
    )
    .fetch_all(&dbs.payment)
    .await?
    .into_iter()
    .map(|(id, status, amount)| (id, (status, amount)))
    .collect();
    let mut reservations: BTreeMap<String, String> =
        sqlx::query_as::<_, (String, String)>("SELECT order_id, status FROM reservations")
            .fetch_all(&dbs.inventory)
            .await?
            .into_iter()
            .collect();
    let mut notifications: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (order_id, kind) in
        sqlx::query_as::<_, (String, String)>("SELECT order_id, kind FROM notifications")
            .fetch_all(&dbs.notification)
            .await?
    {
        notifications.entry(order_id).or_default().push(kind);
    }

    report.orders = orders.len();
    for (id, status, total, ever_confirmed) in orders {
        let id = id.to_string();
        let payment = payments.remove(&id);
        let payment_state = payment.as_ref().map(|(s, a)| (s.as_str(), *a));
        let reservation = reservations.remove(&id);
        let reservation = reservation.as_deref();
        let mut expected_notes = BTreeSet::new();
        match status.as_str() {
            "pending" => {
                report.pending += 1;
                v.push(format!("order {id}: still PENDING"));
            }
            "confirmed" => {
                report.confirmed += 1;
                if payment_state != Some(("captured", total)) {
                    v.push(format!(
                        "order {id}: CONFIRMED but payment is {payment:?} (total {total})"
                    ));
                }
                if reservation != Some("sold") {
                    v.push(format!(
                        "order {id}: CONFIRMED but reservation is {reservation:?}"
                    ));
                }
                expected_notes.insert("order_confirmed");
            }
            "cancelled" => {
                report.cancelled += 1;
                match payment_state {
                    Some(("captured", _)) => v.push(format!(
                        "order {id}: CANCELLED but its payment is still captured"
                    )),
                    Some(("refunded", amount)) if amount != total => v.push(format!(
                        "order {id}: CANCELLED and refunded {amount}, its total is {total}"
                    )),
                    _ => {}
                }
                if ever_confirmed && payment_state.map(|(s, _)| s) != Some("refunded") {
                    v.push(format!(
                        "order {id}: confirmed, then CANCELLED, but its payment is {payment:?}, not refunded"
                    ));
                }
                if matches!(reservation, Some("reserved" | "sold")) {
                    v.push(format!(
                        "order {id}: CANCELLED but its stock is {reservation:?}"
                    ));
                }
                expected_notes.insert("order_cancelled");
                if ever_confirmed {
                    expected_notes.insert("order_confirmed");
                }
            }
            other => v.push(format!("order {id}: unknown status {other}")),
        }
        let mut kinds = notifications.remove(&id).unwrap_or_default();
        kinds.sort();
        let expected: Vec<String> = expected_notes.into_iter().map(str::to_owned).collect();
        if kinds != expected {
            v.push(format!(
                "order {id} ({status}): notifications {kinds:?}, expected {expected:?}"
            ));
        }
    }
    // What the other services hold about orders the order service never had. A declined or
    // cancelled payment, a rejected or closed reservation moved nothing; anything else did.
    for (id, (status, amount)) in payments {
        if matches!(status.as_str(), "captured" | "refunded") {
            v.push(format!("payment of unknown order {id}: {status} {amount}"));
        }
    }
    for (id, status) in reservations {
        if matches!(
            status.as_str(),
            "reserved" | "sold" | "released" | "returned"
        ) {
            v.push(format!("reservation of unknown order {id}: {status}"));
        }
    }
    for (id, kinds) in notifications {
        v.push(format!("notifications {kinds:?} for unknown order {id}"));
    }

    // --- the eventing tables -----------------------------------------------------------------------
    let mut unmet: Vec<&ExpectedDeadLetter> = expected.iter().collect();
    for (name, pool) in dbs.named() {
        let (left, oldest): (i64, Option<String>) = sqlx::query_as(
            "SELECT count(*), min(event_type || ' ' || partition_key) FROM eventing_outbox",
        )
        .fetch_one(pool)
        .await?;
        if left > 0 {
            v.push(format!(
                "{name} outbox not drained: {left} event(s) left, e.g. {}",
                oldest.unwrap_or_default()
            ));
        }
        let dead: Vec<(String, Option<String>, String, i32, i64, String)> = sqlx::query_as(
            "SELECT consumer, event_type, topic, kafka_partition, kafka_offset, error \
             FROM eventing_dead_letter ORDER BY failed_at",
        )
        .fetch_all(pool)
        .await?;
        for (consumer, event_type, topic, partition, offset, error) in dead {
            let event_type = event_type.unwrap_or_default();
            match unmet
                .iter()
                .position(|e| e.database == name && e.event_type == event_type)
            {
                Some(i) => {
                    unmet.swap_remove(i);
                }
                None => v.push(format!(
                    "{name}: unexpected dead letter of {consumer}: {event_type} from {topic}/{partition}@{offset}: {error}"
                )),
            }
        }
    }
    for missing in unmet {
        v.push(format!(
            "{}: expected a dead letter of {}, found none",
            missing.database, missing.event_type
        ));
    }
    Ok(report)
}
