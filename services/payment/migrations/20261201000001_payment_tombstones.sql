-- A refund that finds no payment (OrderCancelled, or RefundRequested, applied before the order's
-- PaymentRequested: a re-driven dead letter, a replay) records the order as closed with a
-- `cancelled` payment of no money (amount 0, currency ''). The payment's primary key then
-- refuses any later PaymentRequested of that order: no money is taken for a cancelled order.
ALTER TABLE payments DROP CONSTRAINT payments_status_check;
ALTER TABLE payments ADD CONSTRAINT payments_status_check
    CHECK (status IN ('captured', 'declined', 'refunded', 'cancelled'));
ALTER TABLE payments DROP CONSTRAINT payments_amount_minor_check;
ALTER TABLE payments ADD CONSTRAINT payments_amount_minor_check
    CHECK (CASE WHEN status = 'cancelled' THEN amount_minor = 0 AND currency = '' ELSE amount_minor > 0 END);
