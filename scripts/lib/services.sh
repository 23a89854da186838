# shellcheck shell=bash
# Local backing services for development and tests: Redis, PostgreSQL and
# SecantusDB's native server `secantusd-rs` (MongoDB wire protocol over
# WiredTiger, built from crates.io; used in place of mongod, which Debian
# does not package). Sourced by scripts/dev.
#
# A service that already answers on its port is used as it is. Only
# SecantusDB is ever stopped by `scripts/dev down`, and only when this script
# started it (pid file .run/pids/mongo.pid).

REDIS_HOST=127.0.0.1
REDIS_PORT=6379
PG_HOST=127.0.0.1
PG_PORT=5432
PG_USER=postgres
PG_DATABASES=(lucid lucid_test)
MONGO_HOST=127.0.0.1
MONGO_PORT=27017
SECANTUS_CRATE=secantus-mdb
SECANTUS_VERSION=0.5.3-beta.196
TOOLS_CACHE="${LUCID_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lucid/tools}"
SECANTUS_ROOT="$TOOLS_CACHE/$SECANTUS_CRATE-$SECANTUS_VERSION"
SECANTUS_BIN="$SECANTUS_ROOT/bin/secantusd-rs"
# WiredTiger's cache (the server's default is 4G).
MONGO_CACHE_SIZE=${LUCID_DEV_MONGO_CACHE_SIZE:-1G}
MONGO_START_TIMEOUT=${LUCID_DEV_MONGO_START_TIMEOUT:-60}

# --- Redis ------------------------------------------------------------------

redis_up() { redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG; }

ensure_redis() {
  step "Redis on $REDIS_HOST:$REDIS_PORT"
  if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
    info "redis-server/redis-cli not installed"
    apt_install redis-server
  fi
  if redis_up; then
    ok "already answering (PONG)"
    return 0
  fi
  if port_open "$REDIS_HOST" "$REDIS_PORT"; then
    die "port $REDIS_PORT is taken but does not answer PING like Redis (held by: $(who_listens "$REDIS_PORT"))"
  fi
  mkdir -p /var/lib/redis /var/log/redis
  info "starting: redis-server --daemonize yes --bind 127.0.0.1 -::1 --port $REDIS_PORT ..."
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$REDIS_PORT" \
    --save "" --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log \
    || { log_tail /var/log/redis/ci.log; die "redis-server failed to start"; }
  if ! wait_until 30 "Redis PONG" redis_up; then
    log_tail /var/log/redis/ci.log
    die "Redis did not answer PING within 30s (log: /var/log/redis/ci.log)"
  fi
  ok "Redis started"
}

# --- PostgreSQL -------------------------------------------------------------

pg_up() { pg_isready -q -h "$PG_HOST" -p "$PG_PORT" 2>/dev/null; }

pg_psql() {
  PGCONNECT_TIMEOUT=5 psql -X -w -v ON_ERROR_STOP=1 -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" "$@"
}

# Newest installed cluster version, e.g. "15".
pg_version() {
  local v
  v=$(find /etc/postgresql -mindepth 1 -maxdepth 1 -type d -printf '%f\n' 2>/dev/null | sort -V | tail -n1)
  [[ -n "$v" ]] || die "no PostgreSQL cluster under /etc/postgresql (is the postgresql package installed?)"
  printf '%s' "$v"
}

# A fresh Debian install authenticates TCP clients by password; the contract
# for development is "user postgres, no password, on 127.0.0.1". Add trust
# lines for that user on loopback only, at the top of pg_hba.conf.
pg_allow_loopback_trust() {
  local v hba
  v=$(pg_version)
  hba=/etc/postgresql/$v/main/pg_hba.conf
  [[ -w "$hba" ]] || die "cannot connect as $PG_USER without a password and cannot edit $hba; allow 'host all $PG_USER 127.0.0.1/32 trust' there"
  warn "PostgreSQL refuses passwordless TCP logins for '$PG_USER'; adding loopback trust lines to $hba"
  local tmp
  tmp=$(mktemp)
  {
    printf '# added by lucid scripts/dev: passwordless %s on loopback (development only)\n' "$PG_USER"
    printf 'host all %s 127.0.0.1/32 trust\n' "$PG_USER"
    printf 'host all %s ::1/128 trust\n' "$PG_USER"
    cat "$hba"
  } >"$tmp"
  cat "$tmp" >"$hba"
  rm -f "$tmp"
  pg_ctlcluster --skip-systemctl-redirect "$v" main reload
}

ensure_postgres() {
  step "PostgreSQL on $PG_HOST:$PG_PORT"
  if ! command -v pg_ctlcluster >/dev/null || ! command -v psql >/dev/null; then
    info "PostgreSQL not installed"
    apt_install postgresql postgresql-client
  fi
  if pg_up; then
    ok "already accepting connections"
  else
    local v
    v=$(pg_version)
    info "starting: pg_ctlcluster --skip-systemctl-redirect $v main start"
    pg_ctlcluster --skip-systemctl-redirect "$v" main start \
      || die "pg_ctlcluster $v main start failed (see /var/log/postgresql/postgresql-$v-main.log)"
    if ! wait_until 60 "pg_isready" pg_up; then
      log_tail "/var/log/postgresql/postgresql-$v-main.log"
      die "PostgreSQL did not accept connections within 60s"
    fi
    ok "PostgreSQL started"
  fi

  local err
  if ! err=$(pg_psql -d postgres -tAc 'select 1' 2>&1 </dev/null); then
    if grep -qiE 'password|authentication' <<<"$err"; then
      pg_allow_loopback_trust
      err=$(pg_psql -d postgres -tAc 'select 1' 2>&1 </dev/null) \
        || die "still cannot connect as $PG_USER to $PG_HOST:$PG_PORT: $err"
    else
      die "cannot connect as $PG_USER to $PG_HOST:$PG_PORT: $err"
    fi
  fi

  local db
  for db in "${PG_DATABASES[@]}"; do
    if [[ $(pg_psql -d postgres -tAc "select 1 from pg_database where datname='$db'" </dev/null) == 1 ]]; then
      ok "database $db exists"
    else
      info "createdb $db"
      createdb -w -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" "$db" || die "createdb $db failed"
      ok "database $db created"
    fi
  done
}

# --- MongoDB (SecantusDB, native server) ------------------------------------

# secantusd-rs is built from crates.io once per machine and version, into a
# cache outside the work tree (a `cargo clean`, a fresh clone or another
# checkout reuses it): $SECANTUS_ROOT/bin/secantusd-rs.
secantus_installed() {
  [[ -x "$SECANTUS_BIN" ]] || return 1
  [[ $("$SECANTUS_BIN" --version 2>/dev/null | head -n1) == "secantusd-rs $SECANTUS_VERSION" ]]
}

ensure_secantus() {
  if [[ -d "$LUCID_ROOT/.venv-mongo" ]]; then
    info "removing .venv-mongo (the Python server this script used to run)"
    rm -rf "$LUCID_ROOT/.venv-mongo"
  fi
  if secantus_installed; then
    ok "secantusd-rs $SECANTUS_VERSION cached at $SECANTUS_BIN"
    return 0
  fi
  command -v cargo >/dev/null || die "cargo not found: install Rust (https://rustup.rs) first"
  command -v cmake >/dev/null || apt_install cmake
  command -v cc >/dev/null || apt_install gcc g++ make
  mkdir -p "$TOOLS_CACHE"
  # One build at a time per machine (two checkouts may start together).
  exec 8>"$TOOLS_CACHE/$SECANTUS_CRATE.lock"
  if command -v flock >/dev/null; then
    flock -w 1200 8 || die "another build of $SECANTUS_CRATE holds $TOOLS_CACHE/$SECANTUS_CRATE.lock"
  fi
  if ! secantus_installed; then
    local tmp="$SECANTUS_ROOT.partial.$$"
    rm -rf "$tmp"
    info "cargo install $SECANTUS_CRATE --version $SECANTUS_VERSION --locked --ignore-rust-version"
    info "  (first build on this machine: about 4-5 minutes on 2 cores; cached in $SECANTUS_ROOT)"
    if ! cargo install "$SECANTUS_CRATE" --version "$SECANTUS_VERSION" --locked \
        --ignore-rust-version --root "$tmp" >"$LOG_DIR/secantus-build.log" 2>&1; then
      log_tail "$LOG_DIR/secantus-build.log"
      rm -rf "$tmp"
      exec 8>&-
      die "building $SECANTUS_CRATE $SECANTUS_VERSION failed (log: $LOG_DIR/secantus-build.log)"
    fi
    rm -rf "$SECANTUS_ROOT"
    mv "$tmp" "$SECANTUS_ROOT"
  fi
  exec 8>&-
  secantus_installed || die "$SECANTUS_BIN is missing or does not report version $SECANTUS_VERSION"
  ok "secantusd-rs $SECANTUS_VERSION built and cached at $SECANTUS_BIN"
}

# mongo_ping [URL]: asks the server at URL (default the local one) for its
# version through the platform's own driver code (`lucid-api store ping`);
# needs the binaries built (build_bins).
mongo_ping() {
  local url=${1:-mongodb://$MONGO_HOST:$MONGO_PORT}
  LUCID_MONGODB_URL="$url" "$BIN_DIR/lucid-api" store ping \
    || die "the MongoDB at $url does not answer ping (log of one started here: $LOG_DIR/mongo.log)"
}

mongo_port_ready() {
  port_open "$MONGO_HOST" "$MONGO_PORT" && return 0
  # Give up early when the server died during start-up.
  [[ -n "${MONGO_PID:-}" ]] && ! kill -0 "$MONGO_PID" 2>/dev/null && return 0
  return 1
}

ensure_mongo() {
  step "MongoDB (SecantusDB) on $MONGO_HOST:$MONGO_PORT"
  ensure_run_dirs
  local pid
  if port_open "$MONGO_HOST" "$MONGO_PORT"; then
    if pid=$(running_pid mongo); then
      ok "already answering (secantusd-rs started by scripts/dev, pid $pid)"
    else
      ok "already answering (not started by scripts/dev; left alone)"
    fi
    return 0
  fi
  ensure_secantus
  local logfile="$LOG_DIR/mongo.log" data="$RUN_DIR/mongo-data"
  # A data directory left by the Python server this script used to run is
  # not a WiredTiger store: keep it aside rather than feed it to secantusd-rs.
  if [[ -d "$data" && -n "$(ls -A "$data")" && ! -e "$data/WiredTiger" ]]; then
    warn "${data#"$LUCID_ROOT"/} is not a WiredTiger store (left by the old Python server?): moved to ${data#"$LUCID_ROOT"/}.old"
    rm -rf "$data.old"
    mv "$data" "$data.old"
  fi
  mkdir -p "$data"
  info "starting: secantusd-rs --host $MONGO_HOST --port $MONGO_PORT --storage-path ${data#"$LUCID_ROOT"/} --cache-size $MONGO_CACHE_SIZE"
  spawn mongo "$logfile" "$SECANTUS_BIN" --host "$MONGO_HOST" --port "$MONGO_PORT" \
    --storage-path "$data" --cache-size "$MONGO_CACHE_SIZE" --log-level WARNING
  MONGO_PID=$SPAWNED_PID
  if ! wait_until "$MONGO_START_TIMEOUT" "secantusd-rs to accept connections" mongo_port_ready \
     || ! kill -0 "$MONGO_PID" 2>/dev/null; then
    log_tail "$logfile"
    kill -0 "$MONGO_PID" 2>/dev/null && kill -TERM "$MONGO_PID" 2>/dev/null
    rm -f "$(pid_file mongo)"
    die "secantusd-rs did not start on $MONGO_HOST:$MONGO_PORT (log: $logfile)"
  fi
  ok "secantusd-rs started (pid $MONGO_PID, data ${data#"$LUCID_ROOT"/}, log ${logfile#"$LUCID_ROOT"/})"
}

ensure_services() {
  ensure_redis
  ensure_postgres
  ensure_mongo
}

stop_mongo() {
  step "SecantusDB"
  if running_pid mongo >/dev/null; then
    stop_pids 30 mongo
  else
    info "not started by scripts/dev; nothing to stop"
  fi
}

services_status() {
  local pid
  if redis_up; then ok "redis       up    redis://$REDIS_HOST:$REDIS_PORT"; else warn "redis       down  ($REDIS_HOST:$REDIS_PORT)"; fi
  if pg_up; then ok "postgresql  up    postgres://$PG_USER@$PG_HOST:$PG_PORT/lucid"; else warn "postgresql  down  ($PG_HOST:$PG_PORT)"; fi
  if port_open "$MONGO_HOST" "$MONGO_PORT"; then
    if pid=$(running_pid mongo); then
      ok "mongodb     up    mongodb://$MONGO_HOST:$MONGO_PORT (secantusd-rs, pid $pid, started by scripts/dev)"
    else
      ok "mongodb     up    mongodb://$MONGO_HOST:$MONGO_PORT (external)"
    fi
  else
    warn "mongodb     down  ($MONGO_HOST:$MONGO_PORT)"
  fi
}
