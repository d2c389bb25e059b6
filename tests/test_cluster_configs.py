"""Cluster configs (DESIGN §8): the launcher YAMLs against Ray's own schema and loader, the KubeRay manifests
against the CRDs' openAPIV3Schema, and the properties that matter: GPU workers scale from 0, the head has no
GPU, the dashboard stays on loopback, token authentication stays on. The slow test runs Ray's fake_multinode
autoscaler (DESIGN §9) on this machine with cluster/fake-multinode.yaml."""
from __future__ import annotations

import copy
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml

from servers import clean_env, free_port, kill_session, log_tail, start  # the end-to-end tests' process helpers

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"
CRDS = Path(__file__).parent / "data" / "kuberay-crds"  # copies of the KubeRay CRDs, so a fresh clone has them
LAUNCHERS = ["aws.yaml", "gcp.yaml"]
KUBERAY = {"raycluster.yaml": "ray.io_rayclusters.yaml", "rayjob.yaml": "ray.io_rayjobs.yaml"}

# Accelerators each provider's node_config asks for; AWS counts come from the EC2 instance-type sheet.
AWS_GPUS = {"g5.2xlarge": 1, "p4d.24xlarge": 8}
ACCELERATORS = {
    "aws": lambda nc: AWS_GPUS.get(nc["InstanceType"], 0),
    "gcp": lambda nc: sum(a["acceleratorCount"] for a in nc.get("guestAccelerators", [])),
}
SPOT = {
    "aws": lambda nc: nc.get("InstanceMarketOptions", {}).get("MarketType") == "spot",
    "gcp": lambda nc: nc.get("scheduling", {}).get("preemptible") is True,
}
# Ray passes node_config to EC2 RunInstances / GCE instances.insert unchecked: a typo here would fail at launch.
NODE_CONFIG_KEYS = {
    "aws": {"InstanceType", "ImageId", "BlockDeviceMappings", "InstanceMarketOptions", "IamInstanceProfile"},
    "gcp": {"machineType", "disks", "guestAccelerators", "scheduling", "metadata", "serviceAccounts"},
}


def load(path: Path) -> dict:
    return yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # C: 6x faster


def launcher(name: str) -> dict:
    return load(CLUSTER / name)


def launcher_errors(config: dict) -> list[str]:
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    return [e.message for e in jsonschema.Draft7Validator(schema).iter_errors(config)]


def kuberay(name: str) -> dict:
    return load(CLUSTER / "kuberay" / name)


def cluster_spec(name: str) -> dict:
    spec = kuberay(name)["spec"]
    return spec.get("rayClusterSpec", spec)


def ray_loader(config: dict) -> dict:
    """What `ray up` does before it needs cloud credentials: fill defaults, then validate."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def strict(schema):
    """Kubernetes (kubectl's default strict field validation) rejects unknown fields; jsonschema only does
    that where additionalProperties is false, so add it to every object schema that lists its properties."""
    if isinstance(schema, dict):
        schema = {k: strict(v) for k, v in schema.items()}
        closed = "properties" in schema and not schema.get("x-kubernetes-preserve-unknown-fields")
        if closed and "additionalProperties" not in schema:
            schema["additionalProperties"] = False
    elif isinstance(schema, list):
        schema = [strict(v) for v in schema]
    return schema


@functools.lru_cache(maxsize=None)
def crd_validator(crd_file: str, version: str) -> jsonschema.Draft7Validator:
    crd = load(CRDS / crd_file)
    (entry,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    return jsonschema.Draft7Validator(strict(entry["schema"]["openAPIV3Schema"]))


def manifest_errors(manifest: dict, crd_file: str) -> list[str]:
    version = manifest["apiVersion"].split("/")[1]
    return [e.message for e in crd_validator(crd_file, version).iter_errors(manifest)]


def auth_modes(node) -> list[str]:
    """Every value RAY_AUTH_MODE (or KubeRay's authOptions.mode) is given anywhere inside a parsed YAML."""
    if isinstance(node, str):
        return re.findall(r"RAY_AUTH_MODE=(\w+)", node)
    if isinstance(node, list):
        return [m for v in node for m in auth_modes(v)]
    if isinstance(node, dict):
        own = [node["value"]] if node.get("name") == "RAY_AUTH_MODE" else []
        own += [node["authOptions"]["mode"]] if "authOptions" in node else []
        return own + [m for k, v in node.items() for m in auth_modes(k) + auth_modes(v)]
    return []


# ---------------------------------------------------------------------------------------- launcher configs
def test_fake_multinode_config_passes_ray_schema():
    assert launcher_errors(launcher("fake-multinode.yaml")) == []


@pytest.mark.parametrize("name", LAUNCHERS)
def test_launcher_passes_ray_schema_and_loader(name):
    config = launcher(name)
    assert launcher_errors(config) == []
    prepared = ray_loader(config)
    # The loader ran: it caps the head type at 0 workers and prepends the common setup commands.
    assert prepared["available_node_types"]["head"]["max_workers"] == 0
    assert prepared["head_setup_commands"][0] == "pip install --quiet -e /home/ray/imlca"
    known = NODE_CONFIG_KEYS[config["provider"]["type"]]  # the one part Ray's schema leaves open
    assert all(set(t["node_config"]) <= known for t in config["available_node_types"].values())


@pytest.mark.parametrize("break_it, named", [
    (lambda c: c.update(idle_timeout_minute=5), "idle_timeout_minute"),  # misspelled top-level key
    (lambda c: c["available_node_types"]["head"].update(min_worker=0), "min_worker"),  # misspelled node key
    (lambda c: c.update(max_workers="ten"), "'ten'"),
    (lambda c: c["available_node_types"]["head"]["resources"].update(GPU=-1), "-1"),
])
@pytest.mark.parametrize("name", LAUNCHERS)
def test_broken_launcher_config_fails_validation(name, break_it, named):
    config = launcher(name)
    break_it(config)
    assert any(named in message for message in launcher_errors(config))
    with pytest.raises(jsonschema.ValidationError):
        ray_loader(config)


@pytest.mark.parametrize("name", LAUNCHERS)
def test_gpu_workers_scale_from_zero_and_head_has_none(name):
    config = launcher(name)
    count = ACCELERATORS[config["provider"]["type"]]
    types = config["available_node_types"]
    head = types.pop(config["head_node_type"])
    assert head["resources"]["GPU"] == 0 and count(head["node_config"]) == 0
    for worker in types.values():
        assert worker["min_workers"] == 0
        assert worker["resources"]["GPU"] == count(worker["node_config"]) >= 1  # advertised = attached
    assert sum(w["max_workers"] for w in types.values()) >= 2 and config["idle_timeout_minutes"] > 0


@pytest.mark.parametrize("name", LAUNCHERS)
def test_spot_worker_type_is_offered(name):
    config = launcher(name)
    is_spot = SPOT[config["provider"]["type"]]
    spot = [t for t in config["available_node_types"].values() if is_spot(t["node_config"])]
    assert len(spot) == 1 and spot[0]["min_workers"] == 0 and spot[0]["resources"]["GPU"] >= 1


@pytest.mark.parametrize("name", LAUNCHERS)
def test_dashboard_on_loopback_and_token_auth_on(name):
    config = launcher(name)
    text = (CLUSTER / name).read_text()
    assert re.findall(r"--dashboard-host[= ](\S+)", text) == ["127.0.0.1"]
    assert "--env=RAY_AUTH_MODE=token" in config["docker"]["run_options"]
    assert config["file_mounts"]["/home/ray/.ray/auth_token"] == "~/.ray/auth_token"
    assert auth_modes(config) == ["token"]


@pytest.mark.parametrize("name", LAUNCHERS)
def test_launcher_commands_name_files_that_exist(name):
    config = launcher(name)
    assert config["file_mounts"]["/home/ray/imlca"] == "."
    paths = re.findall(r"/home/ray/imlca/(\S+)", " ".join(config["head_start_ray_commands"]))
    assert paths == ["cluster/start_mlflow.sh"] and (ROOT / paths[0]).is_file()


def test_images_run_the_installed_ray_on_python_311():
    # The laptop's `ray up` / `ray job submit` and the cluster must speak the same Ray version.
    images = [launcher(n)["docker"][k] for n in LAUNCHERS for k in ("head_image", "worker_image")]
    images += re.findall(r"^FROM (\S+)", (CLUSTER / "Dockerfile").read_text(), re.M)
    assert len(images) == 5
    for image in images:
        assert re.fullmatch(rf"rayproject/ray:{re.escape(ray.__version__)}-py311-(cpu|gpu)", image)
    assert launcher("aws.yaml")["docker"]["worker_image"].endswith("-gpu")
    assert {cluster_spec(name)["rayVersion"] for name in KUBERAY} == {ray.__version__}


def test_dockerfile_copies_files_that_exist():
    # The image cannot be built here (no Docker engine); its inputs can at least be checked.
    copies = re.findall(r"^COPY (?:--\S+ )*(.+) \S+$", (CLUSTER / "Dockerfile").read_text(), re.M)
    sources = [src for line in copies for src in line.split()]
    assert sources == ["pyproject.toml", "README.md", "platform", "sweeps", "cluster"]
    assert [src for src in sources if not (ROOT / src).exists()] == []


def test_no_config_switches_token_auth_off():
    files = [p for p in CLUSTER.rglob("*") if p.is_file()]
    assert {"aws.yaml", "gcp.yaml", "raycluster.yaml", "rayjob.yaml", "Dockerfile"} <= {p.name for p in files}
    for path in files:
        assert "RAY_AUTH_MODE=disabled" not in path.read_text(), path
    for path in CLUSTER.rglob("*.yaml"):
        assert set(auth_modes(list(yaml.safe_load_all(path.read_text())))) <= {"token"}, path


def bucket(uri: str) -> str:
    assert re.fullmatch(r"(s3|gs)://[^/]+/\S+", uri), uri
    return uri.split("/")[2]


@pytest.mark.parametrize("name, scheme", [("aws.yaml", "s3"), ("gcp.yaml", "gs")])
def test_launcher_stores_checkpoints_and_artifacts_in_one_bucket(name, scheme):
    config = launcher(name)
    (storage,) = [o.split("=", 2)[2] for o in config["docker"]["head_run_options"]
                  if o.startswith("--env=IMLCA_STORAGE=")]  # read by the driver, on the head
    (artifacts,) = re.findall(r"start_mlflow\.sh (\S+)", " ".join(config["head_start_ray_commands"]))
    assert storage.startswith(f"{scheme}://") and artifacts.startswith(f"{scheme}://")
    assert bucket(storage) == bucket(artifacts)
    workers = [t for n, t in config["available_node_types"].items() if n != config["head_node_type"]]
    role = {"aws": "IamInstanceProfile", "gcp": "serviceAccounts"}[config["provider"]["type"]]
    assert all(role in w["node_config"] for w in workers)  # trials write checkpoints with the node's identity


def test_kuberay_stores_checkpoints_and_artifacts_in_one_bucket():
    spec = cluster_spec("raycluster.yaml")
    head = spec["headGroupSpec"]["template"]["spec"]["containers"][0]
    storage = {e["name"]: e.get("value") for e in head["env"]}["IMLCA_STORAGE"]
    docs = {d["kind"]: d for d in yaml.safe_load_all((CLUSTER / "kuberay" / "mlflow.yaml").read_text())}
    (server,) = docs["Deployment"]["spec"]["template"]["spec"]["containers"]
    (artifacts,) = [a.split("=", 1)[1] for a in server["command"] if a.startswith("--artifacts-destination=")]
    assert storage.startswith("s3://") and bucket(storage) == bucket(artifacts)
    worker = spec["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
    for container in (head, worker, server):  # credentials from a Secret (or the pod's service account)
        assert {"secretRef": {"name": "imlca-s3", "optional": True}} in container["envFrom"]


def test_no_credentials_in_the_cluster_files():
    # a key id, or a secret's name followed by a value (placeholders such as `...` or `<key>` are fine)
    secrets = re.compile(r"AKIA[0-9A-Z]{16}|(?i:secret_access_key|private_key|session_token|password)\s*[:=]\s*"
                         r"[\w/+]{8}|://[^/@\s:]+:[^/@\s]+@")  # the last: a URI with user:password@
    for path in CLUSTER.rglob("*"):
        if path.is_file():
            assert not secrets.search(path.read_text()), path


# ------------------------------------------------------------------------------------------------ KubeRay
@pytest.mark.parametrize("name", sorted(KUBERAY))
def test_kuberay_manifest_passes_crd_schema(name):
    assert manifest_errors(kuberay(name), KUBERAY[name]) == []


@pytest.mark.parametrize("break_it, named", [
    (lambda s: s.update(enableInTreeAutoScaling=True), "enableInTreeAutoScaling"),  # misspelled
    (lambda s: s["workerGroupSpecs"][0].update(minReplica=0), "minReplica"),  # misspelled
    (lambda s: s["workerGroupSpecs"][0].pop("groupName"), "groupName"),  # required
    (lambda s: s["workerGroupSpecs"][0].update(maxReplicas="8"), "'8'"),  # not an integer
    (lambda s: s["authOptions"].update(mode="none"), "'none'"),  # not in the enum
])
@pytest.mark.parametrize("name", sorted(KUBERAY))
def test_broken_kuberay_manifest_fails_crd_schema(name, break_it, named):
    manifest = kuberay(name)
    break_it(manifest["spec"].get("rayClusterSpec", manifest["spec"]))  # the RayCluster spec in both
    assert any(named in message for message in manifest_errors(manifest, KUBERAY[name]))


@pytest.mark.parametrize("name", sorted(KUBERAY))
def test_kuberay_autoscales_gpu_workers_from_zero(name):
    spec = cluster_spec(name)
    assert spec["enableInTreeAutoscaling"] is True and spec["authOptions"]["mode"] == "token"
    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["num-gpus"] == "0"
    for container in head["template"]["spec"]["containers"]:
        assert "nvidia.com/gpu" not in json.dumps(container["resources"])
    (group,) = spec["workerGroupSpecs"]
    assert (group["replicas"], group["minReplicas"]) == (0, 0) and group["maxReplicas"] >= 2
    (worker,) = group["template"]["spec"]["containers"]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == "1"


def test_rayjob_runs_the_paper_sweep_on_the_same_cluster():
    spec = kuberay("rayjob.yaml")["spec"]
    assert spec["entrypoint"] == "python -m imlca sweep sweeps/paper/table1.yaml"
    assert spec["shutdownAfterJobFinishes"] is True
    assert spec["rayClusterSpec"] == kuberay("raycluster.yaml")["spec"]
    head = spec["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert (ROOT / spec["entrypoint"].split()[-1]).is_file()  # relative to the head's workingDir
    assert head["workingDir"] == "/home/ray/imlca"


def tracking_objects() -> dict[str, dict]:
    """The objects of kuberay/mlflow.yaml by kind/name."""
    docs = yaml.safe_load_all((CLUSTER / "kuberay" / "mlflow.yaml").read_text())
    return {f"{d['kind']}/{d['metadata']['name']}": d for d in docs}


def test_head_tracks_to_the_mlflow_service():
    docs = tracking_objects()
    assert set(docs) == {"Service/imlca-mlflow-db", "StatefulSet/imlca-mlflow-db", "Deployment/imlca-mlflow",
                         "Service/imlca-mlflow"}
    service = docs["Service/imlca-mlflow"]
    assert service["spec"]["type"] == "ClusterIP"  # reached through kubectl port-forward, never exposed
    head = cluster_spec("raycluster.yaml")["headGroupSpec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in head["env"]}
    assert env["MLFLOW_TRACKING_URI"] == f"http://{service['metadata']['name']}:{service['spec']['ports'][0]['port']}"
    (server,) = docs["Deployment/imlca-mlflow"]["spec"]["template"]["spec"]["containers"]
    (allowed,) = [a for a in server["command"] if a.startswith("--allowed-hosts=")]
    assert "imlca-mlflow:5000" in allowed.split("=")[1].split(",")  # MLflow refuses unknown Host headers


def test_crd_copies_match_the_shared_originals():
    shared = ROOT.parent / "shared" / "kuberay-crds"
    if not shared.is_dir():
        pytest.skip("no ../shared beside this clone (CI has it)")
    for crd in KUBERAY.values():
        assert (CRDS / crd).read_bytes() == (shared / crd).read_bytes()


# --------------------------------------------------------------------------- real processes on this machine
def test_start_mlflow_keeps_a_running_server(tmp_path):
    # A process whose command line reads "mlflow server" stands in for one started earlier (a real server
    # takes ~20 s to boot here): re-running `ray up` must leave it alone.
    stand_in = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "mlflow", "server"])
    script = ["bash", str(CLUSTER / "start_mlflow.sh")]
    env = {**os.environ, "IMLCA_MLFLOW_STORE": str(tmp_path)}
    try:
        (tmp_path / "mlflow.pid").write_text(str(stand_in.pid))
        again = subprocess.run(script + [str(tmp_path)], env=env, capture_output=True, text=True, timeout=30)
        assert (again.returncode, again.stdout) == (0, f"mlflow server already running (pid {stand_in.pid})\n")
        bare = subprocess.run(script, env=env, capture_output=True, text=True, timeout=30)
        assert bare.returncode != 0 and "usage: start_mlflow.sh ARTIFACTS_DESTINATION" in bare.stderr
    finally:
        stand_in.kill()
        stand_in.wait()


# Runs in its own process so that this pytest process never connects to the test cluster.
DRIVER = """
import json, sys, time, ray
for _ in range(60):
    try:
        ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
        break
    except Exception:
        time.sleep(1)
head = ray.get_runtime_context().get_node_id()

@ray.remote(num_cpus=0)
class Barrier:
    def __init__(self):
        self.arrived = 0

    def arrive(self):
        self.arrived += 1

    def count(self):
        return self.arrived

@ray.remote(num_gpus=1, num_cpus=0)
def where(barrier):
    ray.get(barrier.arrive.remote())
    while ray.get(barrier.count.remote()) < 2:  # hold the GPU until the other task holds one too
        time.sleep(0.2)
    return ray.get_runtime_context().get_node_id()

barrier = Barrier.remote()
nodes = ray.get([where.remote(barrier), where.remote(barrier)], timeout=90)
gpus = sum(n["Resources"].get("GPU", 0) for n in ray.nodes() if n["Alive"])
print("RESULT " + json.dumps({"head": head, "task_nodes": nodes, "gpus": gpus}))
"""


@pytest.mark.slow
def test_fake_cluster_adds_a_gpu_worker_per_waiting_task(tmp_path):
    port, dashboard, agent, client = (free_port() for _ in range(4))
    temp_dir = Path(tempfile.mkdtemp(prefix="imlca-ray-", dir="/tmp"))  # short: Ray's socket paths are capped
    (tmp_path / "auth_token").write_text(uuid.uuid4().hex)
    config = launcher("fake-multinode.yaml")
    config["provider"]["gcs_address"] = f"127.0.0.1:{port}"
    (tmp_path / "autoscaling.yaml").write_text(yaml.safe_dump(config))
    env = clean_env(RAY_FAKE_CLUSTER="1", AUTOSCALER_UPDATE_INTERVAL_S="1", RAY_AUTH_MODE="token",
                    RAY_AUTH_TOKEN_PATH=str(tmp_path / "auth_token"))
    head = start(
        [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
         f"--port={port}", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
         f"--dashboard-agent-listen-port={agent}", f"--ray-client-server-port={client}", f"--temp-dir={temp_dir}",
         "--num-cpus=1", "--num-gpus=0", f"--autoscaling-config={tmp_path / 'autoscaling.yaml'}"],
        env, tmp_path / "head.log")
    try:
        run = subprocess.run([sys.executable, "-c", DRIVER, f"127.0.0.1:{port}"], env=env,
                             capture_output=True, text=True, timeout=150)
        assert run.returncode == 0, run.stderr[-2000:] + log_tail(tmp_path / "head.log")
        (line,) = [line for line in run.stdout.splitlines() if line.startswith("RESULT ")]
        result = json.loads(line.removeprefix("RESULT "))
        # Two tasks of one GPU each, a head with none: the autoscaler added two GPU workers from zero.
        assert len(set(result["task_nodes"])) == 2 and result["head"] not in result["task_nodes"]
        assert result["gpus"] == 2
    finally:
        try:
            kill_session(head.pid)
        finally:
            head.poll()  # reap the `ray start` child
            shutil.rmtree(temp_dir, ignore_errors=True)
