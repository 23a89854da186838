# shellcheck shell=bash
# The platform's own processes (API, workers, scheduler), run from the debug
# build in target/debug with logs and pid files under .run/. Sourced by
# scripts/dev.

API_PORT=${LUCID_NODE_API_PORT:-8095}
API_URL="http://127.0.0.1:$API_PORT"
WORKER_COUNT=${LUCID_DEV_WORKERS:-2}
WORKER_BASE_PORT=${LUCID_DEV_WORKER_BASE_PORT:-8096}
READY_TIMEOUT=${LUCID_DEV_READY_TIMEOUT:-120}
# Longer than the processes' own LUCID_SHUTDOWN_GRACE_SECS (30 s by default),
# so a graceful drain is not cut short by SIGKILL.
STOP_TIMEOUT=${LUCID_DEV_STOP_TIMEOUT:-45}
BIN_DIR="$LUCID_ROOT/target/debug"

[[ "$WORKER_COUNT" =~ ^[1-9][0-9]*$ ]] || die "LUCID_DEV_WORKERS must be a positive number, got '$WORKER_COUNT'"

worker_names() {
  local i
  for ((i = 1; i <= WORKER_COUNT; i++)); do printf 'worker-%s\n' "$i"; done
}
worker_port() { printf '%s' $((WORKER_BASE_PORT + ${1#worker-} - 1)); }

# Everything we may have started, in stop order. Includes workers beyond the
# current LUCID_DEV_WORKERS that an earlier `up` with more workers left.
app_names() {
  local f
  printf 'scheduler\n'
  for f in "$PID_DIR"/worker-*.pid; do
    [[ -e "$f" ]] && basename "$f" .pid
  done
  worker_names
  printf 'api\n'
}

build_bins() {
  step "Building the workspace binaries (debug)"
  command -v cargo >/dev/null || die "cargo not found: install Rust (https://rustup.rs) first"
  info "cargo build --workspace --bins"
  (cd "$LUCID_ROOT" && cargo build --workspace --bins) || die "cargo build failed"
  local bin
  for bin in lucid-api lucid-worker lucid-scheduler; do
    [[ -x "$BIN_DIR/$bin" ]] || die "cargo build finished but $BIN_DIR/$bin is missing"
  done
}

# Refuse to start when a port we need is held by something we did not start.
check_port_free() {
  local port=$1 what=$2
  if port_open 127.0.0.1 "$port"; then
    die "port $port (for $what) is already in use by: $(who_listens "$port" || true). Stop it, or run \`./scripts/dev down\` if it is ours."
  fi
}

stop_apps() {
  step "Stopping API, workers and scheduler"
  local -a names
  mapfile -t names < <(app_names | awk '!seen[$0]++')
  local any=0 n
  for n in "${names[@]}"; do running_pid "$n" >/dev/null && any=1; done
  if (( any )); then
    stop_pids "$STOP_TIMEOUT" "${names[@]}"
  else
    info "none running"
  fi
}

# start_app NAME BINARY [VAR=VALUE...]
start_app() {
  local name=$1 bin=$2; shift 2
  local logfile="$LOG_DIR/$name.log"
  info "starting $name: ${*:+$* }${bin#"$LUCID_ROOT"/}  (log ${logfile#"$LUCID_ROOT"/})"
  spawn "$name" "$logfile" env "$@" "$bin"
}

# Fail with the log tail when a process we started has exited.
assert_alive() {
  local name=$1
  if ! running_pid "$name" >/dev/null; then
    log_tail "$LOG_DIR/$name.log"
    die "$name exited during start-up (log: $LOG_DIR/$name.log)"
  fi
}

ready_200() { [[ $(http_status "$1") == 200 ]]; }

api_ready() {
  ready_200 "$API_URL/ready" && return 0
  running_pid api >/dev/null || return 0 # died: stop waiting, assert_alive reports it
  return 1
}

worker_ready() {
  local name=$1
  ready_200 "http://127.0.0.1:$(worker_port "$name")/ready" && return 0
  running_pid "$name" >/dev/null || return 0
  return 1
}

# The API needs LUCID_JWT_SECRET: keep one for this checkout in .run/jwt-secret
# (created once, mode 600) unless the caller set one.
ensure_jwt_secret() {
  if [[ -z "${LUCID_JWT_SECRET:-}" ]]; then
    local f="$RUN_DIR/jwt-secret"
    if [[ ! -s "$f" ]]; then
      (umask 077 && head -c 48 /dev/urandom | base64 | tr -d '\n/+=' > "$f")
      info "created a JWT signing secret in ${f#"$LUCID_ROOT"/}"
    fi
    LUCID_JWT_SECRET=$(cat "$f")
    export LUCID_JWT_SECRET
  fi
}

# An admin token (24 h) for local use, in .run/token.
mint_dev_token() {
  (umask 077 && "$BIN_DIR/lucid-api" token --admin --sub dev --ttl 86400 > "$RUN_DIR/token") \
    || die "could not mint a token with $BIN_DIR/lucid-api token"
}

start_apps() {
  ensure_run_dirs
  ensure_jwt_secret
  local -a running=() names
  local n
  mapfile -t names < <(app_names | awk '!seen[$0]++')
  for n in "${names[@]}"; do running_pid "$n" >/dev/null && running+=("$n"); done
  if (( ${#running[@]} )); then
    step "Already running: ${running[*]} -- restarting them on the new build"
    stop_apps
  fi

  step "Starting API, $WORKER_COUNT worker(s) and the scheduler"
  check_port_free "$API_PORT" "the API"
  for n in $(worker_names); do check_port_free "$(worker_port "$n")" "$n health"; done

  start_app api "$BIN_DIR/lucid-api" LUCID_NODE_API_PORT="$API_PORT"
  for n in $(worker_names); do
    start_app "$n" "$BIN_DIR/lucid-worker" LUCID_WORKER_HEALTH_PORT="$(worker_port "$n")"
  done
  start_app scheduler "$BIN_DIR/lucid-scheduler"

  if ! wait_until "$READY_TIMEOUT" "GET $API_URL/ready -> 200" api_ready; then
    log_tail "$LOG_DIR/api.log"
    die "the API did not report ready within ${READY_TIMEOUT}s (last status $(http_status "$API_URL/ready"); log: $LOG_DIR/api.log)"
  fi
  assert_alive api
  ok "API ready"
  for n in $(worker_names); do
    if ! wait_until "$READY_TIMEOUT" "$n GET /ready -> 200" worker_ready "$n"; then
      log_tail "$LOG_DIR/$n.log"
      die "$n did not report ready within ${READY_TIMEOUT}s (log: $LOG_DIR/$n.log)"
    fi
    assert_alive "$n"
    ok "$n ready"
  done
  assert_alive scheduler
  ok "scheduler running"
  mint_dev_token
}

print_urls() {
  local n
  cat <<EOT

Lucid is up.
  API             $API_URL
  API docs        $API_URL/docs
  OpenAPI spec    $API_URL/openapi.json
  API metrics     $API_URL/metrics
  API readiness   $API_URL/ready
EOT
  for n in $(worker_names); do
    printf '  %-15s http://127.0.0.1:%s/health  (/ready, /metrics)\n' "$n" "$(worker_port "$n")"
  done
  printf '\nLogs (pid files in %s):\n' "${PID_DIR#"$LUCID_ROOT"/}"
  for n in api $(worker_names) scheduler mongo; do
    [[ -f "$LOG_DIR/$n.log" ]] && printf '  %-15s %s\n' "$n" "${LOG_DIR#"$LUCID_ROOT"/}/$n.log"
  done
  cat <<EOT

Admin token (24 h; also in ${RUN_DIR#"$LUCID_ROOT"/}/token):
  $(cat "$RUN_DIR/token")
Call the API with it:
  curl -H "Authorization: Bearer \$(cat ${RUN_DIR#"$LUCID_ROOT"/}/token)" $API_URL/api/v1/nodes/
EOT
  printf '\nStop everything with: ./scripts/dev down\n'
}

apps_status() {
  local n pid extra
  local -a names
  mapfile -t names < <(app_names | awk '!seen[$0]++')
  for n in "${names[@]}"; do
    extra=''
    case $n in
      api) extra="GET /ready: $(http_status "$API_URL/ready")" ;;
      worker-*) extra="GET :$(worker_port "$n")/ready: $(http_status "http://127.0.0.1:$(worker_port "$n")/ready")" ;;
    esac
    if pid=$(running_pid "$n"); then
      ok "$(printf '%-11s running  pid %-7s %s' "$n" "$pid" "$extra")"
    else
      info "$(printf '%-11s stopped' "$n")"
    fi
  done
}
