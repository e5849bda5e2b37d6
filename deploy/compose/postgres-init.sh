#!/usr/bin/env bash
# docker-compose.yml: runs once, when the postgres container initialises an empty data
# directory (/docker-entrypoint-initdb.d). One role and one database per service, each role
# owning its database and nothing else, as on Kubernetes (one CloudNativePG cluster each).
#
#   SHOP_DATABASES     the databases (= their owner roles) [orders inventory payment notification]
#   SHOP_DB_PASSWORD   the roles' password (local development only)
set -euo pipefail
: "${SHOP_DB_PASSWORD:?set SHOP_DB_PASSWORD}"
for db in ${SHOP_DATABASES:-orders inventory payment notification}; do
  # psql's :"name" and :'value' quote the identifier and the literal.
  psql -v ON_ERROR_STOP=1 -X -q --username "${POSTGRES_USER:-postgres}" --dbname postgres \
    -v db="$db" -v pw="$SHOP_DB_PASSWORD" <<'SQL'
CREATE ROLE :"db" LOGIN PASSWORD :'pw';
CREATE DATABASE :"db" OWNER :"db";
REVOKE ALL ON DATABASE :"db" FROM PUBLIC;
SQL
  echo "shop: database $db, owned by role $db"
done
