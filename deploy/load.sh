#!/usr/bin/env bash
# Load test: starts the suite from an optimised build (deploy/run.sh with SHOP_PROFILE=release,
# no demo), places orders with shop-load, prints orders/s, refusals, placed-to-terminal latency
# and CPU per order by program, then stops everything.
#
#   deploy/load.sh [--broker mock|kafka] [--seconds 60] [--concurrency 16] [--rate N] [--otlp]
#   deploy/load.sh --sweep [RATES] [--broker mock|kafka] [--seconds 20] [--overload-seconds 60]
#
# --sweep offers each rate of RATES (default 50,100,150,200,250,300,350,400 orders/s) for
# --seconds, finds the knee, offers twice the knee for 60 s and half of it for 10 s after, and
# writes the tables and plots into docs/benchmarks.md (the broker's section; SVGs in
# docs/benchmarks/). Without --otlp the services export no spans (no endpoint: the cost of
# tracing is only that of creating spans); with --otlp they export every span over OTLP to an
# otlp-sink that counts them.
set -euo pipefail
# shellcheck source=deploy/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$(shop_root)"

run_args=() load_args=() otlp="" sweep="" broker=mock seconds=""
while [ $# -gt 0 ]; do
  case "$1" in
    --otlp) otlp=1; shift ;;
    --sweep)
      sweep=50,100,150,200,250,300,350,400; shift
      if [[ "${1:-}" =~ ^[0-9.,]+$ ]]; then sweep="$1"; shift; fi ;;
    --broker) broker="$2"; run_args+=(--broker "$2"); shift 2 ;;
    --seconds) seconds="$2"; shift 2 ;;
    --concurrency|--rate|--overload-seconds) load_args+=("$1" "$2"); shift 2 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

if [ -n "$sweep" ]; then
  load_args+=(--sweep "$sweep" --seconds "${seconds:-20}")
  [[ " ${load_args[*]} " == *" --concurrency "* ]] || load_args+=(--concurrency 64)
elif [ -n "$seconds" ]; then
  load_args+=(--seconds "$seconds")
fi
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
  kill -0 "$run_pid" 2>/dev/null || { shop_failed_run "$log"; exit 1; }
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
machine="$(nproc) cores ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)), $(free -g | awk '/Mem:/ {print $2}') GiB"
pg_url=$(sed -n 's/^  PostgreSQL *\([^ ]*\).*/\1/p' "$log")
postgres=$(psql "$pg_url" -XAtc "select current_setting('server_version') || ' (fsync ' || current_setting('fsync') || ', synchronous_commit ' || current_setting('synchronous_commit') || ')'" 2>/dev/null || echo "(version unknown)")
broker_about=$(sed -n 's/^  Kafka *[^ ]*  (\(.*\))$/\1/p' "$log")
echo "machine: $machine; suite: release build; PostgreSQL $postgres; broker: $broker_about; tracing: $tracing"
if [ -n "$sweep" ]; then
  load_args+=(--report docs/benchmarks.md --label "$broker" --about "Measured $(date -u '+%Y-%m-%d %H:%M UTC') at commit $(git describe --always --dirty 2>/dev/null || echo unknown) by \`deploy/load.sh --sweep --broker $broker\`: $machine, everything on it (four services, the broker, PostgreSQL $postgres, the load generator); release build; broker: $broker_about; tracing: $tracing.")
fi
# The load generator mints its customers' and operator's tokens with the dev signing key.
SHOP_SIGNING_KEY="$SHOP_STATE_DIR/auth/signing-key.pem" target/release/shop-load --kafka "$kafka" "${load_args[@]}"
