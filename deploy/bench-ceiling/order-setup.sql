-- The order service's database for deploy/bench-ceiling.sh, after its real migrations (the
-- eventing crate's, then services/order/migrations, as shop_runtime::service::open_database
-- runs them). Orders are the bench's to create: nothing to seed.
\ir common-setup.sql
ANALYZE;
