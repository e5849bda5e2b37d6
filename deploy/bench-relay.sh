#!/usr/bin/env bash
# Outbox relay benchmark (release build): drain rate of a 100,000-event backlog, and
# commit-to-consume latency at a steady 1,000 events/s; then what waking the relay costs the
# writers (outbox-writing commits/s of 16 writers, with the former NOTIFY trigger and without);
# then the idempotent consumer's benchmark: drain rate of a 100,000-record backlog (each record
# applied with its inbox row and a handler's UPSERT) and produce-to-applied latency at a steady
# 1,000 records/s (crates/eventing/benches/consumer.rs).
#
#   deploy/bench-relay.sh                  # librdkafka mock cluster
#   deploy/bench-relay.sh --broker kafka   # Apache Kafka (single node, a fresh log each run)
#
# BENCH_BACKLOG, BENCH_RATE and BENCH_SECONDS change the sizes (see the bench's header). The
# figures are written into docs/benchmarks.md (section "relay <broker>").
set -euo pipefail
# shellcheck source=deploy/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

broker=mock
[ "${1:-}" = "--broker" ] && broker="${2:?--broker needs mock or kafka}"
cd "$(shop_root)"
ensure_postgres
case "$broker" in
  mock) unset KAFKA_BOOTSTRAP_SERVERS ;;
  kafka)
    unset KAFKA_BOOTSTRAP_SERVERS
    cargo build --locked -q --release -p shop-testkit --bin dev-kafka
    rm -rf -- "$SHOP_STATE_DIR/kafka/bench-broker"
    start_kafka "$(shop_root)/target/release/dev-kafka" "$SHOP_STATE_DIR/kafka/bench-broker"
    ;;
  *) echo "unknown broker $broker (mock or kafka)" >&2; exit 2 ;;
esac
out="$SHOP_STATE_DIR/bench-relay-$broker.txt"
{
  echo "PostgreSQL $(psql "$DATABASE_URL" -XAtc 'show server_version') ($SHOP_PG_KIND)"
  cargo bench --locked -q -p shop-eventing --bench relay
  # On the mock cluster the consumer's drain of a 100,000-record backlog stalls at about 46,000
  # records (not on Apache Kafka, where it drains): there, a backlog of 20,000 unless told.
  if [ "$broker" = mock ]; then
    BENCH_BACKLOG="${BENCH_BACKLOG:-20000}" cargo bench --locked -q -p shop-eventing --bench consumer
  else
    cargo bench --locked -q -p shop-eventing --bench consumer
  fi
  cargo bench --locked -q -p shop-eventing --bench commits
} | tee "$out"
shop_report "relay $broker" "\`deploy/bench-relay.sh --broker $broker\`" "$out"
