-- Appended by deploy/bench-ceiling.sh to each script marked `-- relay: yes` (pgbench has no
-- include). The outbox relay (crates/eventing/src/relay.rs): one leader per database reads the oldest
-- publishable rows, up to a batch of 1000 (READ, relay.rs:342-354,694-699; batch_size,
-- relay.rs:87), and deletes what Kafka acknowledged (relay.rs:717-721) on a connection with
-- synchronous_commit = off (relay.rs:584-586). Played by client 0 only, once per order it
-- places, so a round takes what every client committed meanwhile. (pgbench cannot carry a
-- result set to the next statement: the READ's ids go to the DELETE as one array.)
\if :client_id = 0
SELECT count(*) AS relay_n, coalesce(array_agg(id ORDER BY id), '{}') AS relay_ids FROM (SELECT id, event_id, topic, partition_key, event_type, source, payload, headers, created_at, attempts FROM eventing_outbox AS o WHERE o.parked_at IS NULL AND (NOT EXISTS (SELECT 1 FROM eventing_outbox WHERE attempts > 0) OR NOT EXISTS (SELECT 1 FROM eventing_outbox AS t WHERE t.attempts > 0 AND t.topic = o.topic AND t.partition_key = o.partition_key AND t.id <= o.id AND (t.parked_at IS NOT NULL OR t.retry_at > clock_timestamp()))) ORDER BY o.id LIMIT 1000) AS batch \gset
\if :relay_n > 0
BEGIN;
SET LOCAL synchronous_commit = off;
DELETE FROM eventing_outbox WHERE id = ANY(:relay_ids);
COMMIT;
\endif
\endif
