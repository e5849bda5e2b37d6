-- A dead letter keeps the record itself, so that it can be re-driven from the database when the
-- dead-letter topic could not be written (missing, not authorised, the record too large for it):
-- the consumer then records it here only, with published = false, and its partition moves on.
ALTER TABLE eventing_dead_letter
    -- Whether the dead-letter topic acknowledged its copy.
    ADD COLUMN published     boolean NOT NULL DEFAULT true,
    ADD COLUMN record_key    bytea,
    ADD COLUMN payload       bytea,
    -- The record's headers in order (names and values side by side; values are bytes).
    ADD COLUMN header_names  text[],
    ADD COLUMN header_values bytea[];

-- What is waiting for a re-drive, oldest first.
CREATE INDEX eventing_dead_letter_unpublished ON eventing_dead_letter (failed_at) WHERE NOT published;
