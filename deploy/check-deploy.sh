#!/usr/bin/env bash
# Offline checks of the deployment files: the Kubernetes manifests (every overlay, rendered),
# docker-compose.yml and the Dockerfile. Run by deploy/test.sh; runs alone too:
#
#   deploy/check-deploy.sh
#
# 1. The CRD schemas in deploy/schemas/ match the CRDs in ../shared/crds (when that exists).
# 2. Each overlay in k8s/overlays/ renders with `kubectl kustomize`.
# 3. Its built-in kinds pass `kubernetes-validate --strict` for the oldest Kubernetes the
#    manifests support (1.30: native preStop sleep) and the newest the tool knows.
# 4. Its Strimzi and CloudNativePG resources pass check-jsonschema against deploy/schemas/.
# 5. docker-compose.yml passes check-jsonschema's Compose-spec schema.
# 6. The Dockerfile passes hadolint. (No image is built: that needs a Docker engine.)
# 7. Each validator rejects a deliberately broken copy of a good input, so that a check that
#    silently stopped checking (a tool update, a schema that no longer applies) fails here.
#
# What the code needs from these files (every environment variable, topic and port) is checked
# by crates/suite/tests/deployment.rs, with the workspace tests.
set -euo pipefail
# shellcheck source=deploy/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# Oldest and newest Kubernetes versions the manifests are validated against.
K8S_VERSIONS=(1.30.0 1.37.0)

cd "$(shop_root)"
ensure_tools
command -v kubectl >/dev/null 2>&1 ||
  die "kubectl not found: it renders the kustomize overlays (kubectl kustomize, built in since 1.14)"
py="$SHOP_STATE_DIR/tools/bin/python"

work=$(mktemp -d "${TMPDIR:-/tmp}/shop-check-deploy.XXXXXX")
shop_on_exit "rm -rf '$work'"

failures=()
fail() {
  printf '[shop] FAILED: %s\n' "$1" >&2
  failures+=("$1")
}
check() { # description command...
  local what=$1
  shift
  if "$@"; then say "ok: $what"; else fail "$what"; fi
}
# The opposite: the command must fail (its output is kept out of the way).
rejects() { # description command...
  local what=$1
  shift
  if "$@" >"$work/canary.log" 2>&1; then
    fail "canary: $what was accepted; the check it guards no longer checks anything"
  else
    say "ok: canary: $what rejected"
  fi
}

# Validates one rendered stream ($1) in directory $2; prints the resource counts.
validate_rendered() {
  local rendered=$1 dir=$2 ok=0 kind_dir group kind v
  "$py" deploy/schemas/split.py "$rendered" "$dir" >"$dir.counts" || ok=1
  for v in "${K8S_VERSIONS[@]}"; do
    kubernetes-validate --strict --quiet -k "$v" "$dir"/builtin/*.yaml || ok=1
  done
  for kind_dir in "$dir"/cr/*/*/; do
    [ -d "$kind_dir" ] || continue
    group=$(basename "$(dirname "$kind_dir")")
    kind=$(basename "$kind_dir")
    check-jsonschema -o text --schemafile "deploy/schemas/$group/$kind.json" "$kind_dir"*.yaml >"$dir.cr.log" 2>&1 ||
      { cat "$dir.cr.log" >&2; ok=1; }
  done
  return "$ok"
}

# --- 1. schemas up to date ----------------------------------------------------------------------
# shared/ lies beside the repository (a CI checkout, the workplace); a plain clone has none.
crds="$(cd "$(shop_root)/.." && pwd)/shared/crds"
if [ -d "$crds" ]; then
  check "deploy/schemas/ matches the CRDs in $crds" "$py" deploy/schemas/extract.py --check "$crds"
else
  say "skip: no $crds to compare deploy/schemas/ with (the committed schemas are used as they are)"
fi

# --- 2-4. every overlay -------------------------------------------------------------------------
for overlay in k8s/overlays/*/; do
  name=$(basename "$overlay")
  if ! kubectl kustomize "$overlay" >"$work/$name.yaml" 2>"$work/$name.err"; then
    cat "$work/$name.err" >&2
    fail "kubectl kustomize $overlay"
    continue
  fi
  say "ok: kubectl kustomize $overlay"
  check "$overlay: built-in kinds (kubernetes-validate --strict, ${K8S_VERSIONS[*]}) and custom resources (check-jsonschema, deploy/schemas)" \
    validate_rendered "$work/$name.yaml" "$work/$name"
  if [ -s "$work/$name.counts" ]; then
    say "$overlay renders: $(paste -sd, "$work/$name.counts" | sed 's/,/, /g')"
  fi
done

# --- 5. compose -----------------------------------------------------------------------------------
check "docker-compose.yml (Compose spec)" \
  check-jsonschema -o text --builtin-schema vendor.compose-spec docker-compose.yml

# --- 6. Dockerfile ----------------------------------------------------------------------------------
check "Dockerfile (hadolint)" hadolint Dockerfile

# --- 7. canaries: every validator must reject a broken copy of a good input ---------------------
mkdir -p "$work/canary"
first=$(find "$work"/*/builtin -name '*-deployment-*.yaml' 2>/dev/null | sort | head -n 1)
if [ -n "$first" ]; then
  sed 's/readOnlyRootFilesystem/readOnlyRootFileSystem/' "$first" >"$work/canary/deployment.yaml"
  rejects "a Deployment with a misspelt securityContext field (kubernetes-validate --strict)" \
    kubernetes-validate --strict --quiet -k "${K8S_VERSIONS[0]}" "$work/canary/deployment.yaml"
else
  fail "canary: no rendered Deployment to break"
fi
topic=$(find "$work"/*/cr/kafka.strimzi.io/kafkatopic_v1 -name '*.yaml' 2>/dev/null | sort | head -n 1)
if [ -n "$topic" ]; then
  sed 's/^\(  *\)partitions:/\1partitons:/' "$topic" >"$work/canary/topic.yaml"
  rejects "a KafkaTopic with a misspelt spec field (check-jsonschema, deploy/schemas)" \
    check-jsonschema --schemafile deploy/schemas/kafka.strimzi.io/kafkatopic_v1.json "$work/canary/topic.yaml"
else
  fail "canary: no rendered KafkaTopic to break"
fi
cluster=$(find "$work"/*/cr/postgresql.cnpg.io/cluster_v1 -name '*.yaml' 2>/dev/null | sort | head -n 1)
if [ -n "$cluster" ]; then
  sed 's/^\(  *\)instances: .*/\1instances: three/' "$cluster" >"$work/canary/cluster.yaml"
  rejects "a CloudNativePG Cluster with a non-numeric instances (check-jsonschema, deploy/schemas)" \
    check-jsonschema --schemafile deploy/schemas/postgresql.cnpg.io/cluster_v1.json "$work/canary/cluster.yaml"
else
  fail "canary: no rendered Cluster to break"
fi
printf 'apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w\n' >"$work/canary/unknown.yaml"
rejects "a custom resource whose kind has no schema (deploy/schemas/split.py)" \
  "$py" deploy/schemas/split.py "$work/canary/unknown.yaml" "$work/canary/unknown"
sed 's/^\(    \)environment:/\1enviroment:/' docker-compose.yml >"$work/canary/docker-compose.yml"
rejects "a compose service with a misspelt key (check-jsonschema vendor.compose-spec)" \
  check-jsonschema --builtin-schema vendor.compose-spec "$work/canary/docker-compose.yml"
sed 's/^FROM rust:[^ ]* AS chef/FROM rust AS chef/' Dockerfile >"$work/canary/Dockerfile"
rejects "a Dockerfile with an untagged base image (hadolint DL3006)" hadolint "$work/canary/Dockerfile"

if [ ${#failures[@]} -gt 0 ]; then
  printf '[shop] deployment checks: %d failed:\n' "${#failures[@]}" >&2
  printf '[shop]   %s\n' "${failures[@]}" >&2
  exit 1
fi
say "deployment checks: all passed"
