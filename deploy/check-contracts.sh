#!/usr/bin/env bash
# Offline checks of the contracts that other teams build on (deploy/test.sh runs it):
#
#  1. docs/asyncapi.yaml, the event catalog, is a valid AsyncAPI document (`asyncapi validate`,
#     warnings fail too). Proven live: copies with a wrong operation action and with a dangling
#     reference must be rejected.
#  2. The protobuf contracts (gRPC APIs and event payloads) do not break the last release:
#     `buf breaking` against its descriptor image, the newest proto/releases/<version>.binpb
#     (cut with deploy/cut-contracts-release.sh). Proven live: copies of proto/ with a field
#     removed, and with a field's type changed, must fail; one with a field and an event type
#     added must pass.
#
# Whether the catalog matches the code is checked by crates/suite/tests/catalog.rs.
set -euo pipefail
# shellcheck source=deploy/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$(shop_root)"
ensure_tools
ensure_asyncapi

failures=0
ok() { printf '  ok    %s\n' "$1"; }
fail() {
  printf '  FAIL  %s\n' "$1"
  failures=$((failures + 1))
}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/shop-contracts.XXXXXX")
shop_on_exit "rm -rf '$tmp'"

# --- the event catalog ---------------------------------------------------------------------------
validate() { asyncapi validate --fail-severity warn "$1" >"$tmp/validate.log" 2>&1; }
echo "event catalog (asyncapi validate):"
if validate docs/asyncapi.yaml; then
  ok "docs/asyncapi.yaml is valid"
else
  cat "$tmp/validate.log"
  fail "docs/asyncapi.yaml is not valid (above)"
fi
sed '0,/action: send/s//action: publish/' docs/asyncapi.yaml >"$tmp/bad-action.yaml"
if validate "$tmp/bad-action.yaml"; then fail "a catalog with 'action: publish' was accepted"; else ok "a catalog with 'action: publish' is rejected"; fi
sed "0,/#\/components\/messages\/OrderPlaced'/s//#\/components\/messages\/OrderPlacedTypo'/" docs/asyncapi.yaml >"$tmp/bad-ref.yaml"
if validate "$tmp/bad-ref.yaml"; then fail "a catalog with a dangling \$ref was accepted"; else ok "a catalog with a dangling \$ref is rejected"; fi

# --- protobuf compatibility ----------------------------------------------------------------------
release=$( (find proto/releases -name '*.binpb' 2>/dev/null || true) | sort -V | tail -n 1)
[ -n "$release" ] || shop_die "no release image in proto/releases/ (deploy/cut-contracts-release.sh makes one)"
against="$(pwd)/$release"
# breaking DIR: buf breaking's exit status for the module in DIR against the release image.
breaking() { (cd "$1" && buf breaking --against "$against" >"$tmp/breaking.log" 2>&1) && return 0 || return $?; }
copy() { rm -rf "${tmp:?}/$1" && mkdir -p "$tmp/$1" && cp -r buf.yaml proto "$tmp/$1/"; }
echo "protobuf compatibility (buf breaking against $release):"
if breaking .; then
  ok "proto/ is compatible with $release"
else
  cat "$tmp/breaking.log"
  fail "proto/ breaks $release (above): add fields, never remove or retype them; see docs/subscribing.md"
fi
events=proto/shop/order/v1/events.proto
# shellcheck disable=SC2015 # either grep failing is the failure reported
grep -q '  bool was_confirmed = 5;' "$events" && grep -q '  uint32 quantity = 2;' "$events" ||
  shop_die "$events changed: update the mutations of deploy/check-contracts.sh"
copy removed && sed -i '/  bool was_confirmed = 5;/d' "$tmp/removed/$events"
rc=0 && breaking "$tmp/removed" || rc=$?
if [ "$rc" = 100 ] && grep -q 'was_confirmed' "$tmp/breaking.log"; then ok "removing OrderCancelled.was_confirmed is breaking"; else cat "$tmp/breaking.log"; fail "removing a field was not reported as breaking (exit $rc)"; fi
copy retyped && sed -i 's/  uint32 quantity = 2;/  uint64 quantity = 2;/' "$tmp/retyped/$events"
rc=0 && breaking "$tmp/retyped" || rc=$?
if [ "$rc" = 100 ] && grep -q 'quantity' "$tmp/breaking.log"; then ok "changing OrderLine.quantity to uint64 is breaking"; else cat "$tmp/breaking.log"; fail "changing a field's type was not reported as breaking (exit $rc)"; fi
copy added && sed -i 's/  bool was_confirmed = 5;/  bool was_confirmed = 5;\n  string coupon = 6;/' "$tmp/added/$events" &&
  printf '\n// Added in a later version.\nmessage OrderShipped {\n  string order_id = 1;\n}\n' >>"$tmp/added/$events"
rc=0 && breaking "$tmp/added" || rc=$?
if [ "$rc" = 0 ]; then ok "adding a field and an event type is compatible"; else cat "$tmp/breaking.log"; fail "an additive change was reported as breaking (exit $rc)"; fi

[ "$failures" -eq 0 ] || shop_die "$failures contract check(s) failed"
echo "contracts: the catalog is valid and the protobuf contracts keep $release's clients working"
