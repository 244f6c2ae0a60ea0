"""infra/local/up.sh and down.sh for real: S3 (moto), two Ray nodes, Prefect and MLflow on free
ports in a temporary state folder; every service answers, and down.sh leaves nothing behind."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import boto3
import psutil
import pytest

REPO = Path(__file__).resolve().parents[1]
UP = REPO / "infra" / "local" / "up.sh"
DOWN = REPO / "infra" / "local" / "down.sh"
SERVICES = ("s3", "ray-head", "ray-worker", "prefect", "mlflow")

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
        return True


def session_members(sids: set[int]) -> dict[int, str]:
    """Live (non-zombie) processes in any of the sessions ``sids``: pid -> name."""
    found = {}
    for proc in psutil.process_iter(["pid", "status", "name"]):
        try:
            if proc.info["status"] != psutil.STATUS_ZOMBIE and os.getsid(proc.pid) in sids:
                found[proc.pid] = str(proc.info["name"])
        except (ProcessLookupError, psutil.Error):
            pass
    return found


def sourced(state: Path, code: str, timeout: float = 90) -> str:
    """Run Python after `source env.sh`, as a user would; return its stdout."""
    command = f'source "{state}/env.sh" && exec "{REPO}/.venv/bin/python" -c "$0"'
    out = subprocess.run(["bash", "-c", command, code], capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    state = tmp_path_factory.mktemp("local-cluster")
    ray_tmp = tempfile.mkdtemp(prefix="stcorr-ray-", dir="/tmp")  # short: Ray's unix socket paths
    ports = {"s3": free_port(), "ray": free_port(), "prefect": free_port(), "mlflow": free_port()}
    env = {**os.environ, "STCORR_CLUSTER_DIR": str(state), "STCORR_RAY_TMPDIR": ray_tmp,
           "STCORR_S3_PORT": str(ports["s3"]), "STCORR_RAY_PORT": str(ports["ray"]),
           "STCORR_PREFECT_PORT": str(ports["prefect"]), "STCORR_MLFLOW_PORT": str(ports["mlflow"]),
           "STCORR_DOWN_GRACE": "5"}
    info: dict[str, object] = {"state": state, "ports": ports, "env": env}
    try:
        up = subprocess.run([str(UP)], env=env, capture_output=True, text=True, timeout=140)
        assert up.returncode == 0, up.stdout[-2000:] + up.stderr[-3000:]
        info["sids"] = {int((state / "pids" / f"{name}.pid").read_text()) for name in SERVICES}
        yield info
    finally:
        subprocess.run([str(DOWN)], env=env, capture_output=True, timeout=120)
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_state_folder_layout(cluster: dict[str, object]) -> None:
    state = Path(str(cluster["state"]))
    assert {p.stem for p in (state / "pids").glob("*.pid")} == set(SERVICES)
    assert {f"{name}.log" for name in SERVICES} <= {p.name for p in (state / "logs").iterdir()}
    env = (state / "env.sh").read_text()
    ports = cluster["ports"]
    assert isinstance(ports, dict)
    assert f"export STCORR_COMPUTE__RAY_ADDRESS=127.0.0.1:{ports['ray']}\n" in env
    assert f"export STCORR_STORAGE__S3_ENDPOINT_URL=http://127.0.0.1:{ports['s3']}\n" in env
    assert "export RAY_AUTH_MODE=token\n" in env


def test_s3_bucket_listable(cluster: dict[str, object]) -> None:
    ports = cluster["ports"]
    assert isinstance(ports, dict)
    client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{ports['s3']}", region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    client.put_object(Bucket="stcorr", Key="runs/hello.txt", Body=b"hi")
    keys = [o["Key"] for o in client.list_objects_v2(Bucket="stcorr").get("Contents", [])]
    assert "runs/hello.txt" in keys


def test_ray_has_two_alive_nodes_that_run_tasks(cluster: dict[str, object]) -> None:
    code = """
import json, os, ray
ray.init(address=os.environ["STCORR_COMPUTE__RAY_ADDRESS"], logging_level="ERROR", log_to_driver=False)
alive = [n for n in ray.nodes() if n["Alive"]]
@ray.remote(num_cpus=1)
def node():
    return ray.get_runtime_context().get_node_id()
ids = ray.get([node.options(resources={r: 1}).remote() for r in ("node_head", "node_worker")])
print(json.dumps({"alive": len(alive), "labels": sorted(k for n in alive for k in n["Resources"]
                  if k.startswith("node_")), "distinct": len(set(ids))}))
"""
    result = json.loads(sourced(Path(str(cluster["state"])), code).splitlines()[-1])
    assert result == {"alive": 2, "labels": ["node_head", "node_worker"], "distinct": 2}


def test_prefect_and_mlflow_healthy(cluster: dict[str, object]) -> None:
    ports = cluster["ports"]
    assert isinstance(ports, dict)
    with urllib.request.urlopen(f"http://127.0.0.1:{ports['prefect']}/api/health", timeout=5) as r:
        assert json.loads(r.read()) is True
    with urllib.request.urlopen(f"http://127.0.0.1:{ports['mlflow']}/health", timeout=5) as r:
        assert r.read() == b"OK"


def test_mlflow_artifacts_land_in_s3(cluster: dict[str, object]) -> None:
    code = """
import boto3, mlflow, os
mlflow.set_experiment("cluster-test")
with mlflow.start_run() as run:
    mlflow.log_text("proxied", "notes/hello.txt")
s3 = boto3.client("s3", endpoint_url=os.environ["MLFLOW_S3_ENDPOINT_URL"])
keys = [o["Key"] for o in s3.list_objects_v2(Bucket="stcorr", Prefix="mlartifacts/").get("Contents", [])]
print([k for k in keys if run.info.run_id in k and k.endswith("notes/hello.txt")])
"""
    last = sourced(Path(str(cluster["state"])), code).splitlines()[-1]
    assert last.startswith("['mlartifacts/") and last.endswith("/artifacts/notes/hello.txt']")


def test_up_refuses_a_second_start(cluster: dict[str, object], tmp_path: Path) -> None:
    env = cluster["env"]
    assert isinstance(env, dict)
    again = subprocess.run([str(UP)], env=env, capture_output=True, text=True, timeout=30)
    assert again.returncode == 1 and "already running" in again.stderr
    elsewhere = subprocess.run([str(UP)], env={**env, "STCORR_CLUSTER_DIR": str(tmp_path)},
                               capture_output=True, text=True, timeout=30)
    assert elsewhere.returncode == 1 and "already in use" in elsewhere.stderr


TINY_CLUSTER = [
    "data.synth.images=32", "data.synth.image_size=48", "data.synth.videos=6", "data.synth.video_frames=8",
    "data.synth.video_size=[64, 96]", "data.synth.davis_sequences=2", "data.synth.vip_sequences=1",
    "data.synth.jhmdb_sequences=1", "data.synth.benchmark_frames=5",
    "data.synth.benchmark_size=[64, 96]", "shard.samples_per_shard=8", "compute.loader_workers=0",
    "pretrain.steps=4", "pretrain.batch_size=8", "pretrain.image_size=32", "pretrain.checkpoint_every=4",
    "pretrain.moco.queue=64", "pretrain.moco.hidden=64", "finetune.steps=10", "finetune.batch_size=2",
    "finetune.crop_size=64", "finetune.checkpoint_every=2", "finetune.log_every=1",
    "evaluate.benchmarks=[davis]", "evaluate.baselines=[lab]",
    # One worker per 1-CPU node, so both nodes train; no GPUs here (the profile asks for them).
    "compute.workers=2", "compute.cpus_per_worker=1", "compute.pretrain.workers=2",
    "compute.pretrain.gpus_per_worker=0", "compute.finetune.gpus_per_worker=0",
]  # fmt: skip


def _stcorr(state: Path, cwd: Path, *args: str) -> subprocess.Popen[str]:
    """``stcorr <args> --profile cluster`` after sourcing env.sh, in ``cwd``."""
    sets = [a for item in [*TINY_CLUSTER, f"data.synthetic_root={cwd / 'data'}"] for a in ("--set", item)]
    command = [str(REPO / ".venv/bin/stcorr"), *args, "--config", str(REPO / "pipeline_config.yaml"),
               "--profile", "cluster", *sets]
    script = f'source "{state}/env.sh" && exec "$@"'
    return subprocess.Popen(["bash", "-c", script, "stcorr", *command], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _mlflow_runs(base: str) -> list[dict]:
    request = urllib.request.Request(f"{base}/api/2.0/mlflow/experiments/get-by-name?experiment_name=stcorr")
    with urllib.request.urlopen(request, timeout=30) as answer:
        experiment = json.loads(answer.read())["experiment"]["experiment_id"]
    body = json.dumps({"experiment_ids": [experiment], "max_results": 500}).encode()
    request = urllib.request.Request(f"{base}/api/2.0/mlflow/runs/search", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        return list(json.loads(answer.read()).get("runs", []))


def _tags(run: dict) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}


def _restart_mlflow(cluster: dict[str, object]) -> subprocess.Popen[bytes]:
    """The same server command up.sh runs, on the same port, store and bucket."""
    state, ports = Path(str(cluster["state"])), cluster["ports"]
    assert isinstance(ports, dict)
    command = (f'source "{state}/env.sh" && MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false '
               f'exec "{REPO}/.venv/bin/mlflow" server --host 127.0.0.1 --port {ports["mlflow"]} --workers 1 '
               f'--backend-store-uri sqlite:///{state}/mlflow/mlflow.db '
               "--artifacts-destination s3://stcorr/mlartifacts")
    log = open(state / "logs" / "mlflow-restarted.log", "ab")  # noqa: SIM115 - lives with the server
    server = subprocess.Popen(["bash", "-c", command], stdout=log, stderr=log, start_new_session=True)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{ports['mlflow']}/health", timeout=2):
                return server
        except OSError:
            time.sleep(0.5)
    raise AssertionError("the restarted MLflow server did not become healthy")


def test_pipeline_on_the_cluster_survives_an_mlflow_outage(
    cluster: dict[str, object], tmp_path: Path
) -> None:
    """The tiny pipeline with --profile cluster: the MLflow server is stopped during finetune (the
    run fails with one line naming it), restarted, and `stcorr resume` finishes. Then: training ran
    on both Ray nodes; shards, checkpoints and MLflow artifacts are S3 objects; runs and metrics
    are readable over MLflow's REST API; the flow run is COMPLETED in Prefect's API."""
    state, ports = Path(str(cluster["state"])), cluster["ports"]
    assert isinstance(ports, dict)
    mlflow_url, prefect_url = f"http://127.0.0.1:{ports['mlflow']}", f"http://127.0.0.1:{ports['prefect']}/api"
    proc = _stcorr(state, tmp_path, "run")
    seen: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        seen.append(line)
        if any("finetune: starting" in s for s in seen[:-1]) and "  step 2/" in line:
            break
    mlflow_sid = int((state / "pids" / "mlflow.pid").read_text())
    os.killpg(mlflow_sid, signal.SIGKILL)  # the tracking server dies mid-run
    out = "".join(seen) + proc.communicate(timeout=600)[0]
    assert proc.returncode == 1, out[-3000:]
    expected = f"stcorr: error: tracking.uri: the MLflow server at {mlflow_url} stopped answering"
    assert expected in out, out[-3000:]

    server = _restart_mlflow(cluster)
    try:
        resumed = _stcorr(state, tmp_path, "resume")
        out = resumed.communicate(timeout=900)[0]
        assert resumed.returncode == 0, out[-4000:]
        assert "pretrain: up to date" in out and "teacher: up to date" in out

        runs = _mlflow_runs(mlflow_url)
        finished = {}
        for run in runs:
            tags = _tags(run)
            if run["info"]["status"] == "FINISHED" and tags.get("stcorr.fingerprint"):
                finished.setdefault(tags["stcorr.stage"], []).append(run)
        assert {stage: len(found) for stage, found in finished.items() if stage != "shard"} == {
            "pretrain": 1, "teacher": 1, "finetune": 1, "evaluate": 1}  # nothing ran twice
        assert not [r for r in runs if r["info"]["status"] == "RUNNING"]  # the orphan was ended
        for stage in ("pretrain", "finetune"):
            nodes = _tags(finished[stage][0])["stcorr.ray_nodes"].split(",")
            assert len(nodes) == 2, (stage, nodes)  # one worker on each Ray node
        finetune = finished["finetune"][0]["info"]["run_id"]
        query = f"{mlflow_url}/api/2.0/mlflow/metrics/get-history?run_id={finetune}&metric_key=loss"
        with urllib.request.urlopen(query, timeout=30) as answer:
            steps = {m["step"] for m in json.loads(answer.read())["metrics"]}
        assert max(steps) == 10 and len(steps) >= 5

        s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{ports['s3']}", region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
        keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket="stcorr")
                for o in page.get("Contents", [])]
        assert any(k.startswith("runs/shards/images-") and k.endswith(".tar") for k in keys)
        assert any(k.startswith("runs/ray/finetune-") and "/checkpoint_" in k for k in keys)
        assert any(k.startswith("mlartifacts/") and k.endswith("report.md") for k in keys)
        assert any(k.startswith("mlartifacts/") and finetune in k for k in keys)

        body = json.dumps({"flows": {"name": {"any_": ["stcorr-pipeline"]}}}).encode()
        request = urllib.request.Request(f"{prefect_url}/flow_runs/filter", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as answer:
            states = sorted(run["state_type"] for run in json.loads(answer.read()))
        assert "COMPLETED" in states and len(states) == 2, states  # the failed run, then the resume
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)


def test_down_stops_exactly_its_processes(cluster: dict[str, object]) -> None:
    env, sids, ports = cluster["env"], cluster["sids"], cluster["ports"]
    assert isinstance(env, dict) and isinstance(sids, set) and isinstance(ports, dict)
    bystander = subprocess.Popen(["sleep", "60"])  # not ours: must survive
    try:
        assert session_members(sids)
        down = subprocess.run([str(DOWN)], env=env, capture_output=True, text=True, timeout=120)
        assert down.returncode == 0, down.stdout + down.stderr
        assert session_members(sids) == {}, down.stdout + down.stderr
        assert all(port_is_free(port) for port in ports.values())
        assert bystander.poll() is None
        again = subprocess.run([str(DOWN)], env=env, capture_output=True, text=True, timeout=30)
        assert again.returncode == 0  # idempotent
    finally:
        bystander.kill()
        bystander.wait()
