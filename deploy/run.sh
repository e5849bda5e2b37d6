#!/usr/bin/env bash
# Runs the suite locally: PostgreSQL (one database per service), a Kafka-protocol broker, the
# four services as separate processes, the example subscriber (examples/sales-analytics), then a
# demo that walks orders through every saga path. This script finds or starts the
# infrastructure and builds; `shop-run` (crates/suite/src/bin/shop-run.rs) starts, waits for and
# supervises the processes, on the ports of deploy/topology.yaml.
# Leaves everything running with the gRPC endpoints and bearer tokens for the demo's users
# printed; Ctrl-C stops what it started. Every gRPC call but health and reflection needs a token:
# the first run generates a dev signing key pair in $SHOP_STATE_DIR/auth (never committed), the
# services trust its public JWKS, and `target/<profile>/shop-token mint` mints more tokens.
#
#   deploy/run.sh                  # Kafka = librdkafka's mock cluster in a dev process (instant)
#   deploy/run.sh --broker kafka   # Kafka = Apache Kafka (resolved once with Maven, Java 17), its
#                                  # log kept in .local/kafka/broker across runs
#   KAFKA_BOOTSTRAP_SERVERS=host:9092 deploy/run.sh   # any external broker (topics must exist)
#   SHOP_RUN_NO_WAIT=1 deploy/run.sh                  # run the demo, then stop (for checks)
#   SHOP_PROFILE=release SHOP_SKIP_DEMO=1 deploy/run.sh   # optimised build, no demo (deploy/load.sh)
#   OTEL_EXPORTER_OTLP_ENDPOINT=http://host:4317 deploy/run.sh   # export spans there
#
# Without OTEL_EXPORTER_OTLP_ENDPOINT, spans go to a local otlp-sink that writes every trace as
# a span tree to .local/logs/traces.log (SHOP_NO_TRACES=1: no export at all).
set -euo pipefail
# shellcheck source=deploy/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

broker=mock
while [ $# -gt 0 ]; do
  case "$1" in
    --broker) broker="${2:?--broker needs mock or kafka}"; shift 2 ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
case "$broker" in mock|kafka) ;; *) die "unknown broker $broker (mock or kafka)" ;; esac
cd "$(shop_root)"

ensure_postgres
[ "$broker" = kafka ] && [ -z "${KAFKA_BOOTSTRAP_SERVERS:-}" ] && ensure_kafka
profile="${SHOP_PROFILE:-debug}"
bin="target/$profile"
say "building the services ($profile)"
release=()
[ "$profile" != release ] || release=(--release)
cargo build --locked -q "${release[@]}" \
  -p order-service -p inventory-service -p payment-service -p notification-service -p shop-suite -p shop-testkit \
  -p sales-analytics -p shopctl

if [ -n "${KAFKA_BOOTSTRAP_SERVERS:-}" ]; then
  kafka_kind="external broker"
  login=()
elif [ "$broker" = kafka ]; then
  # As in production: SASL/SCRAM, and each process may touch only its own topics and group
  # (ACLs from deploy/topology.yaml); the passwords were generated on the broker's first start.
  kafka_data="$SHOP_STATE_DIR/kafka/broker"
  start_kafka "$(shop_root)/$bin/dev-kafka" "$kafka_data" --scram
  export SHOP_KAFKA_CLIENT_CONFIG="$kafka_data/admin.properties"
  kafka_kind="Apache Kafka $SHOP_KAFKA_VERSION (KRaft, single node, SASL/SCRAM and ACLs; log in $kafka_data)"
  login=(--kafka-credentials "$kafka_data/credentials")
else
  start_dev_kafka "$(shop_root)/$bin/dev-kafka" --topology deploy/topology.yaml
  kafka_kind="librdkafka mock cluster (dev-kafka, in memory)"
  login=()
fi

# Tokens: the dev identity provider is a key pair in the state directory, made on the first run
# (the private key stays there, mode 0600; the services only get the public JWKS).
"$bin/shop-token" keygen --dir "$SHOP_STATE_DIR/auth" 2>/dev/null
export SHOP_SIGNING_KEY="$SHOP_STATE_DIR/auth/signing-key.pem"

# shop-run supervises the processes until it is stopped: on Ctrl-C or SIGTERM this script's exit
# handlers stop it (SIGTERM: it stops what it started within 5 s), then the broker.
"$bin/shop-run" --kafka "$KAFKA_BOOTSTRAP_SERVERS" --kafka-kind "$kafka_kind" \
  --broker "$broker" --topology deploy/topology.yaml --state "$SHOP_STATE_DIR" "${login[@]}" &
run_pid=$!
shop_on_exit "_shop_stop_pid $run_pid"
wait "$run_pid"
