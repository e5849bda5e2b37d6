-- The relay under lasting faults: rows that cannot be published are retried with backoff and
-- then parked instead of blocking the table; leadership is a lease with an expiry instead of a
-- session lock; business commits no longer NOTIFY.

-- Publishing attempts that failed because of the row itself (too large for the broker, a topic
-- that does not exist, a timestamp the broker refuses). Rows never tried, or only caught in
-- someone else's failure, have 0.
ALTER TABLE eventing_outbox ADD COLUMN attempts integer NOT NULL DEFAULT 0;
-- The error of the last failed attempt, as librdkafka reported it.
ALTER TABLE eventing_outbox ADD COLUMN last_error text;
ALTER TABLE eventing_outbox ADD COLUMN last_attempt_at timestamptz;
-- Not tried again before this time (exponential backoff with jitter).
ALTER TABLE eventing_outbox ADD COLUMN retry_at timestamptz;
-- Set once the attempts are exhausted: the relay leaves the row alone, and the later rows of its
-- key wait behind it (publishing them would reorder the key), until an operator retries it
-- (attempts back to 0) or drops it (shop_eventing::retry_parked / drop_parked).
ALTER TABLE eventing_outbox ADD COLUMN parked_at timestamptz;

-- The few rows in trouble, by key: the relay's read skips every key with a row in backoff or
-- parked, probing this (normally empty) index, so the read goes past them however many there are.
CREATE INDEX eventing_outbox_troubled ON eventing_outbox (topic, partition_key, id)
    WHERE attempts > 0;

COMMENT ON COLUMN eventing_outbox.created_at IS
    'CloudEvents ce_time (the append). The Kafka record timestamp is the publish time instead, so '
    'that retention and the broker''s timestamp checks count from when the event reached Kafka.';

-- NOTIFY at commit takes a cluster-wide lock that PostgreSQL holds through the commit's WAL
-- flush: every outbox-writing transaction of every database of the cluster committed one at a
-- time. The relay is now woken in-process after the commit, and across replicas by a NOTIFY sent
-- from a separate transaction of the writer's standby relay.
DROP TRIGGER eventing_outbox_notify ON eventing_outbox;
DROP FUNCTION eventing_outbox_notify();

-- Which replica relays. The holder renews `expires_at` every second or so; a standby takes the
-- lease once it expired (database clock), or at once when the holder's session is gone. A leader
-- that cannot renew in time stops publishing, whatever TCP thinks of its connection.
CREATE TABLE eventing_relay_lease (
    name                 text        PRIMARY KEY,
    -- A fresh id each time a relay starts leading.
    holder               uuid,
    -- Incremented by each acquisition: a renewal names the epoch it holds.
    epoch                bigint      NOT NULL DEFAULT 0,
    -- The holder's lease session (pg_backend_pid and its start, since pids are reused): when it is
    -- gone (process killed, connection closed) the lease can be taken before it expires.
    holder_pid           integer,
    holder_backend_start timestamptz,
    acquired_at          timestamptz,
    expires_at           timestamptz NOT NULL DEFAULT '-infinity'
);
INSERT INTO eventing_relay_lease (name) VALUES ('outbox');
