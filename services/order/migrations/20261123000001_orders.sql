-- Orders and their saga state. The order service is the saga's orchestrator: every step it asks
-- of another service is an event it appends to its outbox in the same transaction as the state
-- change, so the order's status and what was asked of others never disagree.
CREATE TABLE orders (
    order_id            uuid        PRIMARY KEY,
    customer_id         text        NOT NULL,
    status              text        NOT NULL CHECK (status IN ('pending', 'confirmed', 'cancelled')),
    -- Set when cancelled: out_of_stock | payment_declined | customer_cancelled.
    cancellation_reason text,
    total_minor         bigint      NOT NULL CHECK (total_minor >= 0),
    currency            text        NOT NULL,
    -- Saga progress: payment was requested (stock is reserved).
    payment_requested   boolean     NOT NULL DEFAULT false,
    -- PlaceOrder idempotency: the client's key and what it asked for under it.
    idempotency_key     text        NOT NULL UNIQUE,
    request_fingerprint text        NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    CHECK ((status = 'cancelled') = (cancellation_reason IS NOT NULL))
);

CREATE INDEX orders_by_customer ON orders (customer_id, created_at DESC, order_id DESC);

CREATE TABLE order_lines (
    order_id         uuid    NOT NULL REFERENCES orders (order_id),
    line_no          integer NOT NULL,
    sku              text    NOT NULL,
    quantity         integer NOT NULL CHECK (quantity > 0),
    unit_price_minor bigint  NOT NULL CHECK (unit_price_minor >= 0),
    PRIMARY KEY (order_id, line_no)
);

-- Every status change with its reason, in order.
CREATE TABLE order_status_history (
    order_id uuid        NOT NULL REFERENCES orders (order_id),
    seq      integer     NOT NULL,
    status   text        NOT NULL,
    reason   text        NOT NULL,
    at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (order_id, seq)
);
