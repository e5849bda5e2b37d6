//! `shopctl order ORDER_ID`: the order's saga as one timeline, assembled from each service's
//! API (the order's status history, the reservation, the payment, the notifications) and the
//! dead letters about it on every admin API, with what the order waits for.

use std::process::ExitCode;

use anyhow::bail;
use chrono::{DateTime, SecondsFormat, Utc};
use clap::Args;
use serde_json::json;
use shop_proto::admin::v1 as admin_pb;
use shop_proto::inventory::v1 as inventory_pb;
use shop_proto::notification::v1 as notification_pb;
use shop_proto::order::v1 as order_pb;
use shop_proto::payment::v1 as payment_pb;
use tonic::Code;

use crate::Context;
use crate::api;
use crate::dlq;
use crate::output::{self, Format, Table, short};

#[derive(Debug, Args)]
pub(crate) struct OrderArgs {
    /// The order's id.
    order_id: String,
}

/// One line of the timeline.
#[derive(Debug, Clone)]
struct Step {
    at: Option<DateTime<Utc>>,
    service: &'static str,
    what: String,
}

fn status_name(status: i32) -> String {
    order_pb::OrderStatus::try_from(status)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("ORDER_STATUS_")
                .to_owned()
        })
        .unwrap_or_else(|_| status.to_string())
}

fn payment_status_name(status: i32) -> String {
    payment_pb::PaymentStatus::try_from(status)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("PAYMENT_STATUS_")
                .to_owned()
        })
        .unwrap_or_else(|_| status.to_string())
}

fn delivery_name(status: i32) -> String {
    notification_pb::DeliveryStatus::try_from(status)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("DELIVERY_STATUS_")
                .to_owned()
        })
        .unwrap_or_else(|_| status.to_string())
}

fn at(t: Option<&prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    t.and_then(output::to_utc)
}

/// A call whose NOT_FOUND means "nothing yet" (no reservation, no payment).
fn optional<T>(
    service: &str,
    what: &str,
    answer: Result<tonic::Response<T>, tonic::Status>,
) -> anyhow::Result<Option<T>> {
    match answer {
        Ok(response) => Ok(Some(response.into_inner())),
        Err(status) if status.code() == Code::NotFound => Ok(None),
        Err(status) => Err(api::failed(service, what, &status)),
    }
}

pub(crate) async fn run(ctx: &Context, args: &OrderArgs) -> anyhow::Result<ExitCode> {
    let id = args.order_id.clone();
    let order = optional(
        "order",
        "reading the order",
        ctx.clients
            .orders()?
            .get_order(order_pb::GetOrderRequest {
                order_id: id.clone(),
            })
            .await,
    )?
    .and_then(|r| r.order);
    let Some(order) = order else {
        bail!("order {id} not found");
    };
    let reservation = optional(
        "inventory",
        "reading the reservation",
        ctx.clients
            .inventory()?
            .get_reservation(inventory_pb::GetReservationRequest {
                order_id: id.clone(),
            })
            .await,
    )?
    .and_then(|r| r.reservation);
    let payment = optional(
        "payment",
        "reading the payment",
        ctx.clients
            .payments()?
            .get_payment(payment_pb::GetPaymentRequest {
                order_id: id.clone(),
            })
            .await,
    )?
    .and_then(|r| r.payment);
    let notifications = ctx
        .clients
        .notifications()?
        .list_notifications(notification_pb::ListNotificationsRequest {
            order_id: id.clone(),
            page_size: 100,
            ..Default::default()
        })
        .await
        .map_err(|s| api::failed("notification", "listing notifications", &s))?
        .into_inner()
        .notifications;
    let filter = dlq::Filter::for_order(&id);
    let dead_letters = dlq::fetch(ctx, &filter, 1000).await?;

    let mut steps = Vec::new();
    for change in &order.history {
        steps.push(Step {
            at: at(change.at.as_ref()),
            service: "order",
            what: format!("{}: {}", status_name(change.status), change.reason),
        });
    }
    if let Some(r) = &reservation {
        let lines: Vec<String> = r
            .lines
            .iter()
            .map(|l| format!("{} x{}", l.sku, l.quantity))
            .collect();
        steps.push(Step {
            at: at(r.created_at.as_ref()),
            service: "inventory",
            what: format!("reservation recorded ({})", lines.join(", ")),
        });
        if r.updated_at != r.created_at {
            steps.push(Step {
                at: at(r.updated_at.as_ref()),
                service: "inventory",
                what: format!("reservation {}", r.status),
            });
        } else {
            steps.last_mut().expect("just pushed").what =
                format!("reservation {} ({})", r.status, lines.join(", "));
        }
    }
    if let Some(p) = &payment {
        let amount = p
            .amount
            .as_ref()
            .map(|m| format!(" {} {}", m.amount_minor, m.currency))
            .unwrap_or_default();
        let reason = if p.decline_reason.is_empty() {
            String::new()
        } else {
            format!(": {}", p.decline_reason)
        };
        steps.push(Step {
            at: at(p.updated_at.as_ref()),
            service: "payment",
            what: format!("payment {}{amount}{reason}", payment_status_name(p.status)),
        });
    }
    for n in &notifications {
        steps.push(Step {
            at: at(n.created_at.as_ref()),
            service: "notification",
            what: format!(
                "{} notification by {} ({}, {} attempt(s))",
                n.kind,
                n.channel,
                delivery_name(n.status),
                n.attempts
            ),
        });
        if let Some(delivered) = at(n.delivered_at.as_ref()) {
            steps.push(Step {
                at: Some(delivered),
                service: "notification",
                what: format!("{} delivered", n.kind),
            });
        }
    }
    for (service, d) in &dead_letters {
        steps.push(Step {
            at: at(d.failed_at.as_ref()),
            service,
            what: format!(
                "DEAD-LETTERED {} at {} ({}/{}@{}, {} attempt(s), {} replay(s)): {}",
                d.event_type,
                d.consumer,
                d.topic,
                d.partition,
                d.offset,
                d.attempts,
                d.replays,
                d.error
            ),
        });
    }
    steps.sort_by_key(|s| s.at);

    let trace_id = notifications
        .iter()
        .map(|n| n.trace_id.clone())
        .find(|t| !t.is_empty())
        .or_else(|| dead_letters.iter().find_map(|(_, d)| dlq::trace_id(d)));
    let status = status_name(order.status);
    let diagnosis = diagnose(
        &status,
        reservation.as_ref(),
        payment.as_ref(),
        &dead_letters,
        &id,
    );

    match ctx.format {
        Format::Json => output::print_json(&json!({
            "order_id": order.order_id,
            "customer_id": order.customer_id,
            "status": status,
            "created_at": output::json_time(order.created_at.as_ref()),
            "trace_id": trace_id,
            "reservation": reservation.as_ref().map(|r| json!({
                "status": r.status,
                "lines": r.lines.iter().map(|l| json!({"sku": l.sku, "quantity": l.quantity})).collect::<Vec<_>>(),
            })),
            "payment": payment.as_ref().map(|p| json!({
                "status": payment_status_name(p.status),
                "amount_minor": p.amount.as_ref().map(|m| m.amount_minor),
                "currency": p.amount.as_ref().map(|m| m.currency.clone()),
                "decline_reason": p.decline_reason,
            })),
            "notifications": notifications.iter().map(|n| json!({
                "kind": n.kind, "channel": n.channel, "status": delivery_name(n.status), "attempts": n.attempts,
            })).collect::<Vec<_>>(),
            "dead_letters": dead_letters.iter().map(|(s, d)| dlq::dead_letter_json(s, d)).collect::<Vec<_>>(),
            "timeline": steps.iter().map(|s| json!({
                "at": s.at.map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true)),
                "service": s.service,
                "what": s.what,
            })).collect::<Vec<_>>(),
            "diagnosis": diagnosis,
        })),
        Format::Table => {
            println!(
                "Order {} of {}: {status}",
                order.order_id, order.customer_id
            );
            if let Some(trace) = &trace_id {
                println!("Trace: {trace}");
            }
            println!();
            let mut table = Table::new(&["AT", "SERVICE", "WHAT"]);
            for s in &steps {
                table.row(vec![
                    s.at.map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
                        .unwrap_or_default(),
                    s.service.to_owned(),
                    short(&s.what, 220),
                ]);
            }
            print!("{}", table.render());
            println!();
            println!("{diagnosis}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What the order waits for, in a sentence or two.
fn diagnose(
    status: &str,
    reservation: Option<&inventory_pb::Reservation>,
    payment: Option<&payment_pb::Payment>,
    dead_letters: &[(&'static str, admin_pb::DeadLetter)],
    order_id: &str,
) -> String {
    if status != "PENDING" {
        return match dead_letters.first() {
            None => format!("The saga is over: {status}."),
            Some((_, d)) => format!(
                "The saga is over ({status}), but {} dead letter(s) about it remain (e.g. {} at {}): `shopctl dlq show {}`; purge them once understood.",
                dead_letters.len(),
                d.event_type,
                d.consumer,
                d.event_id
            ),
        };
    }
    if let Some((_, d)) = dead_letters.first() {
        return format!(
            "STUCK: {} could not apply {} and dead-lettered it: {}\nFix the cause, then `shopctl dlq replay --order-id {order_id} --dry-run` and again without --dry-run; `shopctl dlq show {}` for the record.",
            d.consumer,
            d.event_type,
            short(&d.error, 300),
            d.event_id
        );
    }
    match (reservation, payment) {
        (None, _) => "PENDING: waiting for inventory to reserve the stock (its consumer of the order events: `shopctl lag`).".into(),
        (Some(r), None) if r.status == "reserved" => {
            "PENDING: stock reserved; waiting for payment to take the payment (its consumer of the order events: `shopctl lag`; the order service's outbox: `shopctl outbox status`).".into()
        }
        (Some(r), None) => format!(
            "PENDING: the reservation is {}; waiting for the order service to apply inventory's answer (`shopctl lag`, `shopctl outbox status --service inventory`).",
            r.status
        ),
        (Some(_), Some(p)) => format!(
            "PENDING: the payment is {}; waiting for the order service to apply payment's answer (`shopctl lag`, `shopctl outbox status --service payment`).",
            payment_status_name(p.status)
        ),
    }
}
