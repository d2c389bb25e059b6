"""The cluster files under cluster/ as the cluster tests read them: paths, the YAML loader, the launcher and KubeRay
configs, the CRD schemas made strict, the token-auth modes a file sets, a storage URI's bucket, the tracking objects
of kuberay/mlflow.yaml."""
from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"
CRDS = Path(__file__).parent / "data" / "kuberay-crds"  # copies of the KubeRay CRDs, so a fresh clone has them
LAUNCHERS = ["aws.yaml", "gcp.yaml"]
KUBERAY = {"raycluster.yaml": "ray.io_rayclusters.yaml", "rayjob.yaml": "ray.io_rayjobs.yaml"}


def load(path: Path) -> dict:
    return yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # C: 6x faster


def launcher(name: str) -> dict:
    return load(CLUSTER / name)


def kuberay(name: str) -> dict:
    return load(CLUSTER / "kuberay" / name)


def cluster_spec(name: str) -> dict:
    spec = kuberay(name)["spec"]
    return spec.get("rayClusterSpec", spec)


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


def bucket(uri: str) -> str:
    assert re.fullmatch(r"(s3|gs)://[^/]+/\S+", uri), uri
    return uri.split("/")[2]


def tracking_objects() -> dict[str, dict]:
    """The objects of kuberay/mlflow.yaml by kind/name."""
    docs = yaml.safe_load_all((CLUSTER / "kuberay" / "mlflow.yaml").read_text())
    return {f"{d['kind']}/{d['metadata']['name']}": d for d in docs}

