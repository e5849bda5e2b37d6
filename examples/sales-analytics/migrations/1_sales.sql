-- The subscriber keeps facts, not running totals: one row per line of a confirmed order, and
-- the orders cancelled after their confirmation. The totals are a view over them. Facts are
-- idempotent by key (a second copy of an event inserts nothing) and order-insensitive (a
-- cancellation seen before its confirmation still removes it), so the figures stay right even
-- where the inbox would not help: a new inbox name, a replay from another source.
CREATE TABLE sales_lines (
    order_id      text        NOT NULL,
    -- Position of the line in OrderConfirmed.lines: an order may list a sku twice.
    line_no       integer     NOT NULL,
    sku           text        NOT NULL,
    currency      text        NOT NULL,
    quantity      bigint      NOT NULL CHECK (quantity > 0),
    revenue_minor bigint      NOT NULL,
    -- ce_time of the OrderConfirmed event.
    confirmed_at  timestamptz,
    PRIMARY KEY (order_id, line_no)
);

CREATE TABLE cancelled_orders (
    order_id     text        PRIMARY KEY,
    cancelled_at timestamptz
);

-- Revenue and units per sku and currency, over confirmed orders not cancelled since.
CREATE VIEW sales_by_sku AS
SELECT l.sku,
       l.currency,
       sum(l.quantity)::bigint        AS units,
       sum(l.revenue_minor)::bigint   AS revenue_minor,
       count(DISTINCT l.order_id)     AS orders
FROM sales_lines l
WHERE NOT EXISTS (SELECT 1 FROM cancelled_orders c WHERE c.order_id = l.order_id)
GROUP BY l.sku, l.currency;
