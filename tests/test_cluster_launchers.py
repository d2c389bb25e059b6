"""Cluster launcher configs (cluster/aws.yaml, gcp.yaml, fake-multinode.yaml): against Ray's own schema and
loader, and the properties that matter: GPU workers scale from 0, the head has no GPU, a spot type is offered, the
dashboard stays on loopback, token authentication stays on, checkpoints and artifacts share one bucket; the
images run the installed Ray; no credentials in the cluster files."""
from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml

from cluster_files import CLUSTER, KUBERAY, LAUNCHERS, ROOT, auth_modes, bucket, cluster_spec, launcher

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


def launcher_errors(config: dict) -> list[str]:
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    return [e.message for e in jsonschema.Draft7Validator(schema).iter_errors(config)]


def ray_loader(config: dict) -> dict:
    """What `ray up` does before it needs cloud credentials: fill defaults, then validate."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


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


def test_no_credentials_in_the_cluster_files():
    # a key id, or a secret's name followed by a value (placeholders such as `...` or `<key>` are fine)
    secrets = re.compile(r"AKIA[0-9A-Z]{16}|(?i:secret_access_key|private_key|session_token|password)\s*[:=]\s*"
                         r"[\w/+]{8}|://[^/@\s:]+:[^/@\s]+@")  # the last: a URI with user:password@
    for path in CLUSTER.rglob("*"):
        if path.is_file():
            assert not secrets.search(path.read_text()), path

