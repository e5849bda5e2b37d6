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

/// Checks:
/// - **stock**: per sku, `on_hand + sold` equals every adjustment summed (the saga never creates
///   or loses units); `reserved` and `sold` equal the lines of reservations in those states;
/// - **money**: per customer, `balance + captured` equals the deposits (refunds returned what
///   was captured; nothing was charged twice);
/// - **every order terminal**: none is still PENDING;
/// - **agreement**: a CONFIRMED order has its payment captured for its total and its stock sold;
///   a CANCELLED one has no captured payment and no stock held or sold;
/// - **notifications**: exactly one per outcome (one `order_confirmed` per order ever confirmed,
///   one `order_cancelled` per cancelled order, nothing else).
///
/// # Errors
/// Database errors.
pub async fn audit(dbs: &Databases) -> anyhow::Result<AuditReport> {
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
        if on_hand + sold != adjusted {
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
    let money: Vec<(String, i64, i64, i64)> = sqlx::query_as(
        "SELECT a.customer_id, a.balance_minor, \
                coalesce((SELECT sum(amount_minor) FROM payments p WHERE p.customer_id = a.customer_id AND p.status = 'captured'), 0)::bigint, \
                coalesce((SELECT sum(amount_minor) FROM deposits d WHERE d.customer_id = a.customer_id), 0)::bigint \
         FROM accounts a ORDER BY a.customer_id",
    )
    .fetch_all(&dbs.payment)
    .await?;
    for (customer, balance, captured, deposited) in money {
        if balance + captured != deposited {
            v.push(format!(
                "money {customer}: balance {balance} + captured {captured} != deposits {deposited}"
            ));
        }
    }

    // --- orders, and what the other services did about them -------------------------------------
    let orders: Vec<(uuid::Uuid, String, i64, bool)> = sqlx::query_as(
        "SELECT o.order_id, o.status, o.total_minor, \
                EXISTS (SELECT 1 FROM order_status_history h WHERE h.order_id = o.order_id AND h.status = 'confirmed') \
         FROM orders o",
    )
    .fetch_all(&dbs.order)
    .await?;
    let payments: BTreeMap<String, (String, i64)> = sqlx::query_as::<_, (String, String, i64)>(
        "SELECT order_id, status, amount_minor FROM payments",
    )
    .fetch_all(&dbs.payment)
    .await?
    .into_iter()
    .map(|(id, status, amount)| (id, (status, amount)))
    .collect();
    let reservations: BTreeMap<String, String> =
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
        let payment = payments.get(&id);
        let reservation = reservations.get(&id).map(String::as_str);
        let mut expected_notes = BTreeSet::new();
        match status.as_str() {
            "pending" => {
                report.pending += 1;
                v.push(format!("order {id}: still PENDING"));
            }
            "confirmed" => {
                report.confirmed += 1;
                if payment.map(|(s, a)| (s.as_str(), *a)) != Some(("captured", total)) {
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
                if payment.is_some_and(|(s, _)| s == "captured") {
                    v.push(format!(
                        "order {id}: CANCELLED but its payment is still captured"
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
    for (id, kinds) in notifications {
        v.push(format!("notifications {kinds:?} for unknown order {id}"));
    }
    Ok(report)
}
