#!/usr/bin/env bash
# Apache Kafka's own command-line tools, from the jars the scripts resolved (deploy/kafka/pom.xml),
# against the broker deploy/run.sh started (or any broker: pass --bootstrap-server yourself).
#
#   deploy/kafka-cli.sh topics --list
#   deploy/kafka-cli.sh console-consumer --topic order.events.v1 --from-beginning \
#       --property print.key=true --property print.headers=true --max-messages 5
#   deploy/kafka-cli.sh consumer-groups --describe --group payment-service
#   deploy/kafka-cli.sh get-offsets --topic order.events.v1
#
# Tools: topics, console-consumer, console-producer, consumer-groups, get-offsets, acls, configs.
# Without --bootstrap-server, the address deploy/run.sh wrote to $SHOP_STATE_DIR/kafka.bootstrap.
set -euo pipefail
# shellcheck source=deploy/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[ $# -ge 1 ] || { sed -n '2,13p' "$0"; exit 2; }
tool=$1
shift
args=("$@")
if [[ " ${args[*]} " != *" --bootstrap-server "* ]]; then
  file="$SHOP_STATE_DIR/kafka.bootstrap"
  [ -s "$file" ] || die "no broker running (no $file): start deploy/run.sh --broker kafka, or pass --bootstrap-server"
  args=(--bootstrap-server "$(head -n 1 "$file")" "${args[@]}")
  # The broker of deploy/run.sh --broker kafka requires a login: the admin's.
  admin="$SHOP_STATE_DIR/kafka/broker/admin.properties"
  if [ -z "${SHOP_KAFKA_CLIENT_CONFIG:-}" ] && [ -s "$admin" ] && grep -q SASL "$admin"; then
    export SHOP_KAFKA_CLIENT_CONFIG="$admin"
  fi
fi
ensure_kafka 2>/dev/null
kafka_tool "$tool" "${args[@]}"
