#!/usr/bin/env bash
# Runs a local moto_server (SQS, DynamoDB, S3, IAM, STS) in the background for
# tests and for aws-resources/.
#
#   eval "$(scripts/moto.sh start [PORT])"   # default port $MOTO_PORT, else 5000
#   eval "$(scripts/moto.sh env [PORT])"     # point a shell at a moto that runs
#   scripts/moto.sh stop [PORT]
#
# start launches `moto_server -H 127.0.0.1 -p PORT`, logs to
# ${TMPDIR:-/tmp}/decap-moto-PORT.log, keeps its pid in
# ${TMPDIR:-/tmp}/decap-moto-PORT.pid, waits (up to 60 s) until GET / answers
# 200, and prints the export lines that point the AWS SDK and CLI at it. If
# this script's moto already runs on PORT, start only prints the exports.
# `start --fresh PORT` fails (exit 3) instead of reusing a running one; it is
# for callers that stop the server afterwards (scripts/with-moto.sh).
# env prints the same export lines for a moto_server that answers on PORT
# (make run-aws's, for the AWS CLI in another shell), and fails if none does.
# stop kills it and is fine when nothing runs.
#
# moto_server is preinstalled on this machine image and cannot be installed
# from here: without it, start fails and says so.
set -euo pipefail

MOTO_READY_TIMEOUT=${MOTO_READY_TIMEOUT:-60}

moto_die() { echo "moto.sh: $*" >&2; exit 1; }

moto_files() {
  local dir=${TMPDIR:-/tmp}
  MOTO_LOG=$dir/decap-moto-$1.log
  MOTO_PID=$dir/decap-moto-$1.pid
  MOTO_LOCK=$dir/decap-moto-$1.lock
}

moto_check_port() {
  if ! [[ $1 =~ ^[0-9]{1,5}$ ]] || (($1 < 1 || $1 > 65535)); then moto_die "invalid port \"$1\""; fi
}

# moto_exports PORT prints the environment that points AWS clients at moto.
moto_exports() {
  echo "export AWS_ENDPOINT_URL=http://127.0.0.1:$1 AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1"
}

# moto_pid PORT prints the pid of this script's moto_server on PORT, if that
# process is alive and still a moto_server (pids get reused).
moto_pid() {
  local pid
  moto_files "$1"
  [ -s "$MOTO_PID" ] || return 1
  pid=$(<"$MOTO_PID")
  [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q moto_server || return 1
  echo "$pid"
}

moto_ready() { [ "$(curl -s -o /dev/null -m 2 -w '%{http_code}' "http://127.0.0.1:$1/" 2>/dev/null)" = 200 ]; }
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# moto_start [--fresh] PORT
moto_start() {
  local fresh=false
  if [ "${1:-}" = --fresh ]; then fresh=true; shift; fi
  local port=${1:-${MOTO_PORT:-5000}}
  moto_check_port "$port"
  if ! command -v moto_server >/dev/null; then
    moto_die "moto_server not found: it is preinstalled on this machine image and cannot be installed from here"
  fi
  command -v curl >/dev/null || moto_die "curl not found"
  moto_files "$port"

  # One starter per port at a time, so two callers never both launch.
  if command -v flock >/dev/null; then
    exec 9>"$MOTO_LOCK"
    flock -w 90 9 || moto_die "port $port: timed out waiting for another start to finish"
  fi

  local pid
  if pid=$(moto_pid "$port"); then
    if $fresh; then echo "moto.sh: moto_server (pid $pid) already runs on port $port" >&2; exit 3; fi
    if moto_ready "$port"; then
      echo "moto.sh: reusing the moto_server (pid $pid) that moto.sh started earlier on port $port, with what it holds" >&2
      moto_exports "$port"
      return 0
    fi
    # Ours but not answering: a start in progress elsewhere, or wedged. Wait below.
  else
    rm -f "$MOTO_PID"
    if port_in_use "$port"; then
      if $fresh; then echo "moto.sh: port $port is in use" >&2; exit 3; fi
      if moto_ready "$port" && curl -s -m 2 "http://127.0.0.1:$port/" | grep -q ListAllMyBucketsResult; then
        echo "moto.sh: a moto_server not started by moto.sh answers on port $port; using it (moto.sh stop will not stop it)" >&2
        moto_exports "$port"
        return 0
      fi
      moto_die "port $port is in use by another process that is not moto; pick another port"
    fi
    # Own process group (setsid when there) so a Ctrl-C in the caller's shell
    # does not take it down; stdout/stderr to the log so that
    # eval "$(moto.sh start)" does not wait for it.
    local launcher=()
    if command -v setsid >/dev/null; then launcher=(setsid); fi
    # 9>&- : the server must not inherit (and hold) the start lock.
    ${launcher[@]+"${launcher[@]}"} moto_server -H 127.0.0.1 -p "$port" </dev/null >"$MOTO_LOG" 2>&1 9>&- &
    pid=$!
    echo "$pid" >"$MOTO_PID"
  fi

  local deadline=$((SECONDS + MOTO_READY_TIMEOUT))
  until moto_ready "$port"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      rm -f "$MOTO_PID"
      echo "moto.sh: moto_server exited before answering on port $port; the end of $MOTO_LOG:" >&2
      tail -n 20 "$MOTO_LOG" >&2 || true
      exit 1
    fi
    if ((SECONDS >= deadline)); then
      kill "$pid" 2>/dev/null || true
      rm -f "$MOTO_PID"
      echo "moto.sh: moto_server did not answer GET http://127.0.0.1:$port/ within ${MOTO_READY_TIMEOUT}s; the end of $MOTO_LOG:" >&2
      tail -n 20 "$MOTO_LOG" >&2 || true
      exit 1
    fi
    sleep 0.2
  done
  # Answering, but is it ours? If our process died (lost the port to another
  # server), the answer came from someone else.
  kill -0 "$pid" 2>/dev/null || { rm -f "$MOTO_PID"; moto_die "moto_server exited; see $MOTO_LOG"; }
  echo "moto.sh: started moto_server (pid $pid) on http://127.0.0.1:$port, log $MOTO_LOG" >&2
  moto_exports "$port"
}

# moto_stop PORT
moto_stop() {
  local port=${1:-${MOTO_PORT:-5000}} pid
  moto_check_port "$port"
  moto_files "$port"
  if ! pid=$(moto_pid "$port"); then
    rm -f "$MOTO_PID"
    echo "moto.sh: no moto_server of ours runs on port $port" >&2
    return 0
  fi
  kill "$pid" 2>/dev/null || true
  local _
  for _ in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid" 2>/dev/null || true; fi
  rm -f "$MOTO_PID"
  echo "moto.sh: stopped moto_server (pid $pid) on port $port" >&2
}

# moto_env [PORT]
moto_env() {
  local port=${1:-${MOTO_PORT:-5000}}
  moto_check_port "$port"
  # A moto_server busy with other clients (a test run's) may take more
  # than moto_ready's 2 s to answer: ask a few times before giving up.
  local tries=1
  until moto_ready "$port"; do
    [ "$tries" -lt 5 ] || moto_die "no moto_server answers on port $port (make run-aws starts one there; MOTO_PORT or an argument names another port)"
    tries=$((tries + 1))
    sleep 1
  done
  moto_exports "$port"
}

moto_main() {
  case ${1:-} in
  start) shift; moto_start "$@" ;;
  env) shift; moto_env "$@" ;;
  stop) shift; moto_stop "$@" ;;
  *)
    sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
  esac
}

moto_main "$@"
