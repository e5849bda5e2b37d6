-- One CONFIRMED order's work in the order service's database (pgbench script; one execution =
-- one order). Run by deploy/bench-ceiling.sh; the statements are the service's, in its order,
-- with the values of one order of deploy/load.sh's shape (one line, quantity 1, 1.00 EUR, the
-- client's own customer).
--
-- commits per order: 3
-- read-only per order: 1
-- relay: yes
\set sku random(1, :skus)
\set cust :client_id % 1000
\set part random(0, 5)
\set off random(0, 1000000000)
-- The ids the services get from elsewhere (UUIDv7 like theirs); the bench's only extra statement.
SELECT ceiling_uuid7() AS order_id, ceiling_uuid7() AS ev_reserved, ceiling_uuid7() AS ev_captured, 'load-' || :cust AS customer_id, 'sku-' || :sku AS sku_id, 'load-' || :cust || '|sku-' || :sku || 'x1' AS fingerprint \gset

-- PlaceOrder (gRPC): the idempotency look-up, outside any transaction
-- (services/order/src/app.rs place_order:67 -> existing_for_key:235-250; outbound/postgres.rs:157-158).
SELECT order_id FROM orders WHERE customer_id = :customer_id AND idempotency_key = :order_id;
-- record_order (app.rs record_order:348-372; postgres.rs insert_order:108-160,
-- add_history:245-260; crates/eventing/src/outbox.rs:136-138): the order, its line, its
-- history (each answered by its own RETURNING, no re-read), its OrderPlaced.
BEGIN;
INSERT INTO orders (order_id, customer_id, status, total_minor, currency, idempotency_key, request_fingerprint) VALUES (:order_id, :customer_id, 'pending', 100, 'EUR', :order_id, :fingerprint) ON CONFLICT (customer_id, idempotency_key) DO NOTHING RETURNING order_id, customer_id, status, cancellation_reason, total_minor, currency, payment_requested, request_fingerprint, created_at, updated_at;
INSERT INTO order_lines (order_id, line_no, sku, quantity, unit_price_minor) SELECT :order_id::uuid, l.n, l.sku, l.quantity, l.price FROM unnest(ARRAY[:sku_id]::text[], ARRAY[1]::int[], ARRAY[100]::bigint[]) WITH ORDINALITY AS l(sku, quantity, price, n);
INSERT INTO order_status_history (order_id, seq, status, reason) SELECT :order_id::uuid, coalesce(max(seq), 0) + 1, 'pending', 'placed' FROM order_status_history WHERE order_id = :order_id::uuid RETURNING status, reason, at;
INSERT INTO eventing_outbox (event_id, topic, partition_key, event_type, source, payload, headers) VALUES (ceiling_uuid7(), 'order.events.v1', :order_id, 'shop.order.v1.OrderPlaced', '/shop/order-service', decode(repeat('0a', 110), 'hex'), '{"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}');
COMMIT;

-- StockReserved, applied by the saga replies consumer (crates/eventing/src/consumer/apply.rs:
-- 172-241; services/order/src/app.rs on_reply:630,666-674; postgres.rs lock_order:178-185,
-- mark_payment_requested:283-295).
BEGIN;
SELECT event_id, true, 0 FROM eventing_inbox WHERE consumer = 'order-service' AND event_id = ANY(ARRAY[:ev_reserved]) UNION ALL SELECT event_id, false, replays FROM eventing_dead_letter WHERE consumer = 'order-service' AND event_id = ANY(ARRAY[:ev_reserved]);
INSERT INTO eventing_inbox (consumer, event_id, event_type, topic, kafka_partition, kafka_offset) VALUES ('order-service', :ev_reserved, 'shop.inventory.v1.StockReserved', 'inventory.events.v1', :part, :off) ON CONFLICT DO NOTHING;
SELECT order_id, customer_id, status, cancellation_reason, total_minor, currency, payment_requested, request_fingerprint, created_at, updated_at FROM orders WHERE order_id = :order_id FOR UPDATE;
UPDATE orders SET payment_requested = true, updated_at = clock_timestamp() WHERE order_id = :order_id;
INSERT INTO order_status_history (order_id, seq, status, reason) SELECT :order_id::uuid, coalesce(max(seq), 0) + 1, 'pending', 'stock reserved; payment requested' FROM order_status_history WHERE order_id = :order_id::uuid RETURNING status, reason, at;
INSERT INTO eventing_outbox (event_id, topic, partition_key, event_type, source, payload, headers) VALUES (ceiling_uuid7(), 'order.events.v1', :order_id, 'shop.order.v1.PaymentRequested', '/shop/order-service', decode(repeat('0a', 75), 'hex'), '{"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}');
COMMIT;

-- PaymentCaptured, applied by the same consumer: confirmed, and OrderConfirmed
-- (app.rs on_reply:630,679-697; postgres.rs set_status:265-281, order_lines:215-220).
BEGIN;
SELECT event_id, true, 0 FROM eventing_inbox WHERE consumer = 'order-service' AND event_id = ANY(ARRAY[:ev_captured]) UNION ALL SELECT event_id, false, replays FROM eventing_dead_letter WHERE consumer = 'order-service' AND event_id = ANY(ARRAY[:ev_captured]);
INSERT INTO eventing_inbox (consumer, event_id, event_type, topic, kafka_partition, kafka_offset) VALUES ('order-service', :ev_captured, 'shop.payment.v1.PaymentCaptured', 'payment.events.v1', :part, :off) ON CONFLICT DO NOTHING;
SELECT order_id, customer_id, status, cancellation_reason, total_minor, currency, payment_requested, request_fingerprint, created_at, updated_at FROM orders WHERE order_id = :order_id FOR UPDATE;
UPDATE orders SET status = 'confirmed', cancellation_reason = NULL, updated_at = clock_timestamp() WHERE order_id = :order_id;
INSERT INTO order_status_history (order_id, seq, status, reason) SELECT :order_id::uuid, coalesce(max(seq), 0) + 1, 'confirmed', 'payment captured' FROM order_status_history WHERE order_id = :order_id::uuid RETURNING status, reason, at;
SELECT sku, quantity, unit_price_minor FROM order_lines WHERE order_id = :order_id ORDER BY line_no;
INSERT INTO eventing_outbox (event_id, topic, partition_key, event_type, source, payload, headers) VALUES (ceiling_uuid7(), 'order.events.v1', :order_id, 'shop.order.v1.OrderConfirmed', '/shop/order-service', decode(repeat('0a', 110), 'hex'), '{"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}');
COMMIT;
