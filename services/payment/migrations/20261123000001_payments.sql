-- Customer accounts and the payments of the order saga. Money only moves between an account's
-- balance and its captured payments: a deposit adds to the balance, a capture moves an order's
-- amount out of it, a refund moves it back. So for every account,
-- sum(deposits) = balance + sum(captured payments), whatever the saga does.
CREATE TABLE accounts (
    customer_id   text        PRIMARY KEY,
    -- ISO 4217; every deposit and every captured payment of the account is in this currency.
    currency      text        NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    -- The database itself refuses to overdraw, whatever the application does.
    balance_minor bigint      NOT NULL DEFAULT 0 CHECK (balance_minor >= 0),
    -- A frozen account takes no deposits and its payments are declined.
    status        text        NOT NULL CHECK (status IN ('open', 'frozen')),
    opened_at     timestamptz NOT NULL DEFAULT now()
);

-- Every credit, under the client's deposit id: a retried Deposit finds its row and credits
-- nothing. A deposit is always in its account's currency.
CREATE TABLE deposits (
    deposit_id   text        PRIMARY KEY,
    customer_id  text        NOT NULL REFERENCES accounts (customer_id),
    amount_minor bigint      NOT NULL CHECK (amount_minor > 0),
    at           timestamptz NOT NULL DEFAULT now()
);

-- One payment per order: its lifecycle is captured -> refunded; declined (with a reason) when
-- it could not be captured. The customer may have no account (declined: unknown_account), so
-- customer_id does not reference accounts.
CREATE TABLE payments (
    order_id       text        PRIMARY KEY,
    customer_id    text        NOT NULL,
    amount_minor   bigint      NOT NULL CHECK (amount_minor > 0),
    currency       text        NOT NULL,
    status         text        NOT NULL CHECK (status IN ('captured', 'declined', 'refunded')),
    decline_reason text        CHECK (decline_reason IN
        ('insufficient_funds', 'unknown_account', 'account_frozen', 'currency_mismatch')),
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    -- A reason exactly when declined.
    CHECK ((status = 'declined') = (decline_reason IS NOT NULL))
);
