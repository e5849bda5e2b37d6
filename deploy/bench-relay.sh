#!/usr/bin/env bash
# Outbox relay benchmark (release build): drain rate of a 100,000-event backlog, and
# commit-to-consume latency at a steady 1,000 events/s; then what waking the relay costs the
# writers (outbox-writing commits/s of 16 writers, with the former NOTIFY trigger and without).
#
#   deploy/bench-relay.sh                  # librdkafka mock cluster
#   deploy/bench-relay.sh --broker kafka   # Apache Kafka (single node, a fresh log each run)
#
# BENCH_BACKLOG, BENCH_RATE and BENCH_SECONDS change the sizes (see the bench's header).
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
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB; PostgreSQL: $SHOP_PG_KIND"
cargo bench --locked -p shop-eventing --bench relay
cargo bench --locked -p shop-eventing --bench commits
