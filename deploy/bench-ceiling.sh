#!/usr/bin/env bash
# The physical ceiling of the saga's database commits, without the services: what the four
# service databases, sharing one PostgreSQL cluster, can commit of CONFIRMED orders per second.
#
#   deploy/bench-ceiling.sh
#
# Creates four fresh databases (ceiling_<service>_<pid>) from the services' real migrations (the
# eventing crate's, then the service's, in version order, as shop_runtime::service::open_database
# runs them) and deploy/bench-ceiling/<service>-setup.sql (the seed), then runs one pgbench per
# database at once, each replaying deploy/bench-ceiling/<service>.sql: one execution is one
# order's worth of that database's transactions, with the services' own statements (see each
# script's comments for where every one comes from), so pgbench's tps is that database's
# orders/s, and the ceiling is the lowest of the four. The databases are dropped at exit.
#
# Commits are synchronous (synchronous_commit=on for every pgbench session, fsync as the cluster
# has it) except the relay's deletes, which the relay makes with synchronous_commit=off.
# The model, and what it leaves out:
# - Each consumer transaction holds one record: a consumer that keeps up. Under a backlog the
#   consumer applies up to 200 fetched records in one transaction (ConsumerConfig::max_batch),
#   so then it commits less per order than here.
# - The outbox relay (one leader per database) is played by client 0 of each pgbench: after each
#   of its orders it reads up to 1000 rows and deletes them, i.e. one relay round per about
#   CEILING_CLIENTS orders.
# - The notification delivery worker claims one notification per claim (the most claims it
#   makes; under load one claim takes several).
# - Not per order, so left out: the relay leases' renewals (one commit per second per relay),
#   the order service's backlog count and saga sweep, the inbox retention sweep, and Kafka.
#
# Settings (environment):
#   CEILING_CLIENTS   pgbench clients per database (default 8; at most 1000)
#   CEILING_SECONDS   length of the run (default 20)
#   CEILING_SKUS      products the orders spread over (default 1000; 1 reproduces the single
#                     hot stock row of deploy/load.sh's shop-load)
#   PGBENCH           the pgbench binary (default: pgbench on PATH, else the newest
#                     /usr/lib/postgresql/*/bin/pgbench, else the private cluster's)
#   DATABASE_URL      the server to use (else ensure_postgres finds or starts one)
set -euo pipefail
# shellcheck source=deploy/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

clients=${CEILING_CLIENTS:-8}
seconds=${CEILING_SECONDS:-20}
skus=${CEILING_SKUS:-1000}
for setting in "CEILING_CLIENTS=$clients" "CEILING_SECONDS=$seconds" "CEILING_SKUS=$skus"; do
  [[ ${setting#*=} =~ ^[1-9][0-9]*$ ]] || die "${setting%%=*} must be a positive integer, not '${setting#*=}'"
done
# The payment seed opens one account per client (load-0 .. load-999).
[ "$clients" -le 1000 ] || die "CEILING_CLIENTS must be at most 1000, not $clients"

cd "$(shop_root)"
bench=deploy/bench-ceiling
services=(order inventory payment notification)
ensure_postgres

psql_do() { psql -X -q -w -v ON_ERROR_STOP=1 "$@"; }

version=$(psql_do -t -A -c 'SHOW server_version_num' "$DATABASE_URL")
# gen_random_uuid() is built in from 13, and so is DROP DATABASE ... WITH (FORCE).
[ "$version" -ge 130000 ] || die "PostgreSQL 13 or later needed (the server is $version)"

# pgbench: as given, else the server's own major version's (Debian's layout, where lib.sh's
# private cluster takes its binaries from), else on PATH, else the newest installed, else the
# private cluster's bin directory (shop-postgres bindir).
pgbench=${PGBENCH:-}
if [ -z "$pgbench" ] && [ -x "/usr/lib/postgresql/$((version / 10000))/bin/pgbench" ]; then
  pgbench="/usr/lib/postgresql/$((version / 10000))/bin/pgbench"
fi
if [ -z "$pgbench" ]; then
  pgbench=$(command -v pgbench || true)
fi
if [ -z "$pgbench" ]; then
  pgbench=$(find /usr/lib/postgresql/*/bin -maxdepth 1 -name pgbench 2>/dev/null | sort -V | tail -n 1 || true)
fi
if [ -z "$pgbench" ] && [ "${SHOP_PG_KIND:-}" = private ]; then
  _shop_pg_tool
  pgbench="$("$_SHOP_PG_TOOL" bindir --state-dir "$SHOP_STATE_DIR")/pgbench"
fi
{ [ -n "$pgbench" ] && [ -x "$pgbench" ]; } ||
  die "pgbench not found: install the PostgreSQL client (apt-get install postgresql-client), or set PGBENCH"

# The URL of database $1 on the server of DATABASE_URL (its options kept).
db_url() {
  local re='^([A-Za-z][A-Za-z0-9+.-]*://[^/?#]*)(/[^?#]*)?(\?[^#]*)?$'
  [[ $DATABASE_URL =~ $re ]] || die "DATABASE_URL is not a postgres:// URL: $DATABASE_URL"
  printf '%s/%s%s\n' "${BASH_REMATCH[1]}" "$1" "${BASH_REMATCH[3]}"
}

# A migration directory's files in the order sqlx applies them: by their numeric version.
migrations() {
  local file
  for file in "$1"/*.sql; do
    case "$file" in *.down.sql) continue ;; esac
    printf '%s\n' "$file"
  done | awk -F/ '{ v = $NF; sub(/_.*/, "", v); print v "\t" $0 }' | sort -n -k1,1 | cut -f2-
}

declare -A db url
for svc in "${services[@]}"; do
  db[$svc]="ceiling_${svc}_$$"
  url[$svc]=$(db_url "${db[$svc]}")
done
work=$(mktemp -d "${TMPDIR:-/tmp}/bench-ceiling.XXXXXX")

_ceiling_drop() {
  local svc
  for svc in "${services[@]}"; do
    psql_do -c "DROP DATABASE IF EXISTS ${db[$svc]} WITH (FORCE)" "$DATABASE_URL" ||
      say "could not drop database ${db[$svc]}"
  done
  rm -rf -- "$work"
}
shop_on_exit _ceiling_drop

for svc in "${services[@]}"; do
  psql_do -c "CREATE DATABASE ${db[$svc]}" "$DATABASE_URL"
  while IFS= read -r migration; do
    # sqlx runs each migration in a transaction unless it starts with `-- no-transaction`.
    if head -n 1 "$migration" | grep -q '^-- no-transaction'; then
      psql_do -f "$migration" "${url[$svc]}"
    else
      psql_do --single-transaction -f "$migration" "${url[$svc]}"
    fi
  done < <(migrations crates/eventing/migrations; migrations "services/$svc/migrations")
  psql_do -v skus="$skus" -f "$bench/$svc-setup.sql" "${url[$svc]}"
done

settings=$(psql_do -t -A -F ' ' -c "SELECT string_agg(name || '=' || current_setting(name), ' ' ORDER BY name) FROM pg_settings WHERE name IN ('fsync', 'synchronous_commit', 'wal_sync_method', 'commit_delay', 'full_page_writes', 'shared_buffers', 'max_wal_size')" "$DATABASE_URL")
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB; PostgreSQL $(psql_do -t -A -c 'SHOW server_version' "$DATABASE_URL") ($SHOP_PG_KIND): $settings"
echo "run: 4 databases at once, $clients clients each (pgbench -j 1, $("$pgbench" --version | awk '{print $1, $3}')), ${seconds} s, $skus sku(s); synchronous_commit=on"

# Every session as the services': synchronous commits (whatever the cluster's default), and
# their timeouts (shop_runtime::database::SESSION_SETTINGS).
export PGOPTIONS="${PGOPTIONS:+$PGOPTIONS }-c synchronous_commit=on -c lock_timeout=15s -c statement_timeout=30s -c idle_in_transaction_session_timeout=10s"

declare -A pid
_ceiling_stop() {
  local svc
  for svc in "${!pid[@]}"; do kill "${pid[$svc]}" 2>/dev/null || true; done
}
shop_on_exit _ceiling_stop
for svc in "${services[@]}"; do
  # The relay's rounds, the same in each database that has one, are appended to its script.
  cp "$bench/$svc.sql" "$work/$svc.sql"
  if grep -q '^-- relay: yes' "$bench/$svc.sql"; then cat "$bench/relay.sql" >>"$work/$svc.sql"; fi
  "$pgbench" -n -M prepared -c "$clients" -j 1 -T "$seconds" -D skus="$skus" \
    -f "$work/$svc.sql" "${url[$svc]}" >"$work/$svc.out" 2>&1 &
  pid[$svc]=$!
done
failed=()
for svc in "${services[@]}"; do
  rc=0
  wait "${pid[$svc]}" || rc=$?
  unset "pid[$svc]"
  # A client that hit an error stops; pgbench goes on with the others and says so.
  if [ "$rc" != 0 ] || grep -q 'aborted' "$work/$svc.out"; then failed+=("$svc"); fi
done
if [ "${#failed[@]}" -gt 0 ]; then
  for svc in "${failed[@]}"; do
    echo "--- pgbench on ${db[$svc]} ($bench/$svc.sql):" >&2
    tail -n 30 "$work/$svc.out" >&2
  done
  die "pgbench failed on: ${failed[*]}"
fi

# What the run left, as a check that each script did an order's work.
check() { psql_do -t -A -c "$2" "${url[$1]}"; }
report="$work/report"
{
  echo "PostgreSQL $(psql_do -t -A -c 'show server_version' "${url[order]}"); $clients pgbench clients per database for $seconds s, orders over $skus skus."
  echo
  echo "left: $(check order "SELECT count(*) FILTER (WHERE status = 'confirmed') || ' orders confirmed (' || count(*) FILTER (WHERE status <> 'confirmed') || ' not)' FROM orders"), $(check inventory "SELECT count(*) FILTER (WHERE status = 'sold') || ' reservations sold' FROM reservations"), $(check payment "SELECT count(*) FILTER (WHERE status = 'captured') || ' payments captured' FROM payments"), $(check notification "SELECT count(*) FILTER (WHERE status = 'DELIVERED') || ' notifications delivered (' || count(*) FILTER (WHERE status = 'PENDING') || ' pending)' FROM notifications"); outbox rows not relayed: order $(check order 'SELECT count(*) FROM eventing_outbox'), inventory $(check inventory 'SELECT count(*) FROM eventing_outbox'), payment $(check payment 'SELECT count(*) FROM eventing_outbox')"
  echo

  {
    echo "| database | commits per order | orders/s | commits/s | latency per order (ms) |"
    echo "| --- | ---: | ---: | ---: | ---: |"
    for svc in "${services[@]}"; do
      commits=$(sed -n 's/^-- commits per order: \([0-9]*\).*/\1/p' "$bench/$svc.sql")
      tps=$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' "$work/$svc.out" | tail -n 1)
      latency=$(sed -n 's/^latency average = \([0-9.]*\) ms.*/\1/p' "$work/$svc.out")
      { [ -n "$commits" ] && [ -n "$tps" ]; } || die "no result for $svc in $work/$svc.out: $(cat "$work/$svc.out")"
      printf '%s\t%s\t%s\t%s\t%s\n' "${db[$svc]%_*}" "$commits" "$tps" "${latency:-?}" "$svc" >>"$work/results"
      awk -v d="${db[$svc]%_*}" -v c="$commits" -v t="$tps" -v l="${latency:-?}" \
        'BEGIN { printf "| %s | %d | %.0f | %.0f | %s |\n", d, c, t, c * t, l }'
    done
  }
  relayed=
  for svc in "${services[@]}"; do
    if grep -q '^-- relay: yes' "$bench/$svc.sql"; then relayed+="${db[$svc]%_*}, "; fi
  done
  echo
  echo "commits per order: the synchronous ones; ${relayed%, } also commit the relay's DELETE (synchronous_commit=off) about once every $clients orders."
  awk -F'\t' 'NR == 1 || $3 < min { min = $3; db = $1 } END { printf "bound by: %s\nceiling: %.0f orders/s\n", db, min }' "$work/results"
} | tee "$report"
shop_report --markdown ceiling "\`deploy/bench-ceiling.sh\`" "$report"
