"""kuberay/ offline: the generated parts match their sources, `kubectl kustomize` builds, every
object validates (RayService against KubeRay's CRD schema, core objects against Kubernetes'
own schemas, strictly), the deployment rules hold, and checkov passes.
"""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import ray
import yaml
from ray.serve.schema import ServeDeploySchema

from tests.deploy_tools import assert_checkov_clean, kubectl, kuberay_generator, run_checkov

kuberay = kuberay_generator()

REPO = Path(__file__).resolve().parent.parent
CRD_DIR = REPO / "tests" / "data" / "kuberay-crds"
# The DOKS minor version terraform/ asks for (variable kubernetes_version_prefix).
K8S_VERSION = "1.35.0"
SERVE_PORT = 8000


@pytest.fixture(scope="module")
def built() -> list[dict[str, Any]]:
    proc = subprocess.run(
        [kubectl(), "kustomize", str(REPO / "kuberay")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    docs = [doc for doc in yaml.safe_load_all(proc.stdout) if doc]
    assert docs
    return docs


def _of_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


@pytest.fixture(scope="module")
def rayservice(built) -> dict[str, Any]:
    (service,) = _of_kind(built, "RayService")
    return service


def _pod_templates(rayservice: dict) -> dict[str, dict]:
    cluster = rayservice["spec"]["rayClusterConfig"]
    templates = {"head": cluster["headGroupSpec"]["template"]}
    for group in cluster["workerGroupSpecs"]:
        templates[group["groupName"]] = group["template"]
    return templates


def test_generated_files_match_serve_config_and_dashboards():
    assert kuberay.drift() == [], "run `make kuberay` and commit kuberay/generated/"


def test_drift_is_detected(tmp_path):
    """The check above can fail: an edited serve_config.yaml makes the committed patch stale."""
    config = yaml.safe_load(kuberay.SERVE_CONFIG.read_text())
    config["applications"][0]["deployments"][0]["max_ongoing_requests"] += 1
    changed = tmp_path / "serve_config.yaml"
    changed.write_text(yaml.safe_dump(config))
    files = kuberay.render(serve_config_path=changed)
    assert "serve-config-patch.yaml" in kuberay.drift(files=files)
    kuberay.write(tmp_path / "out", files)
    assert kuberay.drift(tmp_path / "out", files) == []


def test_serve_config_v2_is_serve_config_with_only_the_kubernetes_overrides(rayservice):
    deployed = yaml.safe_load(rayservice["spec"]["serveConfigV2"])
    ServeDeploySchema.model_validate(deployed)  # what Ray 2.60 will accept
    source = yaml.safe_load(kuberay.SERVE_CONFIG.read_text())
    assert deployed["http_options"]["host"] == "0.0.0.0"
    assert deployed["http_options"]["port"] == SERVE_PORT
    assert deployed["proxy_location"] == "EveryNode"
    app = deployed["applications"][0]
    assert app["args"].pop("model_dir") == kuberay.MODEL_DIR_IN_IMAGE
    assert "api_key" not in app["args"]  # the key comes from a Secret, through the env
    for deployment in app["deployments"]:
        scaling = deployment["autoscaling_config"]
        assert scaling["max_replicas"] == kuberay.KUBERAY_MAX_REPLICAS[deployment["name"]]
        assert scaling["max_replicas"] >= scaling["min_replicas"]
    # Put the overridden values back: everything else is serve_config.yaml, unchanged.
    expected = copy.deepcopy(source)
    for key in ("proxy_location",):
        deployed[key] = source[key]
    deployed["http_options"].update(host=source["http_options"]["host"])
    for ours, theirs in zip(
        app["deployments"], source["applications"][0]["deployments"], strict=True
    ):
        ours["autoscaling_config"]["max_replicas"] = theirs["autoscaling_config"]["max_replicas"]
    assert deployed == expected


def _strict(schema: Any) -> Any:
    """The CRD schema as the API server applies it with strict field validation (kubectl's
    default): unknown fields are errors, except where the schema preserves them."""
    if isinstance(schema, dict):
        schema = {k: _strict(v) for k, v in schema.items()}
        if (
            "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


def _crd_validator(filename: str, version: str = "v1") -> jsonschema.Validator:
    crd = yaml.safe_load((CRD_DIR / filename).read_text())
    (spec,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    schema = _strict(spec["schema"]["openAPIV3Schema"])
    return jsonschema.Draft7Validator(schema)


def test_kuberay_objects_validate_against_the_crd_schemas(built):
    validators = {
        "RayService": _crd_validator("ray.io_rayservices.yaml"),
        "RayCluster": _crd_validator("ray.io_rayclusters.yaml"),
    }
    checked = 0
    for doc in built:
        if doc["kind"] in validators:
            assert doc["apiVersion"] == "ray.io/v1"
            errors = [
                f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
                for e in validators[doc["kind"]].iter_errors(doc)
            ]
            assert errors == [], f"{doc['kind']} {doc['metadata']['name']}: {errors}"
            checked += 1
    assert checked >= 1


def test_the_crd_check_rejects_what_the_api_server_would(rayservice):
    validator = _crd_validator("ray.io_rayservices.yaml")
    typo = copy.deepcopy(rayservice)
    typo["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["maxReplica"] = 3
    wrong_type = copy.deepcopy(rayservice)
    wrong_type["spec"]["rayClusterConfig"]["enableInTreeAutoscaling"] = "yes"
    for bad in (typo, wrong_type):
        assert list(validator.iter_errors(bad))


def _validate_core(doc: dict) -> None:
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_core_objects_validate_against_kubernetes_schemas(built, rayservice):
    kinds = set()
    for doc in built:
        if doc["apiVersion"].startswith(("ray.io/", "monitoring.coreos.com/")):
            continue  # custom resources: checked against their CRDs above / by the operator
        _validate_core(doc)
        kinds.add(doc["kind"])
    assert {"Namespace", "NetworkPolicy"} <= kinds
    # The pod templates and the Service inside the RayService are core objects too.
    for name, template in _pod_templates(rayservice).items():
        _validate_core(
            {
                "apiVersion": "v1",
                "kind": "PodTemplate",
                "metadata": {"name": name, "namespace": "vi-asr"},
                "template": template,
            }
        )
    serve_service = rayservice["spec"]["serveService"]
    _validate_core({"apiVersion": "v1", "kind": "Service", **serve_service})
    with pytest.raises(kubernetes_validate.ValidationError):
        bad = copy.deepcopy(serve_service)
        bad["spec"]["ports"][0]["port"] = "eight thousand"
        _validate_core({"apiVersion": "v1", "kind": "Service", **bad})


def test_rayservice_shape(rayservice):
    cluster = rayservice["spec"]["rayClusterConfig"]
    assert cluster["rayVersion"] == ray.__version__
    head = cluster["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0", "Serve replicas must not land on the head"
    assert head.get("serviceType", "ClusterIP") == "ClusterIP"
    assert cluster["enableInTreeAutoscaling"] is True
    (workers,) = cluster["workerGroupSpecs"]
    assert 1 <= workers["minReplicas"] <= workers["replicas"] <= workers["maxReplicas"]
    assert workers["maxReplicas"] >= 2
    for name, template in _pod_templates(rayservice).items():
        spec = template["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        for container in spec["containers"]:
            resources = container["resources"]
            assert resources["requests"] == resources["limits"], name
            assert {"cpu", "memory"} <= set(resources["limits"]), name
            assert container["readinessProbe"] and container["livenessProbe"], name
            assert container["image"].endswith(":0.1.0"), container["image"]
    # The worker's CPUs hold every stage at least once (the config's min replicas).
    config = yaml.safe_load(rayservice["spec"]["serveConfigV2"])
    min_cpus = sum(
        d["ray_actor_options"]["num_cpus"] * d["autoscaling_config"]["min_replicas"]
        for d in config["applications"][0]["deployments"]
    )
    worker_cpus = float(workers["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"])
    assert min_cpus <= worker_cpus


def test_only_the_serve_port_is_exposed(built, rayservice):
    serve_service = rayservice["spec"]["serveService"]
    assert serve_service["spec"]["type"] == "LoadBalancer"
    assert [p["targetPort"] for p in serve_service["spec"]["ports"]] == [SERVE_PORT]
    assert rayservice["spec"]["excludeHeadPodFromServeSvc"] is True
    for service in _of_kind(built, "Service"):  # no other way in from outside
        assert service["spec"].get("type", "ClusterIP") == "ClusterIP", service["metadata"]
    (policy,) = _of_kind(built, "NetworkPolicy")
    open_rules = [rule for rule in policy["spec"]["ingress"] if "from" not in rule]
    assert [p["port"] for rule in open_rules for p in rule["ports"]] == [SERVE_PORT]
    dashboard = [
        rule
        for rule in policy["spec"]["ingress"]
        if any(p["port"] == 8265 for p in rule.get("ports", []))
    ]
    assert all(peer.get("namespaceSelector") for rule in dashboard for peer in rule["from"]), (
        "the dashboard runs code: only the operator's namespace may reach it"
    )


def test_prometheus_monitors_and_dashboards(built):
    monitors = _of_kind(built, "PodMonitor") + _of_kind(built, "ServiceMonitor")
    selected = {m["spec"]["selector"]["matchLabels"]["ray.io/node-type"] for m in monitors}
    assert selected == {"head", "worker"}
    dashboards = kuberay.dashboard_files()
    assert dashboards, "dashboards/ has no Grafana JSON"
    maps = [
        c for c in _of_kind(built, "ConfigMap") if c["metadata"]["labels"].get("grafana_dashboard")
    ]
    assert sorted(key for c in maps for key in c["data"]) == sorted(
        kuberay.dashboard_key(p) for p in dashboards
    )
    for configmap in maps:
        for text in configmap["data"].values():
            assert len(text.encode()) <= kuberay.MAX_CONFIGMAP_BYTES


def _checkov_inputs(built: list[dict], rayservice: dict, out: Path) -> None:
    """checkov has no rules for RayService: its pod templates go in as Deployments (their
    annotations, where the justified skips live, carried along), its Service as a Service,
    with the NetworkPolicy and the rest of the build."""
    docs = [d for d in built if d["kind"] != "RayService"]
    for name, template in _pod_templates(rayservice).items():
        docs.append(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {
                    "name": f"vi-asr-{name}",
                    "namespace": "vi-asr",
                    "annotations": template["metadata"].get("annotations", {}),
                },
                "spec": {
                    "selector": {"matchLabels": template["metadata"]["labels"]},
                    "template": template,
                },
            }
        )
    service = copy.deepcopy(rayservice["spec"]["serveService"])
    service["metadata"]["namespace"] = "vi-asr"
    docs.append({"apiVersion": "v1", "kind": "Service", **service})
    for i, doc in enumerate(docs):
        (out / f"{i:02d}-{doc['kind'].lower()}.yaml").write_text(yaml.safe_dump(doc))


def test_checkov_passes_on_kuberay(built, rayservice, tmp_path):
    _checkov_inputs(built, rayservice, tmp_path)
    report = run_checkov(tmp_path, "kubernetes")
    assert_checkov_clean(report, "kuberay/")
    checked = {resource for _, resource, _ in report["passed"]}
    assert any("vi-asr-head" in r for r in checked) and any("vi-asr-cpu" in r for r in checked)
