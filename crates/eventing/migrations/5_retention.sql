-- The retention sweep (src/consumer/retention.rs) deletes each consumer's oldest rows: these
-- indexes find them without reading the tables.
CREATE INDEX eventing_inbox_retention ON eventing_inbox (consumer, processed_at);
CREATE INDEX eventing_dead_letter_retention ON eventing_dead_letter (consumer, failed_at) WHERE published;
