-- The catalog and its stock. Units move between three buckets and are never created or lost
-- by the saga: on_hand (physically here, reserved ones included), reserved (held for orders in
-- flight) and sold (left with confirmed orders). Only AdjustStock changes on_hand + sold.
CREATE TABLE products (
    sku              text        PRIMARY KEY,
    name             text        NOT NULL,
    unit_price_minor bigint      NOT NULL CHECK (unit_price_minor >= 0),
    currency         text        NOT NULL,
    on_hand          bigint      NOT NULL DEFAULT 0 CHECK (on_hand >= 0),
    -- The database itself refuses to oversell, whatever the application does.
    reserved         bigint      NOT NULL DEFAULT 0 CHECK (reserved >= 0 AND reserved <= on_hand),
    sold             bigint      NOT NULL DEFAULT 0 CHECK (sold >= 0),
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);

-- Every manual change of on_hand, with its reason.
CREATE TABLE stock_adjustments (
    id       bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sku      text        NOT NULL REFERENCES products (sku),
    delta    bigint      NOT NULL,
    reason   text        NOT NULL,
    at       timestamptz NOT NULL DEFAULT now()
);

-- One reservation per order: its lifecycle is reserved -> sold | released, sold -> returned;
-- rejected when not every line could be reserved.
CREATE TABLE reservations (
    order_id   text        PRIMARY KEY,
    status     text        NOT NULL CHECK (status IN ('reserved', 'rejected', 'released', 'sold', 'returned')),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE reservation_lines (
    order_id text   NOT NULL REFERENCES reservations (order_id),
    sku      text   NOT NULL,
    quantity bigint NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (order_id, sku)
);
