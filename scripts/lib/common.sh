# shellcheck shell=bash
# Shared helpers for scripts/dev: paths, logging, polling, pid files.
# Sourced, not executed. Expects `set -euo pipefail` from the caller.

# Repo root = parent of scripts/. Everything below is absolute, so the
# commands work from any cwd.
# shellcheck disable=SC2034 # used by the other scripts/lib files
LUCID_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)"
RUN_DIR="$LUCID_ROOT/.run"
LOG_DIR="$RUN_DIR/logs"
PID_DIR="$RUN_DIR/pids"

if [[ -t 1 && -z "${NO_COLOR:-}" ]]; then
  _c_bold=$'\e[1m' _c_red=$'\e[31m' _c_yellow=$'\e[33m' _c_green=$'\e[32m' _c_blue=$'\e[34m' _c_off=$'\e[0m'
else
  _c_bold='' _c_red='' _c_yellow='' _c_green='' _c_blue='' _c_off=''
fi

step() { printf '%s==> %s%s\n' "$_c_bold$_c_blue" "$*" "$_c_off"; }
info() { printf '    %s\n' "$*"; }
ok()   { printf '    %s%s%s\n' "$_c_green" "$*" "$_c_off"; }
warn() { printf '%swarning:%s %s\n' "$_c_yellow" "$_c_off" "$*" >&2; }
die()  { printf '%serror:%s %s\n' "$_c_red$_c_bold" "$_c_off" "$*" >&2; exit 1; }

# Print the last lines of a log file to stderr, framed.
log_tail() {
  local file=$1 lines=${2:-40}
  if [[ -s "$file" ]]; then
    printf -- '----- last %s lines of %s -----\n' "$lines" "$file" >&2
    tail -n "$lines" "$file" >&2
    printf -- '----- end of %s -----\n' "$file" >&2
  else
    printf '(%s is empty or missing)\n' "$file" >&2
  fi
}

ensure_run_dirs() { mkdir -p "$LOG_DIR" "$PID_DIR"; }

# --- packages ---------------------------------------------------------------

_apt_updated=0
# apt_install PKG...: install Debian packages (as root, or through sudo).
apt_install() {
  local sudo=()
  if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || die "need root (or sudo) to install: $*"
    sudo=(sudo)
  fi
  command -v apt-get >/dev/null || die "apt-get not found: install $* by hand (this script targets Debian 12)"
  info "apt-get install -y $*"
  if [[ $_apt_updated -eq 0 ]]; then
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null \
      || die "apt-get update failed"
    _apt_updated=1
  fi
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" \
    || die "apt-get install $* failed"
}

# --- probes -----------------------------------------------------------------

# port_open HOST PORT: true when a TCP connect succeeds within 1 s.
port_open() {
  # shellcheck disable=SC2016 # $1/$2 expand in the inner bash
  timeout 1 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$1" "$2" 2>/dev/null
}

# http_status URL: prints the HTTP status code, or 000 when nothing answers.
http_status() {
  local url=$1
  if command -v curl >/dev/null; then
    curl -s -o /dev/null -m 3 -w '%{http_code}' "$url" 2>/dev/null || true
  else
    python3 - "$url" <<'PY' 2>/dev/null || echo 000
import sys, urllib.request, urllib.error
try:
    print(urllib.request.urlopen(sys.argv[1], timeout=3).status)
except urllib.error.HTTPError as e:
    print(e.code)
except Exception:
    print("000")
PY
  fi
}

# who_listens PORT: best-effort description of the process on a local port.
who_listens() {
  if command -v ss >/dev/null; then
    ss -Hltnp "sport = :$1" 2>/dev/null | sed -n 's/.*users:((\(.*\)))/\1/p' | head -n1
  fi
}

# wait_until TIMEOUT_S DESCRIPTION CMD...: poll CMD every 0.25 s until it
# succeeds (return 0) or the timeout passes (return 1).
wait_until() {
  local timeout_s=$1 desc=$2; shift 2
  local deadline=$((SECONDS + timeout_s))
  info "waiting up to ${timeout_s}s for $desc"
  until "$@"; do
    if (( SECONDS >= deadline )); then
      return 1
    fi
    sleep 0.25
  done
}

# --- pid files --------------------------------------------------------------

pid_file() { printf '%s/%s.pid' "$PID_DIR" "$1"; }

# proc_pattern NAME: a string the command line of NAME's process contains,
# checked before we signal a pid from a pid file (pids get reused).
proc_pattern() {
  case $1 in
    api) printf 'lucid-api' ;;
    worker-*) printf 'lucid-worker' ;;
    scheduler) printf 'lucid-scheduler' ;;
    mongo) printf 'secantusd' ;;
    *) printf '' ;;
  esac
}

# running_pid NAME: prints the pid recorded for NAME when that process is
# alive and its command line contains proc_pattern NAME; removes a stale pid
# file and returns 1 otherwise.
running_pid() {
  local name=$1 pattern file pid
  pattern=$(proc_pattern "$name")
  file=$(pid_file "$name")
  [[ -f "$file" ]] || return 1
  pid=$(<"$file")
  if [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null; then
    if [[ -z "$pattern" ]] || tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$pattern"; then
      printf '%s' "$pid"
      return 0
    fi
  fi
  rm -f "$file"
  return 1
}

# spawn NAME LOGFILE CMD...: start CMD detached (own session, stdin from
# /dev/null, stdout+stderr to LOGFILE, no inherited fds above 2) and record
# its pid. The previous log is kept as LOGFILE.prev.
spawn() {
  local name=$1 logfile=$2; shift 2
  ensure_run_dirs
  [[ -f "$logfile" ]] && mv -f "$logfile" "$logfile.prev"
  (
    # Close inherited descriptors (a CI harness may pass pipes that would
    # otherwise be held open by the daemon after we exit).
    for fd in /proc/self/fd/*; do
      fd=${fd##*/}
      [[ "$fd" =~ ^[0-9]+$ ]] && (( fd > 2 )) && eval "exec ${fd}>&-" 2>/dev/null
    done
    cd "$LUCID_ROOT" || exit 1
    exec setsid "$@" </dev/null >>"$logfile" 2>&1
  ) &
  local pid=$!
  printf '%s\n' "$pid" >"$(pid_file "$name")"
  # shellcheck disable=SC2034 # read by the caller
  SPAWNED_PID=$pid
}

# stop_pids TIMEOUT_S NAME...: SIGTERM every named process that we started,
# wait for all of them, SIGKILL what is left after TIMEOUT_S.
stop_pids() {
  local timeout_s=$1; shift
  local name pid
  local -a names=() pids=()
  for name in "$@"; do
    if pid=$(running_pid "$name"); then
      info "stopping $name (pid $pid): SIGTERM"
      kill -TERM "$pid" 2>/dev/null || true
      names+=("$name"); pids+=("$pid")
    fi
  done
  (( ${#pids[@]} )) || return 0
  local deadline=$((SECONDS + timeout_s)) alive i
  while :; do
    alive=0
    for pid in "${pids[@]}"; do
      kill -0 "$pid" 2>/dev/null && alive=1
    done
    (( alive )) || break
    if (( SECONDS >= deadline )); then
      for i in "${!pids[@]}"; do
        if kill -0 "${pids[$i]}" 2>/dev/null; then
          warn "${names[$i]} (pid ${pids[$i]}) still running after ${timeout_s}s: SIGKILL"
          kill -KILL "${pids[$i]}" 2>/dev/null || true
        fi
      done
      sleep 0.2
      break
    fi
    sleep 0.2
  done
  for name in "${names[@]}"; do
    rm -f "$(pid_file "$name")"
    ok "$name stopped"
  done
}
