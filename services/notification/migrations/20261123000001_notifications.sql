-- One notification per order outcome told to the customer. Recording it (by the order events
-- consumer) and delivering it (by the delivery worker) are separate steps: a slow or failing
-- channel never holds up the consumer.
CREATE TABLE notifications (
    notification_id uuid        PRIMARY KEY,
    order_id        text        NOT NULL,
    customer_id     text        NOT NULL,
    kind            text        NOT NULL CHECK (kind IN ('order_confirmed', 'order_cancelled')),
    message         text        NOT NULL,
    -- The channel it goes (or went) through: 'log' or 'webhook'.
    channel         text        NOT NULL,
    -- PENDING -> DELIVERED, or PENDING -> FAILED once the attempts are exhausted.
    status          text        NOT NULL DEFAULT 'PENDING'
                                CHECK (status IN ('PENDING', 'DELIVERED', 'FAILED')),
    attempts        integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    -- When a PENDING notification is next due. A worker that claims it pushes this past the
    -- end of its delivery (a lease), so a crashed worker's claim simply expires.
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    delivered_at    timestamptz,
    -- An order outcome is told once, however often its event is delivered or re-published.
    UNIQUE (order_id, kind),
    CHECK ((status = 'DELIVERED') = (delivered_at IS NOT NULL))
);

-- What the delivery worker scans.
CREATE INDEX notifications_due ON notifications (next_attempt_at) WHERE status = 'PENDING';
-- ListNotifications, newest first, by customer or by order.
CREATE INDEX notifications_by_customer ON notifications (customer_id, created_at DESC, notification_id DESC);
CREATE INDEX notifications_by_order ON notifications (order_id, created_at DESC, notification_id DESC);

-- Every delivery attempt and its outcome.
CREATE TABLE delivery_attempts (
    notification_id uuid        NOT NULL REFERENCES notifications (notification_id),
    -- 1 for the first attempt.
    attempt         integer     NOT NULL CHECK (attempt >= 1),
    at              timestamptz NOT NULL DEFAULT now(),
    outcome         text        NOT NULL CHECK (outcome IN ('delivered', 'failed')),
    error           text,
    -- The HTTP status the channel answered with, when it is HTTP and answered.
    http_status     integer,
    PRIMARY KEY (notification_id, attempt),
    CHECK ((outcome = 'failed') = (error IS NOT NULL))
);
