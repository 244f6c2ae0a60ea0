#!/usr/bin/env bash
# Stop the local cluster that infra/local/up.sh started, and nothing else.
#
# up.sh starts each service in a session of its own (setsid) and records the session id in
# pids/<service>.pid; every process a service spawns (Ray's gcs_server, raylets, agents and workers,
# uvicorn children) stays in that session. A session is only touched when one of its processes
# carries this cluster's marker (STCORR_LOCAL_CLUSTER_ID from cluster.id) in its environment, so a
# recycled id can never hit a stranger. `ray stop` is not used: it kills every Ray process on the
# machine by name, including other people's clusters and local ray.init() instances.
#
# Idempotent: a service that is already gone is skipped; the exit status is 0 unless a process
# survived SIGKILL. Settings: STCORR_CLUSTER_DIR (default <repo>/work/local-cluster),
# STCORR_DOWN_GRACE (seconds between SIGTERM and SIGKILL per step, default 10).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
STATE=${STCORR_CLUSTER_DIR:-$REPO/work/local-cluster}
PIDS=$STATE/pids
GRACE=${STCORR_DOWN_GRACE:-10}
SERVICES=(mlflow prefect ray-worker ray-head s3)  # reverse start order

if [[ ! -d $PIDS || ! -s $STATE/cluster.id ]]; then
  echo "down.sh: no local cluster state in $STATE; nothing to stop"
  exit 0
fi
MARK=STCORR_LOCAL_CLUSTER_ID=$(cat "$STATE/cluster.id")

session() {  # session SID: live (non-zombie) pids of the session
  ps -e -o pid=,sid=,stat= | awk -v s="$1" '$2 == s && $3 !~ /^Z/ {print $1}'
}

ours() {  # ours SID: whether a process of the session carries this cluster's marker
  local pid env
  for pid in $(session "$1"); do
    env=$(tr '\0' '\n' < "/proc/$pid/environ" 2> /dev/null || true)
    grep -qxF "$MARK" <<< "$env" && return 0
  done
  return 1
}

named() {  # named COMM PID...: the pids whose command name is COMM
  local comm=$1 pid; shift
  for pid in "$@"; do
    [[ $(cat "/proc/$pid/comm" 2> /dev/null || true) == "$comm" ]] && echo "$pid"
  done
  return 0
}

running() {  # running PID...: those of the pids still running (zombies count as gone)
  (( $# )) || return 0
  ps -o pid=,stat= -p "$(IFS=,; echo "$*")" | awk '$2 !~ /^Z/ {print $1}' || true
}

wait_gone() {  # wait_gone SECONDS PID...: poll until none of the pids runs; print the survivors
  local deadline=$((SECONDS + $1)) left; shift
  while left=$(running "$@"); [[ -n $left ]] && (( SECONDS < deadline )); do sleep 0.3; done
  echo $left
}

terminate() {  # terminate PID...: SIGTERM, wait up to GRACE seconds, then SIGKILL what is left
  (( $# )) || return 0
  kill -TERM "$@" 2> /dev/null || true
  local left
  left=$(wait_gone "$GRACE" "$@")
  [[ -z $left ]] && return 0
  echo "down.sh: SIGKILL to $left (still running ${GRACE}s after SIGTERM)"
  # shellcheck disable=SC2086  # one pid per word
  kill -KILL $left 2> /dev/null || true
  # shellcheck disable=SC2086
  wait_gone 10 $left > /dev/null  # the kernel needs a moment on a loaded machine
}

stop() {  # stop NAME SID: one round over the session's current processes
  local -a pids raylet gcs rest
  mapfile -t pids < <(session "$2")
  if [[ $1 == ray-* ]]; then
    # Ray's own stop order: raylet first, then the agents and workers, gcs_server last.
    mapfile -t raylet < <(named raylet "${pids[@]}")
    mapfile -t gcs < <(named gcs_server "${pids[@]}")
    mapfile -t rest < <(printf '%s\n' "${pids[@]}" | grep -vxF -f <(printf '%s\n' "${raylet[@]}" "${gcs[@]}" x))
    terminate "${raylet[@]}"
    terminate "${rest[@]}"
    terminate "${gcs[@]}"
  else
    terminate "${pids[@]}"
  fi
}

status=0
compgen -G "$PIDS/*.pid" > /dev/null || echo "down.sh: no services recorded in $PIDS; nothing to stop"
for name in "${SERVICES[@]}"; do
  [[ -s $PIDS/$name.pid ]] || continue
  sid=$(cat "$PIDS/$name.pid")
  if [[ -z $(session "$sid") ]]; then
    echo "down.sh: $name already stopped"
  elif ! ours "$sid"; then
    echo "down.sh: $name: session $sid is not this cluster's (no $MARK); left alone"
  else
    # Decided once: later rounds also take processes without the marker (Ray's dashboard agent
    # gets an environment of its own), and processes spawned while the first round ran.
    for _ in 1 2 3; do
      [[ -z $(session "$sid") ]] && break
      stop "$name" "$sid"
    done
    left=$(session "$sid")
    if [[ -n $left ]]; then
      echo "down.sh: $name: processes survived SIGKILL:" $left >&2
      status=1
      continue  # keep the pid file so a second down.sh can try again
    fi
    echo "down.sh: stopped $name"
  fi
  rm -f "$PIDS/$name.pid"
done
# env.sh points at services that are gone now; up.sh writes a new one.
(( status )) || rm -f "$STATE/env.sh"
exit $status
