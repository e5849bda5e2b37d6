#!/usr/bin/env bash
# Records the protobuf contracts of a release: proto/releases/<version>.binpb, a buf descriptor
# image of proto/ (every gRPC API and event payload). deploy/check-contracts.sh checks every
# later change against the newest image with `buf breaking`, so what this release's clients and
# subscribers rely on cannot be broken by accident.
#
#   deploy/cut-contracts-release.sh            # version = [workspace.package] version of Cargo.toml
#   deploy/cut-contracts-release.sh 0.2.0      # an explicit version
#
# Run it on the commit that is released, then commit the image. It refuses to overwrite an
# image, and to cut one that breaks the previous release (a breaking change needs a new event
# type, a new package version `shop.<domain>.v2` or a new topic `*.v2`; docs/subscribing.md).
set -euo pipefail
# shellcheck source=deploy/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$(shop_root)"
version=${1:-$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml)}
[[ $version =~ ^[0-9]+\.[0-9]+\.[0-9]+([-+][0-9A-Za-z.-]+)?$ ]] || die "not a version: '$version'"
image="proto/releases/$version.binpb"
[ ! -e "$image" ] || die "$image exists: a release's contracts are never rewritten"
ensure_tools
previous=$( (find proto/releases -name '*.binpb' 2>/dev/null || true) | sort -V | tail -n 1)
if [ -n "$previous" ]; then
  buf breaking --against "$previous" || die "proto/ breaks $previous: not cutting $image"
fi
mkdir -p proto/releases
buf build --exclude-source-info -o "$image"
say "wrote $image ($(wc -c <"$image") bytes); commit it"
