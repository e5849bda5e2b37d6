-- The payment service's database for deploy/bench-ceiling.sh, after its real migrations (the
-- eventing crate's, then services/payment/migrations). One open EUR account per pgbench client
-- (load-0 .. load-999, as shop-load gives each client a customer of its own) with money for any
-- run, and its deposit.
\ir common-setup.sql
INSERT INTO accounts (customer_id, currency, balance_minor, status)
SELECT 'load-' || n, 'EUR', 1000000000000000, 'open' FROM generate_series(0, 999) AS n;
INSERT INTO deposits (deposit_id, customer_id, amount_minor)
SELECT 'load-' || n, 'load-' || n, 1000000000000000 FROM generate_series(0, 999) AS n;
ANALYZE;
