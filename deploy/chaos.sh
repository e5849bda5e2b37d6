#!/usr/bin/env bash
# Chaos run: the four services as real processes (two replicas each) on fresh databases and
# topics, orders from many customers (some poor, some buying scarce stock, some cancelling)
# while random service processes are killed with SIGKILL and restarted (with --broker kafka,
# the Apache Kafka broker too); then the cross-database audit, printed as a table of
# invariants with their violations (all must be 0), and the figures: orders, kills, time to
# settle. Exits non-zero on any violation.
#
#   deploy/chaos.sh [--seconds N] [--broker kafka] [--seed N]
#
# PostgreSQL as for the tests (DATABASE_URL, the server on 127.0.0.1:5432, or a private
# cluster: see deploy/lib.sh); --broker kafka runs a private Apache Kafka from the jars
# deploy/lib.sh resolves (Java 17 and Maven; offline after the first time).
set -euo pipefail
# shellcheck source=deploy/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

seconds=60 broker=mock seed=""
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds="${2:?--seconds needs a number}"; shift 2 ;;
    --broker) broker="${2:?--broker needs mock or kafka}"; shift 2 ;;
    --seed) seed="${2:?--seed needs a number}"; shift 2 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
case "$broker" in mock | kafka) ;; *) echo "unknown broker $broker (mock or kafka)" >&2; exit 2 ;; esac

cd "$(shop_root)"
ensure_postgres
# The run makes its own broker; an external one would not be killed.
unset KAFKA_BOOTSTRAP_SERVERS
if [ "$broker" = kafka ]; then ensure_kafka; fi
say "chaos: building the services and shop-chaos"
cargo build --locked -q -p order-service -p inventory-service -p payment-service -p notification-service --bins
cargo build --locked -q -p shop-suite --bin shop-chaos
args=(--seconds "$seconds" --broker "$broker")
[ -z "$seed" ] || args+=(--seed "$seed")
target/debug/shop-chaos "${args[@]}"
