#!/usr/bin/env bash
# Tokens for the docker compose run: the dev key pair of deploy/run.sh ($SHOP_STATE_DIR/auth,
# made on first use; the private key never leaves it), and the directory the compose services
# mount read-only at /etc/shop/auth: the public JWKS and the order service's own token (30 days;
# run this again to renew it). Prints an operator's token and a customer's for grpcurl.
#
#   deploy/compose/auth.sh [CUSTOMER_ID]     # then: docker compose up --build -d
set -euo pipefail
# shellcheck source=deploy/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
cd "$(shop_root)"
cargo build --locked -q -p shop-testkit --bin shop-token
auth="$SHOP_STATE_DIR/auth" out="$SHOP_STATE_DIR/compose-auth"
target/debug/shop-token keygen --dir "$auth"
mkdir -p "$out"
cp "$auth/jwks.json" "$out/jwks.json"
target/debug/shop-token mint --key "$auth/signing-key.pem" --service order-service \
  --ttl-seconds 2592000 --out "$out/order-service.token"
# Read by the containers' user (65532), not by the host user only.
chmod 0755 "$out"
chmod 0644 "$out/jwks.json" "$out/order-service.token"
customer="${1:-alice}"
echo "export OPERATOR_TOKEN=$(target/debug/shop-token mint --key "$auth/signing-key.pem" --operator operator)"
echo "export CUSTOMER_TOKEN=$(target/debug/shop-token mint --key "$auth/signing-key.pem" --customer "$customer")   # customer $customer"
