-- Inbox: one row per (consumer, event) whose effect has been committed. The row is inserted
-- in the same transaction as the handler's effect, so an event is applied at most once per
-- consumer however often Kafka delivers it.
CREATE TABLE eventing_inbox (
    consumer      text        NOT NULL,
    -- CloudEvents `ce_id`, or `topic/partition/offset` for a record without one.
    event_id      text        NOT NULL,
    event_type    text        NOT NULL,
    topic         text        NOT NULL,
    kafka_partition integer   NOT NULL,
    kafka_offset  bigint      NOT NULL,
    processed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);

-- Records this consumer gave up on and sent to its dead-letter topic. A replay of the source
-- topic then skips them instead of dead-lettering them again; removing a row (after fixing the
-- cause) lets the record be processed when it is delivered again.
CREATE TABLE eventing_dead_letter (
    consumer        text        NOT NULL,
    event_id        text        NOT NULL,
    event_type      text,
    topic           text        NOT NULL,
    kafka_partition integer     NOT NULL,
    kafka_offset    bigint      NOT NULL,
    dead_letter_topic text      NOT NULL,
    error           text        NOT NULL,
    attempts        integer     NOT NULL,
    failed_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);
