-- PlaceOrder's idempotency key belongs to its customer: two customers may pick the same key
-- (a client library's counter, a UUID they share by accident) without one being refused with,
-- or shown, the other's order. Keys were unique on their own, so they are unique per customer.
ALTER TABLE orders DROP CONSTRAINT orders_idempotency_key_key;
ALTER TABLE orders ADD CONSTRAINT orders_customer_idempotency_key UNIQUE (customer_id, idempotency_key);

-- The saga deadline's sweeper, and the gauges of pending orders, read the PENDING orders by age.
CREATE INDEX orders_pending_by_age ON orders (created_at) WHERE status = 'pending';
