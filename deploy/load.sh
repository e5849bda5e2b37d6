#!/usr/bin/env bash
# Load test: starts the suite from an optimised build (deploy/run.sh with SHOP_PROFILE=release,
# no demo), places orders for a fixed time at a fixed concurrency with shop-load, prints orders/s
# and placed-to-terminal latency, then stops everything.
#
#   deploy/load.sh [--broker mock|kafka] [--seconds 60] [--concurrency 16] [--rate N] [--otlp]
#
# Without --otlp the services export no spans (no endpoint: the cost of tracing is only that of
# creating spans); with --otlp they export every span over OTLP to an otlp-sink that counts them.
set -euo pipefail
# shellcheck source=deploy/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$(shop_root)"

run_args=() load_args=() otlp=""
while [ $# -gt 0 ]; do
  case "$1" in
    --otlp) otlp=1; shift ;;
    --broker) run_args+=(--broker "$2"); shift 2 ;;
    --seconds|--concurrency|--rate) load_args+=("$1" "$2"); shift 2 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

log="$SHOP_STATE_DIR/load-run.log"
if [ -n "$otlp" ]; then
  cargo build --locked -q --release -p shop-testkit --bin otlp-sink
  sink_port=$(_shop_free_port)
  sink_log="$SHOP_STATE_DIR/load-otlp-sink.log"
  target/release/otlp-sink --count --listen "127.0.0.1:$sink_port" >"$sink_log" 2>&1 &
  sink_pid=$!
  shop_on_exit "_shop_stop_pid $sink_pid; wait $sink_pid 2>/dev/null; grep 'received' '$sink_log' | tail -n 1"
  export OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$sink_port"
  tracing="every span exported over OTLP (otlp-sink at 127.0.0.1:$sink_port)"
else
  export SHOP_NO_TRACES=1
  unset OTEL_EXPORTER_OTLP_ENDPOINT
  tracing="spans created, none exported (no OTLP endpoint)"
fi
SHOP_PROFILE=release SHOP_SKIP_DEMO=1 RUST_LOG="${RUST_LOG:-warn}" deploy/run.sh "${run_args[@]}" >"$log" 2>&1 &
run_pid=$!
shop_on_exit "kill $run_pid; wait $run_pid"
until grep -q "The shop suite is running" "$log"; do
  kill -0 "$run_pid" 2>/dev/null || { cat "$log" >&2; exit 1; }
  sleep 1
done
kafka=$(sed -n 's/^  Kafka *\([^ ]*\).*/\1/p' "$log")
# On the SASL/SCRAM broker of --broker kafka, the load generator's reader (a group of its own
# on order.events.v1) logs in as the broker's admin: it is the operator's tool, not a service
# with an identity and ACLs of its own.
if grep -q "SASL/SCRAM" "$log"; then
  # shellcheck disable=SC2046 # one NAME=value per line, none with spaces
  export $(shop_kafka_login admin "$SHOP_STATE_DIR/kafka/broker")
fi
echo "machine: $(nproc) cores; suite: release build; Kafka: $kafka; tracing: $tracing"
# The load generator mints its customers' and operator's tokens with the dev signing key.
SHOP_SIGNING_KEY="$SHOP_STATE_DIR/auth/signing-key.pem" target/release/shop-load --kafka "$kafka" "${load_args[@]}"
