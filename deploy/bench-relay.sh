#!/usr/bin/env bash
# Outbox relay benchmark (release build): drain rate of a 100,000-event backlog, and
# commit-to-consume latency at a steady 1,000 events/s.
#
#   deploy/bench-relay.sh                  # librdkafka mock cluster
#   deploy/bench-relay.sh --broker tansu   # tansu broker
#
# BENCH_BACKLOG, BENCH_RATE and BENCH_SECONDS change the sizes (see the bench's header).
set -euo pipefail
# shellcheck source=deploy/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

broker=mock
[ "${1:-}" = "--broker" ] && broker="${2:?--broker needs mock or tansu}"
cd "$(shop_root)"
ensure_postgres
case "$broker" in
  mock) unset KAFKA_BOOTSTRAP_SERVERS ;;
  tansu) ensure_tansu; start_tansu ;;
  *) echo "unknown broker $broker (mock or tansu)" >&2; exit 2 ;;
esac
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB; PostgreSQL: $SHOP_PG_KIND"
cargo bench --locked -p shop-eventing --bench relay
