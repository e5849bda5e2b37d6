#!/usr/bin/env bash
# Runs the suite locally: PostgreSQL and a Kafka-protocol broker, then (once they exist) the
# services. Stops everything it started on Ctrl-C.
#
#   deploy/run.sh                  # Kafka = librdkafka's mock cluster in a dev process
#   deploy/run.sh --broker tansu   # Kafka = a tansu broker (installed once, then reused)
#   KAFKA_BOOTSTRAP_SERVERS=host:9092 deploy/run.sh   # any external broker
set -euo pipefail
# shellcheck source=deploy/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

broker=mock
[ "${1:-}" = "--broker" ] && broker="${2:?--broker needs mock or tansu}"
cd "$(shop_root)"

TOPICS=(order.events.v1 inventory.events.v1 payment.events.v1)

ensure_postgres
if [ -n "${KAFKA_BOOTSTRAP_SERVERS:-}" ]; then
  kafka_kind="external broker"
elif [ "$broker" = tansu ]; then
  ensure_tansu
  start_tansu
  for t in "${TOPICS[@]}"; do
    "$TANSU_BIN" topic create --broker "tcp://$KAFKA_BOOTSTRAP_SERVERS" --partitions 6 "$t" >/dev/null 2>&1 || true
  done
  kafka_kind="tansu (in memory)"
else
  cargo build --locked -q -p shop-testkit --bin dev-kafka
  topic_args=()
  for t in "${TOPICS[@]}"; do topic_args+=(--topic "$t:6"); done
  start_dev_kafka "$(shop_root)/target/debug/dev-kafka" "${topic_args[@]}"
  kafka_kind="librdkafka mock cluster (dev-kafka, in memory)"
fi

cat <<INFO

The shop suite's infrastructure is running:
  PostgreSQL  $DATABASE_URL  ($SHOP_PG_KIND)
  Kafka       $KAFKA_BOOTSTRAP_SERVERS  ($kafka_kind)
  Topics      ${TOPICS[*]}

Inspect it:
  psql "$DATABASE_URL" -c '\l'
  kcat -b $KAFKA_BOOTSTRAP_SERVERS -L          # mock cluster only; Debian's kcat cannot talk to tansu

Services: none yet. The order, inventory, payment and notification services are the next
milestone; they will start here, each with its own database on this server.

Ctrl-C stops everything started above.
INFO

# Wait until interrupted; the EXIT handlers registered by lib.sh stop the broker.
trap 'exit 0' INT TERM
while true; do sleep 3600 & wait $!; done
