"""The cluster configs keep MLflow's run records in a database that outlives the head (issue 21): on AWS and GCP
the head's MLflow server reads $IMLCA_MLFLOW_DB (a PostgreSQL URI without its password) and the password file
mounted from the laptop; on KubeRay a PostgreSQL StatefulSet on a volume, its password in a Secret. The pods of
kuberay/mlflow.yaml are checked against Kubernetes' own pod and volume-claim schemas, as the KubeRay CRD embeds them.
The processes themselves (start_mlflow.sh on a real PostgreSQL) are tested in test_tracking_database.py."""
from __future__ import annotations

import functools
from urllib.parse import urlsplit

import jsonschema
import pytest

from cluster_files import CLUSTER, CRDS, KUBERAY, LAUNCHERS, ROOT, launcher, load, strict, tracking_objects


@pytest.mark.parametrize("name", LAUNCHERS)
def test_launcher_keeps_run_records_in_a_database_that_outlives_the_head(name):
    config = launcher(name)
    env = dict(o.removeprefix("--env=").split("=", 1) for o in config["docker"]["head_run_options"])
    database = urlsplit(env["IMLCA_MLFLOW_DB"])  # read by start_mlflow.sh, on the head
    assert database.scheme == "postgresql" and database.hostname == "your-database-host"  # the one name to fill
    assert database.username and database.password is None  # the password comes from the file below
    assert config["file_mounts"][env["PGPASSFILE"]] == "~/.imlca/pgpass"  # on the laptop, outside the repository
    script = (CLUSTER / "start_mlflow.sh").read_text()
    assert 'DB="${IMLCA_MLFLOW_DB:-' in script and 'MLFLOW_BACKEND_STORE_URI="$DB"' in script
    for text in (CLUSTER / name, CLUSTER / "README.md", ROOT / "README.md"):
        assert "copy it off" not in text.read_text()  # nothing to save by hand before `ray down`


def test_kuberay_run_records_live_in_postgres_on_a_volume():
    docs = tracking_objects()
    database, service = docs["StatefulSet/imlca-mlflow-db"], docs["Service/imlca-mlflow-db"]
    (postgres,) = database["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in postgres["env"]}
    (claim,) = database["spec"]["volumeClaimTemplates"]
    (mount,) = postgres["volumeMounts"]
    assert mount["name"] == claim["metadata"]["name"] and env["PGDATA"]["value"].startswith(mount["mountPath"] + "/")
    assert service["spec"]["selector"] == database["spec"]["template"]["metadata"]["labels"]
    (server,) = docs["Deployment/imlca-mlflow"]["spec"]["template"]["spec"]["containers"]
    (store,) = [a.split("=", 1)[1] for a in server["command"] if a.startswith("--backend-store-uri=")]
    uri = urlsplit(store)
    assert uri.scheme == "postgresql+psycopg2" and uri.password is None
    assert (uri.hostname, uri.port) == (service["metadata"]["name"], service["spec"]["ports"][0]["port"])
    assert (uri.username, uri.path) == (env["POSTGRES_USER"]["value"], "/" + env["POSTGRES_DB"]["value"])
    password = {e["name"]: e for e in server["env"]}["PGPASSWORD"]  # one Secret, made with kubectl
    assert password["valueFrom"] == env["POSTGRES_PASSWORD"]["valueFrom"] == {
        "secretKeyRef": {"name": "imlca-mlflow-db", "key": "password"}}
    assert "volumes" not in docs["Deployment/imlca-mlflow"]["spec"]["template"]["spec"]  # no state in the server


@functools.lru_cache(maxsize=None)
def pod_schemas() -> tuple[jsonschema.Draft7Validator, jsonschema.Draft7Validator]:
    """Kubernetes' own PodTemplateSpec and PersistentVolumeClaimSpec schemas, as the RayCluster CRD embeds them."""
    crd = load(CRDS / KUBERAY["raycluster.yaml"])
    (entry,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    template = entry["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["headGroupSpec"][
        "properties"]["template"]
    volume = template["properties"]["spec"]["properties"]["volumes"]["items"]["properties"]
    claim = volume["ephemeral"]["properties"]["volumeClaimTemplate"]["properties"]["spec"]
    return jsonschema.Draft7Validator(strict(template)), jsonschema.Draft7Validator(strict(claim))


def tracking_pod_errors(docs: dict) -> list[str]:
    pod, claim = pod_schemas()
    templates = [docs[k]["spec"]["template"] for k in ("StatefulSet/imlca-mlflow-db", "Deployment/imlca-mlflow")]
    claims = [c["spec"] for c in docs["StatefulSet/imlca-mlflow-db"]["spec"]["volumeClaimTemplates"]]
    return ([e.message for t in templates for e in pod.iter_errors(t)]
            + [e.message for c in claims for e in claim.iter_errors(c)])


def test_kuberay_tracking_pods_pass_the_pod_schema():
    docs = tracking_objects()
    assert tracking_pod_errors(docs) == []
    (postgres,) = docs["StatefulSet/imlca-mlflow-db"]["spec"]["template"]["spec"]["containers"]
    postgres["env"][2]["valueFrom"] = {"secretRef": {"name": "imlca-mlflow-db"}}  # envFrom's key, not valueFrom's
    docs["StatefulSet/imlca-mlflow-db"]["spec"]["volumeClaimTemplates"][0]["spec"]["accessMode"] = ["x"]
    errors = tracking_pod_errors(docs)
    assert len(errors) == 2 and "'secretRef'" in errors[0] and "'accessMode'" in errors[1]
