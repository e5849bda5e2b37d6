-- One CONFIRMED order's work in the notification service's database (pgbench script; one
-- execution = one order). Run by deploy/bench-ceiling.sh; the statements are the service's, in
-- its order. The service publishes nothing: no outbox relay (services/notification/src/
-- startup.rs:1-4).
--
-- commits per order: 3
-- read-only per order: 2
-- relay: no
\set cust :client_id % 1000
\set part random(0, 5)
\set off random(0, 1000000000)
-- The ids the services get from elsewhere (UUIDv7 like theirs); the bench's only extra statement.
SELECT ceiling_uuid7() AS order_id, ceiling_uuid7() AS ev_placed, ceiling_uuid7() AS ev_requested, ceiling_uuid7() AS ev_confirmed, 'load-' || :cust AS customer_id \gset

-- OrderPlaced and PaymentRequested on order.events.v1: not told to the customer
-- (services/notification/src/inbound/kafka.rs:59-62), so no inbox row, but each batch opens a
-- transaction and looks its record up (crates/eventing/src/consumer/apply.rs:172-173,367-370):
-- read-only, no WAL flush.
BEGIN;
SELECT event_id, true, 0 FROM eventing_inbox WHERE consumer = 'notification-service' AND event_id = ANY(ARRAY[:ev_placed]) UNION ALL SELECT event_id, false, replays FROM eventing_dead_letter WHERE consumer = 'notification-service' AND event_id = ANY(ARRAY[:ev_placed]);
COMMIT;
BEGIN;
SELECT event_id, true, 0 FROM eventing_inbox WHERE consumer = 'notification-service' AND event_id = ANY(ARRAY[:ev_requested]) UNION ALL SELECT event_id, false, replays FROM eventing_dead_letter WHERE consumer = 'notification-service' AND event_id = ANY(ARRAY[:ev_requested]);
COMMIT;

-- OrderConfirmed: a PENDING notification (apply.rs:172-241; kafka.rs:24-37,55;
-- services/notification/src/app.rs:32-43; outbound/postgres.rs:86-88; the message of
-- domain.rs:106-109, the log channel of outbound/channels.rs:19-20).
BEGIN;
SELECT event_id, true, 0 FROM eventing_inbox WHERE consumer = 'notification-service' AND event_id = ANY(ARRAY[:ev_confirmed]) UNION ALL SELECT event_id, false, replays FROM eventing_dead_letter WHERE consumer = 'notification-service' AND event_id = ANY(ARRAY[:ev_confirmed]);
INSERT INTO eventing_inbox (consumer, event_id, event_type, topic, kafka_partition, kafka_offset) VALUES ('notification-service', :ev_confirmed, 'shop.order.v1.OrderConfirmed', 'order.events.v1', :part, :off) ON CONFLICT DO NOTHING;
INSERT INTO notifications (notification_id, order_id, customer_id, kind, message, channel, traceparent) VALUES (ceiling_uuid7(), :order_id, :customer_id, 'order_confirmed', 'Your order ' || :order_id || ' is confirmed: total 1.00 EUR.', 'log', '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01') ON CONFLICT (order_id, kind) DO NOTHING;
COMMIT;

-- The delivery worker claims the due notifications (one statement, its own commit:
-- app.rs:187,215-222; outbound/postgres.rs:155-169), up to its free delivery slots; here one per
-- order (the most claims it makes: under load a claim takes several). The lease is the log
-- channel's 30 s (startup.rs:21,58-60). Any client's due notification may be claimed.
WITH due AS (SELECT n.notification_id FROM notifications n WHERE n.status = 'PENDING' AND n.next_attempt_at <= now() AND NOT EXISTS (SELECT 1 FROM notifications e WHERE e.order_id = n.order_id AND e.status = 'PENDING' AND (e.created_at, e.notification_id) < (n.created_at, n.notification_id)) ORDER BY n.next_attempt_at LIMIT 1 FOR UPDATE OF n SKIP LOCKED), claimed AS (UPDATE notifications n SET next_attempt_at = now() + 30000 * interval '1 millisecond' FROM due WHERE n.notification_id = due.notification_id RETURNING n.notification_id, n.order_id, n.customer_id, n.kind, n.message, n.channel, n.status, n.attempts, n.created_at, n.delivered_at, n.traceparent) SELECT count(*) AS claimed, coalesce(min(notification_id::text), '') AS claimed_id FROM claimed \gset
-- Delivered (the log channel cannot fail): the attempt recorded in a transaction of its own
-- (app.rs:248-268,302-307; outbound/postgres.rs:214-246).
\if :claimed > 0
BEGIN;
UPDATE notifications SET status = 'DELIVERED', attempts = 1, channel = 'log', next_attempt_at = now() + 0 * interval '1 millisecond', delivered_at = CASE WHEN 'DELIVERED'::text = 'DELIVERED' THEN now() END WHERE notification_id = :claimed_id AND status = 'PENDING' AND attempts = 1 - 1;
INSERT INTO delivery_attempts (notification_id, attempt, outcome, error, http_status) VALUES (:claimed_id, 1, 'delivered', NULL, NULL);
COMMIT;
\endif
