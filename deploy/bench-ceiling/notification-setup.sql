-- The notification service's database for deploy/bench-ceiling.sh, after its real migrations
-- (the eventing crate's, then services/notification/migrations). Nothing to seed.
\ir common-setup.sql
ANALYZE;
