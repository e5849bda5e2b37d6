-- One CONFIRMED order's work in the inventory service's database (pgbench script; one execution
-- = one order). Run by deploy/bench-ceiling.sh; the statements are the service's, in its order,
-- with the values of one order of deploy/load.sh's shape (one line of one sku, quantity 1).
--
-- commits per order: 2
-- read-only per order: 2
-- relay: yes
\set sku random(1, :skus)
\set lk_h hash(:sku, 1) % 2147483647
\set lk_l hash(:sku, 2) % 2147483647
\set part random(0, 5)
\set off random(0, 1000000000)
-- The ids the services get from elsewhere (UUIDv7 like theirs); the bench's only extra statement.
SELECT ceiling_uuid7() AS order_id, ceiling_uuid7() AS ev_placed, ceiling_uuid7() AS ev_requested, ceiling_uuid7() AS ev_confirmed, 'sku-' || :sku AS sku_id \gset

-- PlaceOrder prices the order from the catalog first: ListProducts, outside any transaction
-- (services/order/src/outbound/inventory.rs:70-79 -> services/inventory/src/app.rs:139;
-- outbound/postgres.rs:82-85).
SELECT sku, name, unit_price_minor, currency, on_hand, reserved, sold FROM products WHERE (ARRAY[:sku_id]::text[] IS NULL OR sku = ANY(ARRAY[:sku_id]::text[])) AND sku > '' ORDER BY sku LIMIT 1;

-- OrderPlaced, applied by the order events consumer: the reservation and StockReserved
-- (crates/eventing/src/consumer/apply.rs:172-241; services/inventory/src/inbound/kafka.rs:
-- 26-36,58-59; app.rs:209-253).
BEGIN;
SELECT event_id, true, 0 FROM eventing_inbox WHERE consumer = 'inventory-service' AND event_id = ANY(ARRAY[:ev_placed]) UNION ALL SELECT event_id, false, replays FROM eventing_dead_letter WHERE consumer = 'inventory-service' AND event_id = ANY(ARRAY[:ev_placed]);
SELECT pg_advisory_xact_lock(h, l) FROM unnest(ARRAY[:lk_h]::int4[], ARRAY[:lk_l]::int4[]) AS k(h, l);
INSERT INTO eventing_inbox (consumer, event_id, event_type, topic, kafka_partition, kafka_offset) VALUES ('inventory-service', :ev_placed, 'shop.order.v1.OrderPlaced', 'order.events.v1', :part, :off) ON CONFLICT DO NOTHING;
SELECT status FROM reservations WHERE order_id = :order_id FOR UPDATE;
SELECT sku, on_hand, reserved FROM products WHERE sku = ANY(ARRAY[:sku_id]::text[]) ORDER BY sku FOR UPDATE;
INSERT INTO reservations (order_id, status) VALUES (:order_id, 'reserved') ON CONFLICT DO NOTHING;
INSERT INTO reservation_lines (order_id, sku, quantity) SELECT :order_id::text, * FROM unnest(ARRAY[:sku_id]::text[], ARRAY[1]::bigint[]);
UPDATE products SET on_hand = on_hand + 0, reserved = reserved + 1, sold = sold + 0, updated_at = now() WHERE sku = :sku_id;
INSERT INTO eventing_outbox (event_id, topic, partition_key, event_type, source, payload, headers) VALUES (ceiling_uuid7(), 'inventory.events.v1', :order_id, 'shop.inventory.v1.StockReserved', '/shop/inventory-service', decode(repeat('0a', 60), 'hex'), '{"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}');
COMMIT;

-- PaymentRequested, on the same topic: not inventory's (kafka.rs:72-78), so no inbox row and
-- no handler, but its batch still opens a transaction and looks the record up (apply.rs:172-173,
-- 367-370): read-only, no WAL flush.
BEGIN;
SELECT event_id, true, 0 FROM eventing_inbox WHERE consumer = 'inventory-service' AND event_id = ANY(ARRAY[:ev_requested]) UNION ALL SELECT event_id, false, replays FROM eventing_dead_letter WHERE consumer = 'inventory-service' AND event_id = ANY(ARRAY[:ev_requested]);
COMMIT;

-- OrderConfirmed: the reserved unit is sold (kafka.rs:37-38,60-61; app.rs:280-298).
BEGIN;
SELECT event_id, true, 0 FROM eventing_inbox WHERE consumer = 'inventory-service' AND event_id = ANY(ARRAY[:ev_confirmed]) UNION ALL SELECT event_id, false, replays FROM eventing_dead_letter WHERE consumer = 'inventory-service' AND event_id = ANY(ARRAY[:ev_confirmed]);
SELECT sku FROM reservation_lines WHERE order_id = :order_id;
SELECT pg_advisory_xact_lock(h, l) FROM unnest(ARRAY[:lk_h]::int4[], ARRAY[:lk_l]::int4[]) AS k(h, l);
INSERT INTO eventing_inbox (consumer, event_id, event_type, topic, kafka_partition, kafka_offset) VALUES ('inventory-service', :ev_confirmed, 'shop.order.v1.OrderConfirmed', 'order.events.v1', :part, :off) ON CONFLICT DO NOTHING;
SELECT status FROM reservations WHERE order_id = :order_id FOR UPDATE;
SELECT sku, quantity FROM reservation_lines WHERE order_id = :order_id ORDER BY sku;
UPDATE products SET on_hand = on_hand + -1, reserved = reserved + -1, sold = sold + 1, updated_at = now() WHERE sku = :sku_id;
UPDATE reservations SET status = 'sold', updated_at = now() WHERE order_id = :order_id;
COMMIT;
