-- The inventory service's database for deploy/bench-ceiling.sh, after its real migrations (the
-- eventing crate's, then services/inventory/migrations). The catalog: :skus products at 1.00 EUR
-- with stock for any run (deploy/load.sh's shop-load seeds one sku with 10^9 units; the bench
-- spreads orders over :skus of them, 1 reproducing its single hot stock row).
\ir common-setup.sql
INSERT INTO products (sku, name, unit_price_minor, currency, on_hand)
SELECT 'sku-' || n, 'ceiling product ' || n, 100, 'EUR', 1000000000000
FROM generate_series(1, :skus) AS n;
ANALYZE;
