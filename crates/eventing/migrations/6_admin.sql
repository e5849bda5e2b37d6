-- Operators' re-drives and clean-ups (the admin API, `shopctl`).

-- How many replays of this record were dead-lettered again. A replay is the record published
-- once more with the `shop_replay_consumer` / `shop_replay_count` headers: the consumer named
-- applies it despite this row when its count is higher than `replays` (and deletes the row in
-- the same transaction), or dead-letters it again and sets `replays` to its count. The admin
-- API holds back a record whose `replays` reached its limit, so a replay cannot loop.
ALTER TABLE eventing_dead_letter ADD COLUMN replays integer NOT NULL DEFAULT 0;

-- The listing's order and its time filter.
CREATE INDEX eventing_dead_letter_failed_at ON eventing_dead_letter (failed_at);

-- Every replay, purge, republish, retry and drop an operator made: who (the token's subject),
-- when, what. Never deleted by the suite.
CREATE TABLE eventing_admin_audit (
    id       bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at       timestamptz NOT NULL DEFAULT now(),
    actor    text        NOT NULL,
    -- dlq.replay, dlq.purge, outbox.republish, outbox.retry, outbox.drop
    action   text        NOT NULL,
    consumer text,
    event_id text,
    detail   jsonb       NOT NULL DEFAULT '{}'::jsonb
);
