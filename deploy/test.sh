#!/usr/bin/env bash
# Sets up what the checks need and runs every check and test of the project.
#
#   deploy/test.sh                  # everything, Kafka = librdkafka's mock cluster (embedded),
#                                   # then a 60 s chaos run (deploy/chaos.sh)
#   deploy/test.sh --broker kafka   # every test again against Apache Kafka (resolved once with
#                                   # Maven from deploy/kafka/pom.xml; Java 17), then the smoke run
#                                   # and a 60 s chaos run on Apache Kafka
#
# PostgreSQL: DATABASE_URL if set, else the server on 127.0.0.1:5432, else a private cluster
# started from the installed binaries (see deploy/lib.sh). Tools (buf, the deployment checks',
# detect-secrets) are installed into .local/ on first use. Each test creates its own database
# and topics, so tests run in parallel.
set -euo pipefail
# shellcheck source=deploy/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

broker=mock
while [ $# -gt 0 ]; do
  case "$1" in
    --broker) broker="${2:?--broker needs mock or kafka}"; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

cd "$(shop_root)"
step() { printf '\n==> %s\n' "$1"; shift; "$@"; }

run_tests() {
  if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --no-fail-fast "$@"
  else
    cargo test --no-fail-fast "$@"
  fi
}

promtool_checks() {
  promtool check rules deploy/observability/alerts.yml
  promtool check config deploy/observability/prometheus.yml
  (cd deploy/observability && promtool test rules alerts.test.yml)
}

ensure_postgres
case "$broker" in
  mock)
    # An external broker would change what the tests run against; the mock run is hermetic.
    unset KAFKA_BOOTSTRAP_SERVERS
    ensure_tools
    step "rustfmt" cargo fmt --all --check
    step "shellcheck: the deploy scripts and CI" shellcheck -x deploy/*.sh deploy/compose/*.sh .ci/run
    step "secrets: detect-secrets over the tracked files (.secrets.baseline), none in k8s/, compose, Dockerfile" \
      deploy/scan-secrets.sh
    step "clippy" cargo clippy --workspace --all-targets --locked -- -D warnings
    step "buf lint" buf lint
    step "buf format" buf format --diff --exit-code
    step "contracts: the event catalog (asyncapi validate), buf breaking against the last release" deploy/check-contracts.sh
    step "deployment files: kustomize overlays, schemas, compose, Dockerfile" deploy/check-deploy.sh
    ensure_promtool
    step "alert rules: promtool check and unit tests" promtool_checks
    step "tests (PostgreSQL: $SHOP_PG_KIND, Kafka: librdkafka mock cluster)" run_tests --workspace --locked
    step "doc tests of the consumer SDK (shop-eventing)" cargo test --doc --locked -p shop-eventing
    step "smoke: deploy/run.sh as a new user runs it, checked with grpcurl" deploy/smoke.sh
    step "chaos: 60 s of orders while service processes are SIGKILLed, then the audit (mock cluster)" \
      deploy/chaos.sh --seconds 60
    ;;
  kafka)
    ensure_kafka
    cargo build --locked -q -p shop-testkit --bin dev-kafka
    # A fresh broker for the tests (each test makes its own topics and groups); the topology's
    # topics exist too. Tests that take their broker down start private Apache Kafka processes
    # of their own (SHOP_TEST_BROKER=kafka: TestKafka::own).
    rm -rf -- "$SHOP_STATE_DIR/kafka/test-broker"
    unset KAFKA_BOOTSTRAP_SERVERS
    start_kafka "$(shop_root)/target/debug/dev-kafka" "$SHOP_STATE_DIR/kafka/test-broker"
    export SHOP_TEST_BROKER=kafka
    step "tests (PostgreSQL: $SHOP_PG_KIND, Kafka: Apache Kafka $SHOP_KAFKA_VERSION at $KAFKA_BOOTSTRAP_SERVERS)" \
      run_tests --workspace --locked
    _shop_stop_pid "$DEV_KAFKA_PID"
    unset KAFKA_BOOTSTRAP_SERVERS SHOP_TEST_BROKER
    step "smoke: deploy/run.sh --broker kafka as a new user runs it, checked with grpcurl and Kafka's own tools" \
      deploy/smoke.sh --broker kafka
    step "chaos: 60 s of orders while service processes and the broker are SIGKILLed, then the audit (Apache Kafka)" \
      deploy/chaos.sh --seconds 60 --broker kafka
    ;;
  *) echo "unknown broker $broker (mock or kafka)" >&2; exit 2 ;;
esac
