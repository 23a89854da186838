# shellcheck shell=bash
# Local backing services for development and tests: Redis, PostgreSQL and
# SecantusDB (a MongoDB-wire-compatible server from PyPI, used here in place
# of mongod, which Debian does not package). Sourced by scripts/dev.
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
SECANTUS_VERSION=0.7.0b3
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

# --- MongoDB (SecantusDB) ---------------------------------------------------

secantus_installed() {
  [[ -x "$VENV_MONGO/bin/secantusd-py" ]] || return 1
  [[ $("$VENV_MONGO/bin/python" -c \
        'import importlib.metadata as m; print(m.version("SecantusDB"))' 2>/dev/null) == "$SECANTUS_VERSION" ]]
}

ensure_secantus_venv() {
  if secantus_installed; then
    ok "SecantusDB $SECANTUS_VERSION installed in ${VENV_MONGO#"$LUCID_ROOT"/}"
    return 0
  fi
  command -v python3 >/dev/null || apt_install python3 python3-venv
  # A venv whose interpreter no longer runs (its base Python was removed or
  # upgraded) is rebuilt.
  if [[ ! -x "$VENV_MONGO/bin/pip" ]] || ! "$VENV_MONGO/bin/python" -c 'pass' 2>/dev/null; then
    info "python3 -m venv ${VENV_MONGO#"$LUCID_ROOT"/}"
    rm -rf "$VENV_MONGO"
    if ! python3 -m venv "$VENV_MONGO" >/dev/null 2>&1; then
      # Debian's python3 needs python3-venv (ensurepip) for this.
      rm -rf "$VENV_MONGO"
      apt_install python3-venv
      python3 -m venv "$VENV_MONGO" || die "python3 -m venv $VENV_MONGO failed"
    fi
  fi
  info "pip install SecantusDB==$SECANTUS_VERSION (into ${VENV_MONGO#"$LUCID_ROOT"/})"
  "$VENV_MONGO/bin/pip" install --disable-pip-version-check -q "SecantusDB==$SECANTUS_VERSION" \
    || die "pip install SecantusDB==$SECANTUS_VERSION failed"
  secantus_installed || die "SecantusDB installed but $VENV_MONGO/bin/secantusd-py is missing or the wrong version"
  ok "SecantusDB $SECANTUS_VERSION installed"
}

# Ping through pymongo (a dependency of SecantusDB) when it is there; a plain
# TCP connect otherwise.
mongo_ping() {
  if [[ -x "$VENV_MONGO/bin/python" ]] && "$VENV_MONGO/bin/python" -c 'import pymongo' 2>/dev/null; then
    "$VENV_MONGO/bin/python" - "$MONGO_HOST" "$MONGO_PORT" <<'PY'
import sys, pymongo
c = pymongo.MongoClient(host=sys.argv[1], port=int(sys.argv[2]), serverSelectionTimeoutMS=5000)
c.admin.command("ping")
hello = c.admin.command("hello")
print("    ping ok: version %s, replica set %r" % (c.server_info().get("version"), hello.get("setName")))
PY
  else
    port_open "$MONGO_HOST" "$MONGO_PORT"
  fi
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
      ok "already answering (SecantusDB started by scripts/dev, pid $pid)"
    else
      ok "already answering (not started by scripts/dev; left alone)"
    fi
    return 0
  fi
  ensure_secantus_venv
  local logfile="$LOG_DIR/mongo.log" data="$RUN_DIR/mongo-data"
  mkdir -p "$data"
  info "starting: ${VENV_MONGO#"$LUCID_ROOT"/}/bin/secantusd-py --host $MONGO_HOST --port $MONGO_PORT --storage-path ${data#"$LUCID_ROOT"/}"
  spawn mongo "$logfile" "$VENV_MONGO/bin/secantusd-py" \
    --host "$MONGO_HOST" --port "$MONGO_PORT" --storage-path "$data"
  MONGO_PID=$SPAWNED_PID
  if ! wait_until "$MONGO_START_TIMEOUT" "SecantusDB to accept connections" mongo_port_ready \
     || ! kill -0 "$MONGO_PID" 2>/dev/null; then
    log_tail "$logfile"
    kill -0 "$MONGO_PID" 2>/dev/null && kill -TERM "$MONGO_PID" 2>/dev/null
    rm -f "$(pid_file mongo)"
    die "SecantusDB did not start on $MONGO_HOST:$MONGO_PORT (log: $logfile)"
  fi
  if ! mongo_ping; then
    log_tail "$logfile"
    die "SecantusDB accepts connections but does not answer ping (log: $logfile)"
  fi
  ok "SecantusDB started (pid $MONGO_PID, data ${data#"$LUCID_ROOT"/}, log ${logfile#"$LUCID_ROOT"/})"
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
      ok "mongodb     up    mongodb://$MONGO_HOST:$MONGO_PORT (SecantusDB, pid $pid, started by scripts/dev)"
    else
      ok "mongodb     up    mongodb://$MONGO_HOST:$MONGO_PORT (external)"
    fi
  else
    warn "mongodb     down  ($MONGO_HOST:$MONGO_PORT)"
  fi
}
