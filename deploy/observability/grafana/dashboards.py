#!/usr/bin/env python3
"""Writes the Grafana dashboards of the shop suite (grafana/dashboards/*.json).

The dashboards are generated so that the five of them stay consistent (same panels for the
same concerns, same units); edit this file and rerun it:

    python3 deploy/observability/grafana/dashboards.py

Every metric a panel queries is checked to be exported by the running services
(crates/suite/tests/observability.rs), so a renamed metric fails the tests, not the dashboard.
"""

import json
import pathlib

DS = {"type": "prometheus", "uid": "prometheus"}
OUT = pathlib.Path(__file__).resolve().parent / "dashboards"


def panel(title, targets, unit="short", width=12, kind="timeseries", description=""):
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DS,
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
        "targets": [
            {"datasource": DS, "expr": expr, "legendFormat": legend, "refId": chr(65 + i)}
            for i, (expr, legend) in enumerate(targets)
        ],
        "_width": width,
    }


def row(title):
    return {"type": "row", "title": title, "collapsed": False, "_width": 24}


def layout(panels):
    x = y = 0
    line_height = 0
    out = []
    for i, p in enumerate(panels):
        w = p.pop("_width")
        h = 1 if p["type"] == "row" else 8
        if x + w > 24 or p["type"] == "row":
            x, y = 0, y + line_height
            line_height = 0
        p["gridPos"] = {"x": x, "y": y, "w": w, "h": h}
        p["id"] = i + 1
        x += w
        line_height = max(line_height, h)
        if p["type"] == "row":
            x, y, line_height = 0, y + h, 0
        out.append(p)
    return out


def dashboard(uid, title, description, panels, tags):
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["shop"] + tags,
        "editable": True,
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "10s",
        "timezone": "browser",
        "templating": {"list": []},
        "annotations": {"list": []},
        "links": [
            {"title": "Shop dashboards", "type": "dashboards", "tags": ["shop"], "asDropdown": True}
        ],
        "panels": layout(panels),
    }


def grpc_panels(job):
    sel = f'job="{job}", grpc_service!~"grpc[.].*"'
    return [
        row("gRPC (health and reflection excluded)"),
        panel(
            "Requests by method and code",
            [(f"sum by (grpc_method, grpc_code) (rate(grpc_server_handled_total{{{sel}}}[$__rate_interval]))", "{{grpc_method}} {{grpc_code}}")],
            "reqps",
        ),
        panel(
            "Latency p50 / p99 by method",
            [
                (f"histogram_quantile(0.5, sum by (grpc_method, le) (rate(grpc_server_handling_seconds_bucket{{{sel}}}[$__rate_interval])))", "p50 {{grpc_method}}"),
                (f"histogram_quantile(0.99, sum by (grpc_method, le) (rate(grpc_server_handling_seconds_bucket{{{sel}}}[$__rate_interval])))", "p99 {{grpc_method}}"),
            ],
            "s",
        ),
    ]


def consumer_panels(job):
    sel = f'job="{job}"'
    return [
        row("Consumers"),
        panel(
            "Records by outcome",
            [(f"sum by (topic, outcome) (rate(shop_consumer_messages_total{{{sel}}}[$__rate_interval]))", "{{topic}} {{outcome}}")],
            "ops",
            8,
        ),
        panel(
            "Handler errors and dead letters",
            [
                (f"sum by (topic, kind) (rate(shop_consumer_handler_errors_total{{{sel}}}[$__rate_interval]))", "{{topic}} {{kind}} errors"),
                (f"sum by (dead_letter_topic) (increase(shop_dead_letters_total{{{sel}}}[$__rate_interval]))", "dead-lettered to {{dead_letter_topic}}"),
            ],
            "short",
            8,
        ),
        panel(
            "Lag",
            [(f"sum by (group, topic) (max by (group, topic, partition) (shop_consumer_lag{{{sel}}}))", "{{group}} {{topic}}")],
            "short",
            8,
            description="Records not committed yet, read from the broker (every replica reports every partition: the max counts each once). Grows while the group applies nothing (alert ShopConsumerNoProgress).",
        ),
        panel(
            "Fetch to commit p99, append to commit p99",
            [
                (f"histogram_quantile(0.99, sum by (topic, le) (rate(shop_consumer_process_duration_seconds_bucket{{{sel}}}[$__rate_interval])))", "fetch→commit {{topic}}"),
                (f"histogram_quantile(0.99, sum by (topic, le) (rate(shop_consumer_event_delay_seconds_bucket{{{sel}}}[$__rate_interval])))", "append→commit {{topic}}"),
            ],
            "s",
        ),
        panel(
            "Records per transaction (p50)",
            [(f"histogram_quantile(0.5, sum by (le) (rate(shop_consumer_batch_size_bucket{{{sel}}}[$__rate_interval])))", "p50 batch")],
            "short",
        ),
        panel(
            "Eventing tables (rows)",
            [(f"max by (table) (shop_eventing_table_rows{{{sel}}})", "{{table}}")],
            "short",
            description="Rows of the outbox, inbox and dead-letter tables. The inbox grows for its retention window "
            "(<SERVICE>_INBOX_RETENTION_MS) after a first start, then stays flat: rows past the window are deleted.",
        ),
        panel(
            "Rows deleted past the retention window",
            [(f"sum by (table) (rate(shop_consumer_retention_deleted_rows_total{{{sel}}}[$__rate_interval]))", "{{table}}")],
            "ops",
        ),
    ]


def outbox_panels(job):
    sel = f'job="{job}"'
    return [
        row("Outbox and relay"),
        panel(
            "Backlog",
            [(f"sum(shop_outbox_backlog_events{{{sel}}})", "events not yet in Kafka")],
            "short",
            6,
        ),
        panel(
            "Oldest unpublished event",
            [(f"max(shop_outbox_oldest_event_age_seconds{{{sel}}})", "age")],
            "s",
            6,
        ),
        panel(
            "Published and relay errors",
            [
                (f"sum by (topic) (rate(shop_outbox_published_total{{{sel}}}[$__rate_interval]))", "published {{topic}}"),
                (f"sum(rate(shop_outbox_relay_errors_total{{{sel}}}[$__rate_interval]))", "relay errors"),
                (f"sum(shop_outbox_relay_leader{{{sel}}})", "replicas relaying"),
            ],
            "short",
            6,
        ),
        panel(
            "Append to Kafka ack p50 / p99",
            [
                (f"histogram_quantile(0.5, sum by (le) (rate(shop_outbox_publish_latency_seconds_bucket{{{sel}}}[$__rate_interval])))", "p50"),
                (f"histogram_quantile(0.99, sum by (le) (rate(shop_outbox_publish_latency_seconds_bucket{{{sel}}}[$__rate_interval])))", "p99"),
                (f"histogram_quantile(0.99, sum by (le) (rate(shop_outbox_relay_batch_duration_seconds_bucket{{{sel}}}[$__rate_interval])))", "p99 relay round"),
            ],
            "s",
            6,
        ),
    ]


def db_panels(job):
    sel = f'job="{job}"'
    return [
        row("Database pool"),
        panel(
            "Connections",
            [
                (f"sum by (state) (shop_db_pool_connections{{{sel}}})", "{{state}}"),
                (f"sum(shop_db_pool_max_connections{{{sel}}})", "max"),
            ],
            "short",
            24,
        ),
    ]


BUSINESS = {
    "order": [
        panel(
            "Orders",
            [
                ('sum(rate(shop_orders_placed_total{job="order"}[$__rate_interval]))', "placed"),
                ('sum(rate(shop_orders_confirmed_total{job="order"}[$__rate_interval]))', "confirmed"),
                ('sum by (reason) (rate(shop_orders_cancelled_total{job="order"}[$__rate_interval]))', "cancelled {{reason}}"),
            ],
            "ops",
        ),
        panel(
            "Inventory calls from PlaceOrder (client side)",
            [
                ('sum by (grpc_code) (rate(grpc_client_handled_total{job="order"}[$__rate_interval]))', "{{grpc_code}}"),
                ('histogram_quantile(0.99, sum by (le) (rate(grpc_client_handling_seconds_bucket{job="order"}[$__rate_interval])))', "p99 latency"),
            ],
            "short",
            description="Deadline and circuit breaker: UNAVAILABLE here is what PlaceOrder answers promptly instead of hanging.",
        ),
        panel(
            "Oldest PENDING order (saga deadline)",
            [
                ('max(shop_orders_pending_oldest_age_seconds{job="order"})', "oldest pending"),
            ],
            "s",
            description="Sagas end in seconds; at ORDER_SAGA_DEADLINE_MS the sweeper cancels what is still PENDING (reason timeout). Alert: ShopOrdersPendingTooLong.",
        ),
        panel(
            "Orders past the deadline, late replies compensated",
            [
                ('max(shop_orders_pending_overdue{job="order"})', "pending past the deadline"),
                ('sum by (compensation) (increase(shop_orders_late_compensations_total{job="order"}[$__rate_interval]))', "late reply: {{compensation}} requested"),
            ],
            "short",
            description="Past the deadline and still PENDING means the sweeper cannot cancel them (ShopOrdersPendingPastDeadline). A late reply is a capture or reservation that reached a cancelled order.",
        ),
    ],
    "inventory": [
        panel(
            "Reservations",
            [
                ('sum(rate(shop_stock_reservations_total{job="inventory"}[$__rate_interval]))', "reserved"),
                ('sum(rate(shop_stock_rejections_total{job="inventory"}[$__rate_interval]))', "rejected (out of stock)"),
                ('sum(rate(shop_stock_releases_total{job="inventory"}[$__rate_interval]))', "released or returned"),
            ],
            "ops",
            24,
        ),
    ],
    "payment": [
        panel(
            "Payments",
            [
                ('sum(rate(shop_payments_captured_total{job="payment"}[$__rate_interval]))', "captured"),
                ('sum by (reason) (rate(shop_payments_declined_total{job="payment"}[$__rate_interval]))', "declined {{reason}}"),
                ('sum(rate(shop_payments_refunded_total{job="payment"}[$__rate_interval]))', "refunded"),
            ],
            "ops",
            24,
        ),
    ],
    "notification": [
        panel(
            "Notifications",
            [
                ('sum by (kind) (rate(shop_notifications_recorded_total{job="notification"}[$__rate_interval]))', "recorded {{kind}}"),
                ('sum by (channel) (rate(shop_notifications_delivered_total{job="notification"}[$__rate_interval]))', "delivered via {{channel}}"),
                ('sum by (channel) (rate(shop_notifications_failed_total{job="notification"}[$__rate_interval]))', "failed via {{channel}}"),
                ('sum by (channel) (rate(shop_notification_attempts_failed_total{job="notification"}[$__rate_interval]))', "failed attempts via {{channel}}"),
            ],
            "ops",
            24,
        ),
    ],
}


def service_dashboard(job):
    panels = [row("Business")] + BUSINESS[job] + grpc_panels(job) + consumer_panels(job)
    if job != "notification":
        panels += outbox_panels(job)
    panels += db_panels(job)
    return dashboard(
        f"shop-{job}",
        f"Shop / {job}",
        f"The {job} service: its business outcomes, gRPC RED, consumers, outbox and database pool.",
        panels,
        [job],
    )


def overview():
    api = 'grpc_service!~"grpc[.].*"'
    panels = [
        row("The saga"),
        panel(
            "Orders: placed, confirmed, cancelled by reason",
            [
                ("sum(rate(shop_orders_placed_total[$__rate_interval]))", "placed"),
                ("sum(rate(shop_orders_confirmed_total[$__rate_interval]))", "confirmed"),
                ("sum by (reason) (rate(shop_orders_cancelled_total[$__rate_interval]))", "cancelled {{reason}}"),
            ],
            "ops",
        ),
        panel(
            "Saga hops: append to effect, p99",
            [("histogram_quantile(0.99, sum by (group, topic, le) (rate(shop_consumer_event_delay_seconds_bucket[$__rate_interval])))", "{{topic}} → {{group}}")],
            "s",
            description="From an event's append in its producer's transaction to the commit of its effect in a consumer.",
        ),
        panel(
            "Stock and money",
            [
                ("sum(rate(shop_stock_reservations_total[$__rate_interval]))", "stock reserved"),
                ("sum(rate(shop_stock_rejections_total[$__rate_interval]))", "stock rejected"),
                ("sum(rate(shop_payments_captured_total[$__rate_interval]))", "payments captured"),
                ("sum by (reason) (rate(shop_payments_declined_total[$__rate_interval]))", "declined {{reason}}"),
                ("sum(rate(shop_payments_refunded_total[$__rate_interval]))", "refunded"),
            ],
            "ops",
        ),
        panel(
            "Notifications",
            [
                ("sum by (channel) (rate(shop_notifications_delivered_total[$__rate_interval]))", "delivered {{channel}}"),
                ("sum by (channel) (rate(shop_notifications_failed_total[$__rate_interval]))", "failed {{channel}}"),
            ],
            "ops",
        ),
        row("Where it could be stuck"),
        panel(
            "Oldest unpublished event by service",
            [("max by (job) (shop_outbox_oldest_event_age_seconds)", "{{job}}")],
            "s",
            8,
            description="Grows while a broker is down or a relay fails (alert ShopOutboxEventsStuck).",
        ),
        panel(
            "Consumer lag by group",
            [("sum by (group, topic) (max by (group, topic, partition) (shop_consumer_lag))", "{{group}} {{topic}}")],
            "short",
            8,
            description="Records not committed yet, read from the broker. Grows while a group applies nothing (alert ShopConsumerNoProgress).",
        ),
        panel(
            "Dead letters",
            [("sum by (group, dead_letter_topic) (increase(shop_dead_letters_total[$__rate_interval]))", "{{group}} → {{dead_letter_topic}}")],
            "short",
            8,
        ),
        row("gRPC"),
        panel(
            "Requests by service and code",
            [(f"sum by (job, grpc_code) (rate(grpc_server_handled_total{{{api}}}[$__rate_interval]))", "{{job}} {{grpc_code}}")],
            "reqps",
        ),
        panel(
            "Latency SLO: share of calls over 250 ms (budget 1%)",
            [("shop:grpc_slow_ratio:rate5m", "{{job}} 5m"), ("shop:grpc_slow_ratio:rate1h", "{{job}} 1h")],
            "percentunit",
            description="Recording rules of alerts.yml; the burn-rate alerts fire at 14.4x and 6x the budget.",
        ),
    ]
    return dashboard(
        "shop-overview",
        "Shop / saga overview",
        "Orders through inventory, payment and notification: outcomes, hop latency, and where the flow could be stuck.",
        panels,
        ["overview"],
    )


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    boards = {"overview": overview()}
    for job in ("order", "inventory", "payment", "notification"):
        boards[job] = service_dashboard(job)
    for name, board in boards.items():
        (OUT / f"{name}.json").write_text(json.dumps(board, indent=2) + "\n")
        print(f"wrote {OUT / f'{name}.json'}")


if __name__ == "__main__":
    main()
