-- A release that finds no reservation (OrderCancelled, or StockReleaseRequested, applied before
-- the order's OrderPlaced: a re-driven dead letter, a replay) records the order as closed with a
-- line-less `cancelled` reservation. The reservation's primary key then refuses any later
-- OrderPlaced of that order, so no unit is ever held for an order nobody will release.
ALTER TABLE reservations DROP CONSTRAINT reservations_status_check;
ALTER TABLE reservations ADD CONSTRAINT reservations_status_check
    CHECK (status IN ('reserved', 'rejected', 'released', 'sold', 'returned', 'cancelled'));
