#!/usr/bin/env python3
"""The secret scan of the offline checks; deploy/scan-secrets.sh runs it (the why is there).

    scan_secrets.py check  --files LIST --rendered DIR --cache FILE
    scan_secrets.py update --files LIST --cache FILE

LIST holds the tracked files (`git ls-files -z`), each scanned as it is in the work tree; DIR
holds each overlay of k8s/overlays rendered by `kubectl kustomize` (<overlay>.yaml).

check prints every problem as `path:line: what` and exits 1 when there is one:
  1. detect-secrets finds something in a tracked file that .secrets.baseline does not list, or
     docker-compose.yml gives a secret a default (`${DB_PASSWORD:-dev}`) it does not list;
  2. .secrets.baseline lists an entry not audited as a non-secret (`"is_secret": false` and a
     `"why"`), one no longer found, or was written with other settings than PLUGINS and
     FILTERS below;
  3. a Kubernetes Secret with literal values is committed (a manifest, a secretGenerator, or
     anything an overlay renders), or a sensitive setting is a literal in a ConfigMap, a
     container's env, docker-compose.yml or the Dockerfile, or a URL carries a password.
update rescans and rewrites .secrets.baseline, keeping the audit of entries still found.

detect-secrets' settings are fixed here, not read from the baseline, so that editing the
baseline cannot switch a detector off. Results are cached per (path, content) in FILE, so an
unchanged tree is scanned in a second or two (a cold scan of the tree takes ~35 s of CPU, most
of it the vendored CRD schemas); the cache holds only hashes of findings, like the baseline.
(detect-secrets skips the baseline itself: it holds hashes, not secrets.)
"""

import argparse
import hashlib
import json
import multiprocessing
import os
import re
import sys

import yaml
from detect_secrets.__version__ import VERSION
from detect_secrets.core import scan as ds_scan
from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class
from detect_secrets.core.potential_secret import PotentialSecret
from detect_secrets.settings import configure_settings_from_baseline, get_settings

BASELINE = ".secrets.baseline"

# libyaml's parser when PyYAML has it (the PyPI wheels do): the pure-Python one takes seconds.
LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# Every detector detect-secrets has, with its default settings.
PLUGINS = sorted(
    ({"name": cls.__name__} for cls in get_mapping_from_secret_type_to_class().values()),
    key=lambda p: p["name"],
)

# detect-secrets' default filters, less two:
# - no `pragma: allowlist secret` comments (is_line_allowlisted): every exception is an audited
#   entry of the baseline, with its reason, in one place;
# - no verification against the providers' APIs (is_ignored_due_to_verification_policies): the
#   checks are offline, and a found credential is not sent anywhere.
# is_lock_file skips lock files (their checksums are all high-entropy); URLs with credentials in
# them are still looked for, by check_lock_files.
FILTERS = [
    {"path": "detect_secrets.filters.heuristic.is_indirect_reference"},
    {"path": "detect_secrets.filters.heuristic.is_likely_id_string"},
    {"path": "detect_secrets.filters.heuristic.is_lock_file"},
    {"path": "detect_secrets.filters.heuristic.is_not_alphanumeric_string"},
    {"path": "detect_secrets.filters.heuristic.is_potential_uuid"},
    {"path": "detect_secrets.filters.heuristic.is_prefixed_with_dollar_sign"},
    {"path": "detect_secrets.filters.heuristic.is_sequential_string"},
    {"path": "detect_secrets.filters.heuristic.is_swagger_file"},
    {"path": "detect_secrets.filters.heuristic.is_templated_secret"},
    # `secretName: order-db-ca` names a Kubernetes Secret (a DNS-1123 name), it is not one; the
    # keyword detector would report every volume that mounts a Secret.
    {
        "path": "detect_secrets.filters.regex.should_exclude_line",
        "pattern": [r"^\s*secretName:\s*[a-z0-9]([-a-z0-9.]*[a-z0-9])?\s*$"],
    },
]

LOCK_FILES = {
    "Cargo.lock", "package-lock.json", "yarn.lock", "poetry.lock", "Pipfile.lock",
    "composer.lock", "Gemfile.lock", "packages.lock.json", "Podfile.lock", "Cartfile.resolved",
    "Package.resolved", "Brewfile.lock.json",
}

HOW_TO_FIX = """\
How to fix:
  - A real secret: take it out of the file and rotate it (once committed it stays in git
    history); the code reads it from the environment, Kubernetes from a Secret made by an
    operator or by you (kubectl create secret, External Secrets), compose from `${VAR}`, a
    build from `RUN --mount=type=secret`. See docs/deploy.md#secrets.
  - Not a secret (a test fixture, a documented local default), reported "not in
    .secrets.baseline": run deploy/scan-secrets.sh --update, then give its entry in
    .secrets.baseline "is_secret": false and a "why" saying what it is; commit both. The other
    rules allow no exceptions."""


def configure():
    configure_settings_from_baseline(
        {"plugins_used": PLUGINS, "filters_used": FILTERS}, filename=BASELINE
    )


def settings_json():
    return {"version": VERSION, **get_settings().json()}


# --- detect-secrets over the tracked files ---------------------------------------------------


def _scan_one(path):
    return path, [s.json() for s in ds_scan.scan_file(path)]


def scan(files, cache_path):
    """{path: [finding as in the baseline]} for every tracked file, from the cache when its
    content (and the settings) are unchanged."""
    key = hashlib.sha256(json.dumps(settings_json(), sort_keys=True).encode()).hexdigest()
    cached = {}
    try:
        with open(cache_path) as f:
            stored = json.load(f)
        if stored.get("key") == key:
            cached = stored["files"]
    except (OSError, ValueError, KeyError):
        pass

    found, digests, todo = {}, {}, []
    for path in files:
        if os.path.islink(path) or not os.path.isfile(path):
            continue  # deleted from the work tree but still in the index; a symlink's target is scanned itself
        with open(path, "rb") as f:
            digests[path] = hashlib.sha256(f.read()).hexdigest()
        entry = cached.get(path)
        if entry and entry.get("sha256") == digests[path]:
            found[path] = entry["secrets"]
        else:
            todo.append(path)

    if len(todo) > 1:
        with multiprocessing.Pool(
            initializer=configure_settings_from_baseline, initargs=(get_settings().json(),)
        ) as pool:
            for path, secrets in pool.imap_unordered(_scan_one, todo):
                found[path] = secrets
    else:
        for path in todo:
            found[path] = _scan_one(path)[1]

    if todo:
        cached.update({p: {"sha256": digests[p], "secrets": found[p]} for p in todo})
        os.makedirs(os.path.dirname(cache_path) or ".", exist_ok=True)
        tmp = f"{cache_path}.{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump({"key": key, "files": cached}, f)
        os.replace(tmp, cache_path)
    return found


def _identity(path, item):
    return (path, item["hashed_secret"], item["type"])


def _secret(path, item):
    return PotentialSecret.load_secret_from_dict({"filename": path, **item})


def read_baseline():
    try:
        with open(BASELINE) as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def check_baseline(found, problems, notes):
    baseline = read_baseline()
    if baseline is None:
        problems.append((BASELINE, "missing; deploy/scan-secrets.sh --update writes it"))
        baseline = {"results": {}}
    else:
        ours = settings_json()
        theirs = {k: baseline.get(k) for k in ours}
        if theirs != ours:
            problems.append((
                BASELINE,
                f"written by other settings or another detect-secrets than {VERSION}; "
                "deploy/scan-secrets.sh --update rewrites it (keeping the audit)",
            ))

    listed = {}
    for path, items in (baseline.get("results") or {}).items():
        for item in items:
            where = f"{path}:{item.get('line_number', '?')}"
            try:
                listed[_identity(path, item)] = item
            except KeyError:
                problems.append((BASELINE, f"entry for {where} lacks hashed_secret or type"))
                continue
            if item.get("is_secret") is not False:
                what = "audited as a real secret" if item.get("is_secret") else "not audited"
                problems.append((
                    where,
                    f"{item['type']}: {what} in {BASELINE}; remove the secret, or if it is "
                    'none set "is_secret": false and say why in "why"',
                ))
            elif not str(item.get("why") or "").strip():
                problems.append((where, f'{item["type"]}: its {BASELINE} entry says no "why"'))

    seen = set()
    moved = 0
    for path, items in sorted(found.items()):
        for item in sorted(items, key=lambda i: i.get("line_number", 0)):
            ident = _identity(path, item)
            seen.add(ident)
            if ident not in listed:
                problems.append((
                    f"{path}:{item.get('line_number', '?')}",
                    f"{item['type']}, not in {BASELINE}",
                ))
            elif listed[ident].get("line_number") != item.get("line_number"):
                moved += 1
    for ident, item in sorted(listed.items()):
        if ident not in seen:
            problems.append((
                f"{ident[0]}:{item.get('line_number', '?')}",
                f"{item['type']}: listed in {BASELINE} but no longer found; "
                "deploy/scan-secrets.sh --update drops it",
            ))
    if moved:
        notes.append(
            f"{moved} finding(s) of {BASELINE} moved to other lines (still allowed); "
            "deploy/scan-secrets.sh --update refreshes the line numbers"
        )


def update_baseline(found):
    old = read_baseline() or {"results": {}}
    audit = {}
    for path, items in (old.get("results") or {}).items():
        for item in items:
            if "hashed_secret" in item and "type" in item:
                audit[_identity(path, item)] = item
    results, unaudited = {}, []
    for path in sorted(found):
        items = []
        for item in sorted(found[path], key=lambda i: (i.get("line_number", 0), i["type"])):
            entry = dict(item)
            prior = audit.get(_identity(path, item), {})
            for field in ("is_secret", "why"):
                if field in prior:
                    entry[field] = prior[field]
            if entry.get("is_secret") is not False or not str(entry.get("why") or "").strip():
                unaudited.append(f"{path}:{entry.get('line_number', '?')}: {entry['type']}")
            items.append(entry)
        if items:
            results[path] = items
    with open(BASELINE, "w") as f:
        json.dump({**settings_json(), "results": results}, f, indent=2)
        f.write("\n")
    count = sum(len(v) for v in results.values())
    print(f"[shop] {BASELINE}: {count} finding(s) listed")
    if unaudited:
        print('[shop] to audit (set "is_secret": false and a "why", or remove the secret):')
        for line in unaudited:
            print(f"[shop]   {line}")


# --- Kubernetes, compose, Dockerfile ---------------------------------------------------------

_WORDS = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z0-9]+(?![a-z])")
_SECRET_LAST_WORDS = {"PASSWORD", "PASSWD", "PASSPHRASE", "SECRET", "TOKEN", "CREDENTIALS", "APIKEY"}
_SECRET_KEY_QUALIFIERS = {"API", "PRIVATE", "SECRET", "ACCESS", "SIGNING"}
# A URL whose userinfo has a password (user, colon, password, at sign); the password is allowed
# only as a reference to the environment.
_URL_PASSWORD = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s/@:'\"]*:([^\s/@'\"]+)@")


def sensitive_name(name):
    """KAFKA_SASL_PASSWORD, clientSecret, STRIPE_API_KEY: a setting whose value is a secret."""
    words = [w.upper() for w in _WORDS.findall(str(name))]
    if not words:
        return False
    if words[-1] in _SECRET_LAST_WORDS:
        return True
    return len(words) > 1 and words[-1] == "KEY" and words[-2] in _SECRET_KEY_QUALIFIERS


_REFERENCE = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*(:?[-?][^}]*)?\}|\$\([A-Za-z_][A-Za-z0-9_]*\)")


def is_reference(value):
    """${VAR}, ${VAR:-default} (compose), $(VAR) (Kubernetes): taken from the environment. (A
    compose default is a literal too: compose_defaults makes it a finding to audit.)"""
    return _REFERENCE.fullmatch(value.strip()) is not None


def url_password(value):
    for m in _URL_PASSWORD.finditer(str(value)):
        if not is_reference(m.group(1)):
            return True
    return False


def literal_problem(name, value):
    """What is wrong with setting `name` to the literal `value`, or None."""
    if value is None or isinstance(value, (dict, list)):
        return None
    value = str(value)
    if sensitive_name(name) and value.strip() and not is_reference(value):
        return f"{name} is a literal"
    if url_password(value):
        return f"{name} holds a URL with a password"
    return None


def _mapping_get(node, key):
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode) and k.value == key:
                return k, v
    return None, None


def _non_empty(node):
    return isinstance(node, yaml.MappingNode) and node.value or (
        isinstance(node, yaml.ScalarNode) and node.value not in ("", "null", "~", "{}")
    )


def _line(node):
    return node.start_mark.line + 1


def check_manifests(path, problems):
    """A tracked YAML file: no Secret with values, no secretGenerator, compose without literals."""
    try:
        with open(path) as f:
            docs = list(yaml.compose_all(f, Loader=LOADER))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        problems.append((path, f"not YAML the secret checks can read: {e}".splitlines()[0]))
        return
    base = os.path.basename(path)
    for doc in docs:
        _, kind = _mapping_get(doc, "kind")
        if isinstance(kind, yaml.ScalarNode) and kind.value == "Secret":
            _, meta = _mapping_get(doc, "metadata")
            _, name = _mapping_get(meta, "name")
            shown = name.value if isinstance(name, yaml.ScalarNode) else "?"
            for field in ("data", "stringData"):
                key, value = _mapping_get(doc, field)
                if key is not None and _non_empty(value):
                    problems.append((
                        f"{path}:{_line(key)}",
                        f"Secret {shown} has literal {field}: Secrets come from the operators "
                        "(Strimzi, CloudNativePG) or are created from the environment, never the repository",
                    ))
        if base in ("kustomization.yaml", "kustomization.yml", "Kustomization"):
            key, _ = _mapping_get(doc, "secretGenerator")
            if key is not None:
                problems.append((
                    f"{path}:{_line(key)}",
                    "secretGenerator: it builds a Secret from literals or files in the repository",
                ))
    if is_compose_file(path):
        for name, value, line in compose_settings(docs):
            why = literal_problem(name, value)
            if why:
                problems.append((f"{path}:{line}", f"{why}: compose takes it from the environment, ${{VAR}}"))


def is_compose_file(path):
    return re.match(r"^(docker-)?compose([.-].*)?\.ya?ml$", os.path.basename(path)) is not None


def compose_settings(docs):
    """(name, value, line) of every `KEY: value` and `- KEY=value` of a compose file: the
    environment entries, the x- anchors merged into them, anything else; an anchored node once."""
    out, seen, stack = [], set(), list(reversed(docs))
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode) and isinstance(v, yaml.ScalarNode):
                    out.append((k.value, v.value, _line(k)))
            stack.extend(reversed([v for _, v in node.value]))
        elif isinstance(node, yaml.SequenceNode):
            for item in node.value:
                if isinstance(item, yaml.ScalarNode) and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", item.value):
                    name, value = item.value.split("=", 1)
                    out.append((name, value, _line(item)))
            stack.extend(reversed(node.value))
    return out


COMPOSE_DEFAULT = "Compose default of a secret"
_DEFAULTED = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*:?-([^}]*)\}$")


def compose_defaults(files):
    """The defaults `${VAR:-default}` a compose file gives a secret (a sensitive variable, or the
    password of a URL): a literal in the repository after all. They are findings like
    detect-secrets' own, allowed only by an audited baseline entry (the local development
    passwords)."""
    found = {}
    for path in files:
        if not is_compose_file(path) or not os.path.isfile(path):
            continue
        try:
            with open(path) as f:
                docs = list(yaml.compose_all(f, Loader=LOADER))
        except (yaml.YAMLError, UnicodeDecodeError):
            continue  # check_manifests reports it
        items = {}
        for name, value, line in compose_settings(docs):
            candidates = [m.group(1) for m in _URL_PASSWORD.finditer(value)]
            if sensitive_name(name):
                candidates.append(value)
            for candidate in candidates:
                m = _DEFAULTED.match(candidate.strip())
                if m and m.group(1):
                    item = {
                        "type": COMPOSE_DEFAULT,
                        "filename": path,
                        "hashed_secret": PotentialSecret.hash_secret(m.group(1)),
                        "is_verified": False,
                        "line_number": line,
                    }
                    items.setdefault(_identity(path, item), item)  # the first line it is on
        if items:
            found[path] = sorted(items.values(), key=lambda i: i["line_number"])
    return found


def check_env_file(path, problems):
    """A kustomize configMapGenerator env file (k8s/**/*.env): it becomes a ConfigMap."""
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#") or "=" not in line:
                continue
            name, value = line.split("=", 1)
            why = literal_problem(name.strip(), value.strip())
            if why:
                problems.append((f"{path}:{number}", f"{why} in a ConfigMap: take it from a Secret (secretKeyRef)"))


def check_lock_files(path, problems):
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            if url_password(line):
                problems.append((f"{path}:{number}", "a URL with a password (registry credentials)"))


def check_rendered(rendered_dir, problems):
    """What each overlay renders: Secrets without values, ConfigMaps and env without secrets."""
    findings = {}  # message -> overlays, so that a finding of the base is reported once
    for file in sorted(os.listdir(rendered_dir)):
        if not file.endswith(".yaml"):
            continue
        overlay = file[: -len(".yaml")]
        with open(os.path.join(rendered_dir, file)) as f:
            docs = [d for d in yaml.load_all(f, Loader=LOADER) if isinstance(d, dict)]
        for doc in docs:
            kind = doc.get("kind")
            name = (doc.get("metadata") or {}).get("name", "?")
            # A generated ConfigMap's name ends in a content hash; the message names the base name.
            shown = re.sub(r"-[a-z0-9]{10}$", "", str(name))
            if kind == "Secret":
                for field in ("data", "stringData"):
                    if doc.get(field):
                        findings.setdefault(
                            f"renders Secret {shown} with {field}: the operators or you create Secrets, "
                            "the repository does not", []).append(overlay)
            elif kind == "ConfigMap":
                for key, value in (doc.get("data") or {}).items():
                    why = literal_problem(key, value)
                    if why:
                        findings.setdefault(
                            f"ConfigMap {shown}: {why}; take it from a Secret (secretKeyRef)", []
                        ).append(overlay)
            for container, env in _env_lists(doc):
                for var in env:
                    if isinstance(var, dict) and "value" in var:
                        why = literal_problem(var.get("name", "?"), var["value"])
                        if why:
                            findings.setdefault(
                                f"{kind} {shown}, container {container}: {why}; use valueFrom.secretKeyRef",
                                [],
                            ).append(overlay)
    for message, overlays in findings.items():
        problems.append((f"k8s/overlays/{{{','.join(overlays)}}}", message))


def _env_lists(node):
    if isinstance(node, dict):
        if isinstance(node.get("env"), list) and "image" in node:
            yield node.get("name", "?"), node["env"]
        for value in node.values():
            yield from _env_lists(value)
    elif isinstance(node, list):
        for value in node:
            yield from _env_lists(value)


def _dockerfile_instructions(path):
    """(line, INSTRUCTION, arguments) of a Dockerfile, continuation lines joined."""
    out, pending, start = [], "", 0
    with open(path) as f:
        for number, raw in enumerate(f, 1):
            line = raw.rstrip("\n")
            if not pending and (not line.strip() or line.lstrip().startswith("#")):
                continue
            if pending and line.lstrip().startswith("#"):
                continue  # a comment inside a continued instruction
            if not pending:
                start = number
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            text = (pending + line).strip()
            pending = ""
            word, _, rest = text.partition(" ")
            out.append((start, word.upper(), rest.strip()))
    return out


def check_dockerfile(path, files, problems):
    ignore = os.path.join(os.path.dirname(path), ".dockerignore")
    if os.path.normpath(ignore) not in files:
        problems.append((path, f"no {os.path.normpath(ignore)}: the whole directory would be the build context"))
    instructions = _dockerfile_instructions(path)
    last_from = max((i for i, (_, word, _) in enumerate(instructions) if word == "FROM"), default=-1)
    for index, (line, word, rest) in enumerate(instructions):
        where = f"{path}:{line}"
        if word in ("ARG", "ENV", "LABEL"):
            if word == "ENV" and rest and "=" not in rest.split()[0]:
                name, _, value = rest.partition(" ")  # ENV KEY value (the legacy form)
                pairs = [(name, value.strip())]
            else:
                pairs = [(p.split("=", 1) + [""])[:2] for p in _split_words(rest)]
            for name, value in pairs:
                if word != "LABEL" and sensitive_name(name):
                    problems.append((
                        where,
                        f"{word} {name}: build arguments and ENV stay in the image's history and "
                        "config; pass build secrets with RUN --mount=type=secret, runtime ones "
                        "through the environment",
                    ))
                elif url_password(value):
                    problems.append((where, f"{word} {name} holds a URL with a password"))
        if index > last_from >= 0 and word in ("COPY", "ADD"):
            if word == "ADD" or not re.search(r"(^|\s)--from=", rest):
                problems.append((
                    where,
                    f"{word} {rest}: the runtime stage takes files from the build context; only "
                    "what a build stage made may go into the image (COPY --from=<stage>)",
                ))


def _split_words(text):
    return re.findall(r"""(?:[^\s"']+|"[^"]*"|'[^']*')+""", text)


def check_dockerignore(path, problems):
    with open(path) as f:
        patterns = [p.strip() for p in f if p.strip() and not p.lstrip().startswith("#")]
    if not patterns or patterns[0] != "*":
        problems.append((
            f"{path}:1",
            "the build context must start from nothing (`*`) and let back in only what the "
            "build needs, so that no untracked .env or key file goes into a build stage",
        ))


def check_deployment_files(files, rendered_dir, problems):
    for path in files:
        if os.path.islink(path) or not os.path.isfile(path):
            continue
        base = os.path.basename(path)
        if base.endswith((".yaml", ".yml")) or base == "Kustomization":
            check_manifests(path, problems)
        if path.startswith("k8s/") and base.endswith(".env"):
            check_env_file(path, problems)
        if base in LOCK_FILES:
            check_lock_files(path, problems)
        if base == "Dockerfile" or base.endswith(".Dockerfile") or base.startswith("Dockerfile."):
            check_dockerfile(path, files, problems)
        if base == ".dockerignore":
            check_dockerignore(path, problems)
    if rendered_dir:
        check_rendered(rendered_dir, problems)


# --- main -------------------------------------------------------------------------------------


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("mode", choices=["check", "update"])
    parser.add_argument("--files", required=True, help="NUL-separated list of tracked files")
    parser.add_argument("--rendered", help="directory of rendered overlays (<overlay>.yaml)")
    parser.add_argument("--cache", required=True)
    args = parser.parse_args()

    with open(args.files, "rb") as f:
        files = sorted(p.decode() for p in f.read().split(b"\0") if p)
    configure()
    found = scan(files, args.cache)
    for path, items in compose_defaults(files).items():
        found[path] = found.get(path, []) + items
    scanned = sum(1 for p in files if os.path.isfile(p) and not os.path.islink(p))

    if args.mode == "update":
        update_baseline(found)
        return 0

    problems, notes = [], []
    check_baseline(found, problems, notes)
    check_deployment_files(files, args.rendered, problems)
    for note in notes:
        print(f"[shop] note: {note}")
    if problems:
        print(f"[shop] FAILED: secret scan: {len(problems)} problem(s) in the {scanned} tracked files:")
        for where, what in problems:
            print(f"  {where}: {what}")
        print(HOW_TO_FIX)
        return 1
    allowed = sum(len(v) for v in found.values())
    print(
        f"[shop] ok: no secrets in the {scanned} tracked files (detect-secrets {VERSION}, "
        f"{len(PLUGINS)} detectors; {allowed} audited non-secret(s) in {BASELINE}); "
        "no Secret values, literal credentials or context copies in k8s/, compose, Dockerfile"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
