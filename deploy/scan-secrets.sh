#!/usr/bin/env bash
# Fails when a secret is committed. Run by deploy/test.sh (offline: nothing is sent anywhere);
# runs alone too:
#
#   deploy/scan-secrets.sh            # check every tracked file (git ls-files)
#   deploy/scan-secrets.sh --update   # rescan and rewrite .secrets.baseline, keeping its audit
#
# Everything sensitive comes from the environment or, on Kubernetes, from Secrets the operators
# (Strimzi, CloudNativePG) or the operator of the cluster create; this keeps it that way:
#
# 1. Yelp's detect-secrets (pinned in deploy/lib.sh, every detector on, no verification against
#    the providers) scans the tracked files. A finding fails the check unless .secrets.baseline
#    lists it audited as a non-secret: `"is_secret": false` and a `"why"` (a test fixture, a
#    documented local default). Entries no longer found fail too, so the baseline stays exact.
# 2. No Kubernetes Secret with literal data/stringData in a tracked manifest, no secretGenerator,
#    and none in what `kubectl kustomize` renders of each overlay; no password, token or key as
#    a literal in a ConfigMap (k8s/**/config.env) or a container's env, nor a URL with a password.
# 3. docker-compose.yml takes such settings from the environment (${VAR}); a default there
#    (${VAR:-dev}) is a finding like those of 1, to be listed audited in the baseline.
# 4. The Dockerfile has no secret build argument or ENV (they stay in the image's history), its
#    runtime stage copies only what a build stage made, and .dockerignore starts from nothing.
#
# The findings are printed as `path:line: what`, with how to fix or allow them.
# crates/suite/tests/secret_scan.rs runs this script on a copy of the tree with credentials
# planted in it, to show that it fails, and on the clean copy, to show that it passes.
set -euo pipefail
# shellcheck source=deploy/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

mode=check
case "${1:-}" in
  "") ;;
  --update) mode=update ;;
  -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
  *) echo "unknown argument: $1 (--update or nothing)" >&2; exit 2 ;;
esac

cd "$(shop_root)"
ensure_tools
git rev-parse --is-inside-work-tree >/dev/null 2>&1 ||
  die "$(pwd) is not a git work tree: the scan covers the tracked files (git ls-files)"
py="$SHOP_STATE_DIR/tools/bin/python"

work=$(mktemp -d "${TMPDIR:-/tmp}/shop-scan-secrets.XXXXXX")
shop_on_exit "rm -rf '$work'"
git ls-files -z >"$work/files"

args=(--files "$work/files" --cache "$SHOP_STATE_DIR/secret-scan/cache.json")
if [ "$mode" = check ]; then
  command -v kubectl >/dev/null 2>&1 ||
    die "kubectl not found: it renders the kustomize overlays, to look for Secrets in them"
  mkdir -p "$work/rendered"
  # The overlays render side by side (each kubectl takes about a second, mostly starting up).
  pids=()
  for overlay in k8s/overlays/*/; do
    name=$(basename "$overlay")
    kubectl kustomize "$overlay" >"$work/rendered/$name.yaml" 2>"$work/$name.err" &
    pids+=("$!:$overlay:$name")
  done
  for job in "${pids[@]}"; do
    IFS=: read -r pid overlay name <<<"$job"
    wait "$pid" || { cat "$work/$name.err" >&2; die "kubectl kustomize $overlay failed"; }
  done
  args+=(--rendered "$work/rendered")
fi
"$py" deploy/scan_secrets.py "$mode" "${args[@]}"
