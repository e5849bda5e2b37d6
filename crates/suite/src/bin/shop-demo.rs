//! Walks orders through every path of the saga against a running suite and prints each order's
//! journey: confirmed, out of stock, payment declined, and cancelled after confirmation.
//!
//! Service addresses come from `ORDER_URL`, `INVENTORY_URL`, `PAYMENT_URL`, `NOTIFICATION_URL`
//! (default: the services' default ports on 127.0.0.1). `deploy/run.sh` runs it.
//!
//! It plays the shop's operator (seeding the catalog and the accounts) and each of its customers
//! (placing, reading and cancelling their own orders), each with a token of their own, minted
//! with the dev signing key `SHOP_SIGNING_KEY` ([`shop_suite::clients::dev_issuer`]). The
//! customers are `<name>-<run>`; `SHOP_DEMO_RUN` fixes the run (default: random).

use std::time::{Duration, Instant};

use shop_proto::common::v1::Money;
use shop_proto::inventory::v1 as inventory;
use shop_proto::notification::v1 as notification;
use shop_proto::order::v1 as order;
use shop_proto::payment::v1 as payment;
use shop_suite::clients::{Clients, Endpoints, dev_issuer};

fn eur(amount_minor: i64) -> Option<Money> {
    Some(Money {
        amount_minor,
        currency: "EUR".into(),
    })
}

fn fmt_money(m: Option<&Money>) -> String {
    m.map_or_else(String::new, |m| {
        format!(
            "{}.{:02} {}",
            m.amount_minor / 100,
            m.amount_minor % 100,
            m.currency
        )
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let endpoints = Endpoints::from_env();
    let issuer = dev_issuer()?;
    let mut c = Clients::connect(
        &endpoints,
        Duration::from_secs(120),
        &issuer.operator("demo-operator"),
    )
    .await?;
    let run = std::env::var("SHOP_DEMO_RUN")
        .ok()
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string()[..8].to_owned());

    println!("Seeding the catalog and four customer accounts (run {run}).");
    for (sku, name, price, stock) in [
        ("BOOK", "Rust in Action", 3999, 50),
        ("MUG", "Ferris mug", 1299, 3),
        ("LAMP", "Desk lamp", 4999, 10),
    ] {
        c.inventory
            .upsert_product(inventory::UpsertProductRequest {
                sku: sku.into(),
                name: name.into(),
                unit_price: eur(price),
            })
            .await?;
        c.inventory
            .adjust_stock(inventory::AdjustStockRequest {
                sku: sku.into(),
                delta: stock,
                reason: format!("demo {run} delivery"),
            })
            .await?;
    }
    let customer = |name: &str| format!("{name}-{run}");
    for (name, deposit) in [
        ("alice", 20_000),
        ("bob", 500),
        ("carol", 20_000),
        ("dave", 20_000),
    ] {
        let id = customer(name);
        c.payment
            .open_account(payment::OpenAccountRequest {
                customer_id: id.clone(),
                currency: "EUR".into(),
                frozen: false,
            })
            .await?;
        c.payment
            .deposit(payment::DepositRequest {
                customer_id: id.clone(),
                amount: eur(deposit),
                deposit_id: format!("{id}-initial"),
            })
            .await?;
    }

    let paths = [
        ("alice", "BOOK", 2, "confirmed"),
        ("bob", "LAMP", 1, "payment declined (balance 5.00 EUR)"),
        ("carol", "MUG", 1000, "out of stock"),
        (
            "dave",
            "LAMP",
            1,
            "confirmed, then cancelled by the customer",
        ),
    ];
    for (name, sku, quantity, expectation) in paths {
        let who = customer(name);
        // From here on, the customer themself.
        let mut c = c.with_token(&issuer.customer(&who));
        let placed = c
            .order
            .place_order(order::PlaceOrderRequest {
                idempotency_key: format!("demo-{run}-{name}"),
                customer_id: who.clone(),
                lines: vec![order::LineRequest {
                    sku: sku.into(),
                    quantity,
                }],
            })
            .await?
            .into_inner()
            .order
            .ok_or_else(|| anyhow::anyhow!("no order in the response"))?;
        let id = placed.order_id.clone();
        let mut done = wait_terminal(&mut c, &id).await?;
        if name == "dave" {
            c.order
                .cancel_order(order::CancelOrderRequest {
                    order_id: id.clone(),
                })
                .await?;
            done = wait_terminal(&mut c, &id).await?;
            // The refund happens in payment, after it sees OrderCancelled.
            let deadline = Instant::now() + Duration::from_secs(30);
            while c
                .payment
                .get_payment(payment::GetPaymentRequest {
                    order_id: id.clone(),
                })
                .await?
                .into_inner()
                .payment
                .map(|p| p.status())
                != Some(payment::PaymentStatus::Refunded)
            {
                anyhow::ensure!(Instant::now() < deadline, "refund of {id} did not happen");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }

        println!("\n{who}: {quantity} x {sku}, expected: {expectation}");
        println!(
            "  order {id}  total {}  -> {:?}",
            fmt_money(done.total.as_ref()),
            done.status()
        );
        for step in &done.history {
            let at = step
                .at
                .as_ref()
                .map(|t| t.seconds % 86_400)
                .unwrap_or_default();
            println!(
                "    {:02}:{:02}:{:02}  {:<10} {}",
                at / 3600,
                at / 60 % 60,
                at % 60,
                format!("{:?}", step.status()).to_uppercase(),
                step.reason
            );
        }
        let account = c
            .payment
            .get_account(payment::GetAccountRequest {
                customer_id: who.clone(),
            })
            .await?
            .into_inner()
            .account;
        println!(
            "  balance now {}",
            fmt_money(account.and_then(|a| a.balance).as_ref())
        );
        // The notification is recorded by its own consumer; give it a moment.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let notes = c
                .notification
                .list_notifications(notification::ListNotificationsRequest {
                    order_id: id.clone(),
                    ..Default::default()
                })
                .await?
                .into_inner()
                .notifications;
            let expected = if name == "dave" { 2 } else { 1 };
            if notes.len() >= expected || Instant::now() > deadline {
                for n in notes.iter().rev() {
                    println!(
                        "  notified via {} ({:?}): {}",
                        n.channel,
                        n.status(),
                        n.message
                    );
                }
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    println!("\nEvery order reached a terminal state.");
    Ok(())
}

async fn wait_terminal(c: &mut Clients, id: &str) -> anyhow::Result<order::Order> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let current = c
            .order
            .get_order(order::GetOrderRequest {
                order_id: id.into(),
            })
            .await?
            .into_inner()
            .order
            .unwrap_or_default();
        if current.status() != order::OrderStatus::Pending {
            return Ok(current);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "order {id} still pending after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
