#!/usr/bin/env python3
"""Splits a rendered manifest stream (kubectl kustomize output) for validation.

    deploy/schemas/split.py RENDERED.yaml OUT_DIR

Writes each document to OUT_DIR/builtin/NNN-<kind>-<name>.yaml when its kind is built into
Kubernetes (validated by kubernetes-validate), or to OUT_DIR/cr/<group>/<kind>_<version>/ when
deploy/schemas/<group>/<kind>_<version>.json exists (validated by check-jsonschema against it).
A custom resource without a committed schema is an error: kubernetes-validate would only warn
about it, so it would pass unchecked. Prints "<count> <kind>" lines for the resource counts.
"""

import collections
import pathlib
import sys

import yaml

SCHEMAS = pathlib.Path(__file__).resolve().parent


def builtin_group(group):
    # The core group (""), the unqualified built-in groups (apps, batch, policy, autoscaling)
    # and the *.k8s.io groups are served by the API server itself.
    return "." not in group or group.endswith(".k8s.io")


def main(rendered, out_dir):
    out = pathlib.Path(out_dir)
    counts = collections.Counter()
    errors = []
    with open(rendered) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    for i, doc in enumerate(docs):
        api, kind = doc.get("apiVersion", ""), doc.get("kind", "")
        name = (doc.get("metadata") or {}).get("name", "unnamed")
        group, _, version = api.rpartition("/")
        counts[kind] += 1
        schema = SCHEMAS / group / f"{kind.lower()}_{version}.json" if group else None
        if schema is not None and schema.is_file():
            target = out / "cr" / group / f"{kind.lower()}_{version}" / f"{i:03d}-{name}.yaml"
        elif builtin_group(group):
            target = out / "builtin" / f"{i:03d}-{kind.lower()}-{name}.yaml"
        else:
            errors.append(f"{kind} {name} ({api}): no schema deploy/schemas/{group}/{kind.lower()}_{version}.json (add the kind to deploy/schemas/extract.py)")
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(yaml.safe_dump(doc, sort_keys=False))
    for kind, n in sorted(counts.items()):
        print(f"{n} {kind}")
    for e in errors:
        print(f"split.py: {e}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1], sys.argv[2]))
