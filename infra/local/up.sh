#!/usr/bin/env bash
# A local stcorr cluster on this machine, on 127.0.0.1: an S3 API server (moto), a Ray head and a
# second Ray node, a Prefect server and an MLflow server (SQLite backend, artifacts proxied to S3).
#
#   infra/local/up.sh                       # start everything, wait until each service is healthy
#   source work/local-cluster/env.sh        # point stcorr and the ray/prefect/mlflow CLIs at it
#   stcorr run --profile cluster
#   infra/local/down.sh                     # stop exactly what up.sh started
#
# Settings (environment, with defaults):
#   STCORR_VENV=<repo>/.venv                STCORR_CLUSTER_DIR=<repo>/work/local-cluster
#   STCORR_S3_PORT=9010  STCORR_RAY_PORT=6390  STCORR_PREFECT_PORT=4210  STCORR_MLFLOW_PORT=5010
#   STCORR_S3_BUCKET=stcorr   STCORR_RAY_HEAD_CPUS=1   STCORR_RAY_WORKER_CPUS=1
#   STCORR_RAY_OBJECT_STORE_MB=512   STCORR_UP_TIMEOUT=150 (seconds per service)
#   STCORR_RAY_TMPDIR=<state>/ray, or /tmp/stcorr-ray-<hash> when that path is too long for Ray's
#   unix sockets (107 bytes including the session folder).
#
# The state folder holds logs/ (one log per service), pids/ (the session id of each service: every
# process a service starts stays in that session), cluster.id (a random marker in the environment
# of every process we start, so down.sh never touches anything else) and env.sh.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
VENV=${STCORR_VENV:-$REPO/.venv}
STATE=${STCORR_CLUSTER_DIR:-$REPO/work/local-cluster}
mkdir -p "$STATE"
STATE=$(cd "$STATE" && pwd)
LOGS=$STATE/logs
PIDS=$STATE/pids
HOST=127.0.0.1
S3_PORT=${STCORR_S3_PORT:-9010}
RAY_PORT=${STCORR_RAY_PORT:-6390}
PREFECT_PORT=${STCORR_PREFECT_PORT:-4210}
MLFLOW_PORT=${STCORR_MLFLOW_PORT:-5010}
BUCKET=${STCORR_S3_BUCKET:-stcorr}
HEAD_CPUS=${STCORR_RAY_HEAD_CPUS:-1}
WORKER_CPUS=${STCORR_RAY_WORKER_CPUS:-1}
OBJECT_STORE_BYTES=$(( ${STCORR_RAY_OBJECT_STORE_MB:-512} * 1024 * 1024 ))
TIMEOUT=${STCORR_UP_TIMEOUT:-150}
SERVICES=(s3 ray-head ray-worker prefect mlflow)  # start order; down.sh stops in reverse

fail() { echo "up.sh: $*" >&2; exit 1; }

[[ -x $VENV/bin/ray && -x $VENV/bin/prefect && -x $VENV/bin/mlflow && -x $VENV/bin/moto_server ]] \
  || fail "$VENV has no ray/prefect/mlflow/moto_server; run 'make setup' or set STCORR_VENV"
VENV=$(cd "$VENV" && pwd)  # absolute: the services run from the repository root

launch() {  # launch NAME CMD...: run CMD in a session of its own, log to logs/NAME.log
  local name=$1; shift
  setsid "$@" > "$LOGS/$name.log" 2>&1 < /dev/null &
  echo $! > "$PIDS/$name.pid"
  echo "up.sh: started $name (session $!)"
}

alive() {  # alive NAME: whether any process of NAME's session is still running
  ps -e -o sid=,stat= | awk -v s="$(cat "$PIDS/$1.pid")" '$1 == s && $2 !~ /^Z/ {f = 1} END {exit !f}'
}

unhealthy() {  # unhealthy NAME WHY: report with the log tail and fail (the EXIT trap stops everything)
  echo "up.sh: $1 is not healthy: $2; last lines of $LOGS/$1.log:" >&2
  tail -n 25 "$LOGS/$1.log" | sed 's/^/    /' >&2
  exit 1
}

wait_http() {  # wait_http NAME URL: poll URL until it answers 2xx
  local name=$1 url=$2 deadline=$((SECONDS + TIMEOUT))
  until curl -fsS -o /dev/null -m 3 "$url" 2> /dev/null; do
    alive "$name" || unhealthy "$name" "it exited before $url answered"
    (( SECONDS < deadline )) || unhealthy "$name" "$url did not answer within ${TIMEOUT}s"
    sleep 0.5
  done
  echo "up.sh: $name healthy ($url)"
}

wait_exit() {  # wait_exit NAME: wait for a `ray start` (which returns once its node is up) to succeed
  local name=$1 pid deadline=$((SECONDS + TIMEOUT))
  pid=$(cat "$PIDS/$name.pid")
  while kill -0 "$pid" 2> /dev/null && [[ $(ps -o stat= -p "$pid") != Z* ]]; do
    (( SECONDS < deadline )) || unhealthy "$name" "ray start did not finish within ${TIMEOUT}s"
    sleep 0.5
  done
  wait "$pid" || unhealthy "$name" "ray start exited with status $?"
}

free_ports() {  # free_ports N: N ports the kernel says are free now, none of the four above
  "$VENV/bin/python" - "$1" "$S3_PORT" "$RAY_PORT" "$PREFECT_PORT" "$MLFLOW_PORT" <<'EOF'
import socket, sys
taken, ports, socks = set(map(int, sys.argv[2:])), [], []
while len(ports) < int(sys.argv[1]):
    s = socket.socket()
    s.bind(("", 0))
    socks.append(s)  # held open until all are chosen, so no port comes twice
    if s.getsockname()[1] not in taken:
        ports.append(s.getsockname()[1])
print(" ".join(map(str, ports)))
EOF
}

ray_node_ports() {  # flags for the ports Ray would otherwise take from fixed defaults (52365, 10001)
  echo "--node-manager-port $1 --object-manager-port $2 --dashboard-agent-listen-port $3" \
    "--dashboard-agent-grpc-port $4 --runtime-env-agent-port $5 --metrics-export-port $6"
}

# Ray puts unix sockets at <tmp>/<node>/session_<date>_<pid>/sockets/plasma_store (+69 bytes).
RAY_TMP=${STCORR_RAY_TMPDIR:-$STATE/ray}
if [[ -z ${STCORR_RAY_TMPDIR:-} && ${#RAY_TMP} -gt 36 ]]; then
  RAY_TMP=/tmp/stcorr-ray-$(printf '%s' "$STATE" | cksum | cut -d' ' -f1)
fi

# -- refuse to start twice, or on ports someone else holds ----------------------------------------
for name in "${SERVICES[@]}"; do
  if [[ -s $PIDS/$name.pid ]] && alive "$name"; then
    fail "a local cluster is already running from $STATE ($name); stop it with infra/local/down.sh"
  fi
done
busy=$("$VENV/bin/python" - "$S3_PORT" "$RAY_PORT" "$PREFECT_PORT" "$MLFLOW_PORT" <<'EOF'
import socket, sys
for port in map(int, sys.argv[1:]):
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", port))  # Ray's GCS binds every interface, so test them all
        except OSError:
            print(port, end=" ")
EOF
)
[[ -z $busy ]] || fail "port(s) ${busy% } already in use; free them or set STCORR_S3_PORT / STCORR_RAY_PORT /" \
  "STCORR_PREFECT_PORT / STCORR_MLFLOW_PORT"

rm -rf "$PIDS" "$LOGS" "$STATE/env.sh"  # a stale env.sh must not outlive a failed start
mkdir -p "$PIDS" "$LOGS" "$RAY_TMP" "$STATE/prefect" "$STATE/mlflow"

# -- the environment every service inherits --------------------------------------------------------
CLUSTER_ID=$("$VENV/bin/python" -c 'import secrets; print(secrets.token_hex(8))')
echo "$CLUSTER_ID" > "$STATE/cluster.id"
export STCORR_LOCAL_CLUSTER_ID=$CLUSTER_ID
# Every node and driver must agree on token auth (docs/stack.md 1.1). The token lives in the state folder
# (RAY_AUTH_TOKEN_PATH), so Ray never writes ~/.ray/auth_token.
TOKEN=$STATE/ray_auth_token
[[ -s $TOKEN ]] || (umask 077 && "$VENV/bin/python" -c 'import secrets; print(secrets.token_hex(32))' > "$TOKEN")
export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=$TOKEN RAY_USAGE_STATS_ENABLED=0
# moto accepts any key; Ray workers and the MLflow server read these to reach S3.
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION=us-east-1
export MLFLOW_S3_ENDPOINT_URL=http://$HOST:$S3_PORT
export PREFECT_HOME=$STATE/prefect PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=1
# One MLflow worker and no job runner: healthy in ~20 s instead of ~60 s, clean stop on SIGTERM.
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false
unset RAY_ADDRESS PREFECT_API_URL
cd "$REPO"  # Ray workers inherit this cwd, so relative paths (work/...) mean what they mean in the CLI

ok=0
trap '[[ $ok == 1 ]] || { echo "up.sh: stopping what was started" >&2; STCORR_CLUSTER_DIR=$STATE "$REPO/infra/local/down.sh" >&2 || true; }' EXIT

# -- 1. S3 API server, then the bucket -------------------------------------------------------------
launch s3 "$VENV/bin/moto_server" -H "$HOST" -p "$S3_PORT"
wait_http s3 "http://$HOST:$S3_PORT/"
"$VENV/bin/python" - "http://$HOST:$S3_PORT" "$BUCKET" <<'EOF' || unhealthy s3 "cannot create the bucket"
import sys, boto3
client = boto3.client("s3", endpoint_url=sys.argv[1])
if sys.argv[2] not in [b["Name"] for b in client.list_buckets().get("Buckets", [])]:
    client.create_bucket(Bucket=sys.argv[2])
EOF
echo "up.sh: bucket s3://$BUCKET ready"

# -- 2. Ray head; Prefect and MLflow start meanwhile (they need nothing from Ray) ------------------
read -r -a P <<< "$(free_ports 13)"
# shellcheck disable=SC2046  # the port flags are meant to split into words
launch ray-head "$VENV/bin/ray" start --head --node-ip-address "$HOST" --port "$RAY_PORT" \
  --num-cpus "$HEAD_CPUS" --num-gpus 0 --resources '{"node_head": 1}' --include-dashboard false \
  --disable-usage-stats --temp-dir "$RAY_TMP/head" --object-store-memory "$OBJECT_STORE_BYTES" \
  --ray-client-server-port "${P[0]}" $(ray_node_ports "${P[@]:1:6}")
launch prefect "$VENV/bin/prefect" server start --host "$HOST" --port "$PREFECT_PORT" --analytics-off
launch mlflow "$VENV/bin/mlflow" server --host "$HOST" \
  --port "$MLFLOW_PORT" --workers 1 --backend-store-uri "sqlite:///$STATE/mlflow/mlflow.db" \
  --artifacts-destination "s3://$BUCKET/mlartifacts"

wait_exit ray-head
echo "up.sh: ray-head healthy ($HOST:$RAY_PORT)"

# -- 3. The second Ray node -------------------------------------------------------------------------
# shellcheck disable=SC2046
launch ray-worker "$VENV/bin/ray" start --address "$HOST:$RAY_PORT" --node-ip-address "$HOST" \
  --num-cpus "$WORKER_CPUS" --num-gpus 0 --resources '{"node_worker": 1}' --disable-usage-stats \
  --temp-dir "$RAY_TMP/worker" --object-store-memory "$OBJECT_STORE_BYTES" $(ray_node_ports "${P[@]:7:6}")
wait_exit ray-worker
"$VENV/bin/python" - "$HOST:$RAY_PORT" > "$LOGS/ray-check.log" 2>&1 <<'EOF' || unhealthy ray-worker \
  "the cluster does not show 2 alive nodes (see $LOGS/ray-check.log)"
import sys, time, ray
ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
for _ in range(40):
    alive = [n for n in ray.nodes() if n["Alive"]]
    if len(alive) == 2:
        print("2 alive nodes:", [sorted(k for k in n["Resources"] if k.startswith("node_")) for n in alive])
        sys.exit(0)
    time.sleep(0.5)
sys.exit(f"expected 2 alive Ray nodes, found {len(alive)}")
EOF
echo "up.sh: ray-worker healthy (2 alive nodes)"

# -- 4. Prefect and MLflow ---------------------------------------------------------------------------
wait_http prefect "http://$HOST:$PREFECT_PORT/api/health"
wait_http mlflow "http://$HOST:$MLFLOW_PORT/health"

# -- env.sh: what a shell needs to use the cluster -----------------------------------------------------
{
  echo "# Written by infra/local/up.sh on $(date -u +%FT%TZ). Use: source $STATE/env.sh"
  echo "# Points stcorr (STCORR_* overrides) and the ray/prefect/mlflow CLIs at the local cluster."
  for kv in \
    "STCORR_COMPUTE__RAY_ADDRESS=$HOST:$RAY_PORT" \
    "STCORR_COMPUTE__PREFECT_API_URL=http://$HOST:$PREFECT_PORT/api" \
    "STCORR_TRACKING__URI=http://$HOST:$MLFLOW_PORT" \
    "STCORR_TRACKING__ARTIFACT_LOCATION=null" \
    "STCORR_STORAGE__ROOT=s3://$BUCKET/runs" \
    "STCORR_STORAGE__S3_ENDPOINT_URL=http://$HOST:$S3_PORT" \
    "STCORR_DATA__SOURCE=synthetic" \
    "STCORR_COMPUTE__CPUS_PER_WORKER=1" "STCORR_COMPUTE__LOADER_WORKERS=0" \
    "STCORR_COMPUTE__PRETRAIN__WORKERS=2" "STCORR_COMPUTE__PRETRAIN__GPUS_PER_WORKER=0" \
    "STCORR_COMPUTE__FINETUNE__GPUS_PER_WORKER=0" \
    "AWS_ACCESS_KEY_ID=testing" "AWS_SECRET_ACCESS_KEY=testing" "AWS_DEFAULT_REGION=us-east-1" \
    "MLFLOW_S3_ENDPOINT_URL=http://$HOST:$S3_PORT" \
    "MLFLOW_TRACKING_URI=http://$HOST:$MLFLOW_PORT" \
    "PREFECT_API_URL=http://$HOST:$PREFECT_PORT/api" \
    "RAY_AUTH_MODE=token" "RAY_AUTH_TOKEN_PATH=$TOKEN" "RAY_USAGE_STATS_ENABLED=0" \
    "STCORR_APP_DIR=$REPO"; do
    printf 'export %s=%q\n' "${kv%%=*}" "${kv#*=}"
  done
} > "$STATE/env.sh"
ln -sfn "$RAY_TMP/head/session_latest/logs" "$LOGS/ray-head-session"
ln -sfn "$RAY_TMP/worker/session_latest/logs" "$LOGS/ray-worker-session"

ok=1
cat <<EOF
up.sh: local cluster ready in ${SECONDS}s
  S3 (moto)  http://$HOST:$S3_PORT   bucket s3://$BUCKET
  Ray        $HOST:$RAY_PORT          2 nodes (resources node_head, node_worker)
  Prefect    http://$HOST:$PREFECT_PORT/api
  MLflow     http://$HOST:$MLFLOW_PORT
  logs       $LOGS
Next: source $STATE/env.sh && stcorr run --profile cluster;   stop: infra/local/down.sh
EOF
