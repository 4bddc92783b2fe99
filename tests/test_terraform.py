"""terraform/ offline: the HCL parses (python-hcl2), every variable is typed and described,
providers and charts are pinned, the token comes only from the environment, the Ray pool can
hold the Ray pods kuberay/ asks for, the applied manifests are kuberay/'s, and checkov passes.
(`terraform validate` needs the providers, which cannot be downloaded offline.)
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import hcl2
import pytest
import yaml

from tests.deploy_tools import assert_checkov_clean, kubectl, run_checkov

REPO = Path(__file__).resolve().parent.parent
TF_DIR = REPO / "terraform"
PROVIDERS = {
    "digitalocean": "digitalocean/digitalocean",
    "helm": "hashicorp/helm",
    "kubernetes": "hashicorp/kubernetes",
    "kubectl": "alekc/kubectl",
    "random": "hashicorp/random",
}
# What DOKS and its daemons (cilium, csi, do-agent, node-exporter) keep of a droplet.
NODE_RESERVED_CPU = 0.5
NODE_RESERVED_GIB = 2.0


def _unquote(value: Any) -> Any:
    """python-hcl2 keeps the quotes of string literals."""
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


@pytest.fixture(scope="module")
def tf() -> dict[str, list]:
    """Every top-level block of every .tf file, merged by block type."""
    files = sorted(TF_DIR.glob("*.tf"))
    assert files
    merged: dict[str, list] = {}
    for path in files:
        with path.open() as f:
            parsed = hcl2.load(f)  # raises on a syntax error
        for block_type, blocks in parsed.items():
            merged.setdefault(block_type, []).extend(blocks)
    return merged


def _named(blocks: list[dict]) -> dict[str, dict]:
    return {_unquote(name): body for block in blocks for name, body in block.items()}


def _resources(tf: dict, kind: str) -> dict[str, dict]:
    out = {}
    for block in tf.get("resource", []) + tf.get("data", []):
        for rtype, named in block.items():
            if _unquote(rtype) == kind:
                out.update(_named([named]))
    return out


@pytest.fixture(scope="module")
def variables(tf) -> dict[str, dict]:
    return _named(tf["variable"])


def test_every_variable_is_typed_and_described(variables):
    assert len(variables) >= 10
    for name, body in variables.items():
        assert body.get("type"), f"variable {name} has no type"
        assert len(_unquote(body.get("description", ""))) >= 10, f"variable {name}: description"


def test_providers_are_declared_and_pinned(tf):
    (terraform,) = tf["terraform"]
    assert _unquote(terraform["required_version"]).startswith(">=")
    (required,) = terraform["required_providers"]
    declared = {k: v for k, v in required.items() if not k.startswith("__")}
    assert {k: _unquote(v["source"]) for k, v in declared.items()} == PROVIDERS
    for name, spec in declared.items():
        assert re.fullmatch(r"(~>|=) ?\d+\.\d+(\.\d+)?", _unquote(spec["version"])), name


def test_token_only_from_the_environment(tf, variables):
    providers = _named(tf["provider"])
    assert set(providers) == set(PROVIDERS) - {"random"}
    do_provider = providers["digitalocean"]
    assert not {k for k in do_provider if not k.startswith("__")}, "no token in the provider block"
    assert not [name for name in variables if "token" in name.lower()]
    for path in (p for p in TF_DIR.glob("*.tf*") if p.is_file()):  # not .terraform/
        assert "dop_v1_" not in path.read_text(), f"a DigitalOcean token in {path.name}"


def test_kubernetes_version_comes_from_the_data_source_by_prefix(tf, variables):
    (versions,) = _resources(tf, "digitalocean_kubernetes_versions").values()
    assert versions["version_prefix"] == "${var.kubernetes_version_prefix}"
    (cluster,) = _resources(tf, "digitalocean_kubernetes_cluster").values()
    assert cluster["version"] == "${data.digitalocean_kubernetes_versions.this.latest_version}"
    prefix = _unquote(variables["kubernetes_version_prefix"]["default"])
    from tests.test_kuberay import K8S_VERSION  # the schemas kuberay/ is validated against

    assert K8S_VERSION.startswith(prefix)


def _droplet(slug: str) -> tuple[int, int]:
    match = re.fullmatch(r"[a-z]+-(\d+)vcpu-(\d+)gb(-.*)?", slug)
    assert match, slug
    return int(match[1]), int(match[2])


def _quantity(value: str) -> float:
    """CPU ('3', '500m') or memory ('5Gi', '512Mi') in cores or GiB."""
    units = {"m": 1e-3, "Mi": 1 / 1024, "Gi": 1.0}
    for suffix, factor in units.items():
        if value.endswith(suffix):
            return float(value.removesuffix(suffix)) * factor
    return float(value)


@pytest.fixture(scope="module")
def kustomize_build() -> list[dict]:
    proc = subprocess.run(
        [kubectl(), "kustomize", str(REPO / "kuberay")], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def test_ray_pool_autoscales_and_holds_the_ray_pods(tf, variables, kustomize_build):
    (pool,) = _resources(tf, "digitalocean_kubernetes_node_pool").values()
    assert pool["auto_scale"] is True
    assert pool["min_nodes"] == "${var.ray_min_nodes}"
    assert pool["max_nodes"] == "${var.ray_max_nodes}"
    assert variables["ray_min_nodes"]["default"] >= 2  # the head and one worker
    assert variables["ray_max_nodes"]["default"] > variables["ray_min_nodes"]["default"]
    vcpus, gib = _droplet(_unquote(variables["ray_node_size"]["default"]))
    assert (vcpus, gib) > (2, 4), "2 vCPU / 4 GB cannot hold a Ray head"
    (service,) = [d for d in kustomize_build if d["kind"] == "RayService"]
    cluster = service["spec"]["rayClusterConfig"]
    templates = [cluster["headGroupSpec"]["template"]] + [
        g["template"] for g in cluster["workerGroupSpecs"]
    ]
    for template in templates:
        limits = template["spec"]["containers"][0]["resources"]["limits"]
        assert _quantity(limits["cpu"]) <= vcpus - NODE_RESERVED_CPU, limits
        assert _quantity(limits["memory"]) <= gib - NODE_RESERVED_GIB, limits
        tolerations = template["spec"]["tolerations"]
        (taint,) = pool["taint"]
        assert {
            "key": _unquote(taint["key"]),
            "value": _unquote(taint["value"]),
            "effect": _unquote(taint["effect"]),
            "operator": "Equal",
        } in tolerations


def test_helm_releases_are_pinned(tf, variables):
    releases = _resources(tf, "helm_release")
    charts = {_unquote(r["chart"]): r for r in releases.values()}
    assert set(charts) == {"kuberay-operator", "kube-prometheus-stack"}
    for chart, release in charts.items():
        var = release["version"].removeprefix("${var.").removesuffix("}")
        assert re.fullmatch(r"\d+\.\d+\.\d+", _unquote(variables[var]["default"])), chart
    kuberay_version = _unquote(variables["kuberay_operator_version"]["default"])
    crd_note = (REPO / "tests" / "data" / "kuberay-crds" / "README.md").read_text()
    assert f"version {kuberay_version}" in crd_note, "CRD schemas and chart must match"


def test_applies_the_kuberay_build_with_its_image_swapped(tf, kustomize_build):
    (docs,) = _resources(tf, "kubectl_kustomize_documents").values()
    assert _unquote(docs["target"]) == "${path.module}/../kuberay"
    local_values = {k: v for block in tf["locals"] for k, v in block.items()}
    images = {
        c["image"]
        for d in kustomize_build
        if d["kind"] == "RayService"
        for t in [d["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]]
        + [g["template"] for g in d["spec"]["rayClusterConfig"]["workerGroupSpecs"]]
        for c in t["spec"]["containers"]
    }
    assert {f"image: {i}" for i in images} == {_unquote(local_values["image_placeholder"])}
    kustomization = yaml.safe_load((REPO / "kuberay" / "kustomization.yaml").read_text())
    assert _unquote(local_values["namespace"]) == kustomization["namespace"]
    (manifest,) = _resources(tf, "kubectl_manifest").values()
    assert manifest["server_side_apply"] is True
    deps = " ".join(manifest["depends_on"])
    assert "helm_release.kuberay_operator" in deps and "helm_release.kube_prometheus_stack" in deps


def test_outputs_are_described_and_secrets_sensitive(tf):
    outputs = _named(tf["output"])
    assert {"cluster_id", "registry_endpoint", "grafana_admin_password", "asr_api_key"} <= set(
        outputs
    )
    for name, body in outputs.items():
        assert _unquote(body.get("description", "")), name
        if "password" in name or "key" in name:
            assert body.get("sensitive") is True, name


def test_checkov_passes_on_terraform():
    assert_checkov_clean(run_checkov(TF_DIR, "terraform"), "terraform/")


def test_plain_vm_cluster_launcher_is_what_ray_up_accepts():
    """ray_cluster/cluster-launcher.yaml passes the checks `ray up` runs first (Ray's own
    schema after its defaults are filled in) and starts Ray with the repo's start scripts."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((REPO / "ray_cluster" / "cluster-launcher.yaml").read_text())
    validate_config(prepare_config(config))
    assert config["max_workers"] == len(config["provider"]["worker_ips"])
    commands = " ".join(config["head_start_ray_commands"] + config["worker_start_ray_commands"])
    for script in ("ray_cluster/start_head.sh", "ray_cluster/start_worker.sh"):
        assert script in commands and (REPO / script).is_file(), script
    with pytest.raises(Exception, match="providr"):
        validate_config(prepare_config({**config, "providr": {}}))
