-- Transactional outbox: events are inserted in the same transaction as the state change that
-- caused them, and the relay publishes them to Kafka after commit, then deletes them.
CREATE TABLE eventing_outbox (
    -- Insertion order. The relay publishes in id order; it never keeps a cursor over it, so a
    -- transaction that took a low id and commits late is still picked up (no gaps).
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- CloudEvents `ce_id`; consumers deduplicate on it.
    event_id       uuid        NOT NULL UNIQUE,
    topic          text        NOT NULL,
    -- Kafka record key: the aggregate id. Same key, same partition, same order.
    partition_key  text        NOT NULL,
    -- CloudEvents `ce_type`: the fully qualified protobuf message name.
    event_type     text        NOT NULL,
    -- CloudEvents `ce_source`: the producing service.
    source         text        NOT NULL,
    payload        bytea       NOT NULL,
    -- Extra Kafka headers, e.g. {"traceparent": "00-…"} captured from the appending span.
    headers        jsonb       NOT NULL DEFAULT '{}'::jsonb,
    -- CloudEvents `ce_time`; also the Kafka record timestamp.
    created_at     timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- Wake the relay when events are committed. One notification per inserting statement, no
-- payload: PostgreSQL folds identical notifications of a transaction into one, and the relay
-- reads the table anyway (the poll is the correctness path, NOTIFY only cuts latency).
CREATE FUNCTION eventing_outbox_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('eventing_outbox', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER eventing_outbox_notify
    AFTER INSERT ON eventing_outbox
    FOR EACH STATEMENT EXECUTE FUNCTION eventing_outbox_notify();
