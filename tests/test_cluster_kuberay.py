"""KubeRay manifests (cluster/kuberay/): against the CRDs' openAPIV3Schema, GPU workers autoscaled from 0, the
RayJob running the paper sweep on the same cluster, one bucket for checkpoints and artifacts, the head tracking to
the MLflow service."""
from __future__ import annotations

import functools
import json

import jsonschema
import pytest
import yaml

from cluster_files import CLUSTER, CRDS, KUBERAY, ROOT, bucket, cluster_spec, kuberay, load, strict, tracking_objects


@functools.lru_cache(maxsize=None)
def crd_validator(crd_file: str, version: str) -> jsonschema.Draft7Validator:
    crd = load(CRDS / crd_file)
    (entry,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    return jsonschema.Draft7Validator(strict(entry["schema"]["openAPIV3Schema"]))


def manifest_errors(manifest: dict, crd_file: str) -> list[str]:
    version = manifest["apiVersion"].split("/")[1]
    return [e.message for e in crd_validator(crd_file, version).iter_errors(manifest)]


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

