-- One CONFIRMED order's work in the payment service's database (pgbench script; one execution =
-- one order). Run by deploy/bench-ceiling.sh; the statements are the service's, in its order,
-- with the values of one order of deploy/load.sh's shape (1.00 EUR from the client's own
-- customer's account).
--
-- commits per order: 1
-- read-only per order: 2
-- relay: yes
\set cust :client_id % 1000
\set lk_h hash(:cust, 3) % 2147483647
\set lk_l hash(:cust, 4) % 2147483647
\set part random(0, 5)
\set off random(0, 1000000000)
-- The ids the services get from elsewhere (UUIDv7 like theirs); the bench's only extra statement.
SELECT ceiling_uuid7() AS order_id, ceiling_uuid7() AS ev_placed, ceiling_uuid7() AS ev_requested, ceiling_uuid7() AS ev_confirmed, 'load-' || :cust AS customer_id \gset

-- OrderPlaced on order.events.v1: not payment's (services/payment/src/inbound/kafka.rs:79-84),
-- so no inbox row, but its batch opens a transaction and looks it up
-- (crates/eventing/src/consumer/apply.rs:172-173,367-370): read-only, no WAL flush.
BEGIN;
SELECT event_id, true, 0 FROM eventing_inbox WHERE consumer = 'payment-service' AND event_id = ANY(ARRAY[:ev_placed]) UNION ALL SELECT event_id, false, replays FROM eventing_dead_letter WHERE consumer = 'payment-service' AND event_id = ANY(ARRAY[:ev_placed]);
COMMIT;

-- PaymentRequested: the capture and PaymentCaptured (apply.rs:172-241; kafka.rs:26-38,58-59;
-- services/payment/src/app.rs:212-273).
BEGIN;
SELECT event_id, true, 0 FROM eventing_inbox WHERE consumer = 'payment-service' AND event_id = ANY(ARRAY[:ev_requested]) UNION ALL SELECT event_id, false, replays FROM eventing_dead_letter WHERE consumer = 'payment-service' AND event_id = ANY(ARRAY[:ev_requested]);
SELECT pg_advisory_xact_lock(h, l) FROM unnest(ARRAY[:lk_h]::int4[], ARRAY[:lk_l]::int4[]) AS k(h, l);
INSERT INTO eventing_inbox (consumer, event_id, event_type, topic, kafka_partition, kafka_offset) VALUES ('payment-service', :ev_requested, 'shop.order.v1.PaymentRequested', 'order.events.v1', :part, :off) ON CONFLICT DO NOTHING;
SELECT order_id, customer_id, amount_minor, currency, status, decline_reason, updated_at FROM payments WHERE order_id = :order_id;
SELECT customer_id, currency, balance_minor, status, opened_at FROM accounts WHERE customer_id = :customer_id FOR UPDATE;
INSERT INTO payments (order_id, customer_id, amount_minor, currency, status, decline_reason) VALUES (:order_id, :customer_id, 100, 'EUR', 'captured', NULL) ON CONFLICT DO NOTHING;
UPDATE accounts SET balance_minor = balance_minor + -100 WHERE customer_id = :customer_id RETURNING customer_id, currency, balance_minor, status, opened_at;
INSERT INTO eventing_outbox (event_id, topic, partition_key, event_type, source, payload, headers) VALUES (ceiling_uuid7(), 'payment.events.v1', :order_id, 'shop.payment.v1.PaymentCaptured', '/shop/payment-service', decode(repeat('0a', 75), 'hex'), '{"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}');
COMMIT;

-- OrderConfirmed: not payment's either (read-only, as OrderPlaced).
BEGIN;
SELECT event_id, true, 0 FROM eventing_inbox WHERE consumer = 'payment-service' AND event_id = ANY(ARRAY[:ev_confirmed]) UNION ALL SELECT event_id, false, replays FROM eventing_dead_letter WHERE consumer = 'payment-service' AND event_id = ANY(ARRAY[:ev_confirmed]);
COMMIT;
