"""infra/local/up.sh and down.sh for real: S3 (moto), two Ray nodes, Prefect and MLflow on free
ports in a temporary state folder; every service answers, and down.sh leaves nothing behind."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
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
