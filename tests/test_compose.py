"""docker-compose.yml checked without a Docker engine: `docker-compose config` accepts it, with
and without the monitoring profile; every file it mounts is in the repository; names and
ports agree with what they point at (serve_config.yaml's HTTP port, the UI's ASR_URL,
compose/prometheus.yml's scrape target and alert rules, which promtool loads, Grafana's
provisioning, the OTLP endpoint); images are pinned; every published port, the Ray
dashboard's above all, is bound to 127.0.0.1; the service's start script runs
serve_config.yaml unchanged but for the HTTP host; the UI image passes checkov.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from serve_app import tracing
from tests.deploy_tools import assert_checkov_clean, find_tool, kuberay_generator, run_checkov
from tests.test_container import _dockerignore_allows

kuberay = kuberay_generator()

REPO = Path(__file__).resolve().parent.parent
COMPOSE_FILE = REPO / "docker-compose.yml"
COMPOSE_VENV = REPO / ".venv-compose"
PROMETHEUS_CONFIG = REPO / "compose" / "prometheus.yml"
START_SCRIPT = REPO / "compose" / "start_service.sh"
UI_DOCKERFILE = REPO / "compose" / "ui.Dockerfile"
SERVE_CONFIG = REPO / "serve_config.yaml"

PROFILE = "monitoring"
DEFAULT_SERVICES = {"asr", "ui"}
MONITORING_SERVICES = {"prometheus", "grafana", "jaeger"}
LOCALHOST = "127.0.0.1"
RAY_DASHBOARD_PORT = 8265
PROMETHEUS_PORT = 9090
OTLP_HTTP_PORT = 4318
# Variables docker-compose.yml reads from the caller's environment.
INTERPOLATED = ("ASR_API_KEY", "OTEL_EXPORTER_OTLP_ENDPOINT")
EXACT_TAG = re.compile(r"^[a-z0-9./_-]+:v?\d+\.\d+\.\d+$")
PORT_SPEC = re.compile(
    r"^(?:(?P<ip>[0-9.]+|\[[0-9a-fA-F:]+\]):)?(?:(?P<published>\d+(?:-\d+)?)?:)?"
    r"(?P<target>\d+(?:-\d+)?)(?:/(?:tcp|udp))?$"
)
TIMEOUT_S = 120


def docker_compose() -> str:
    env = os.environ.get("DOCKER_COMPOSE")
    return find_tool(
        "docker-compose",
        *([Path(env)] if env else []),
        COMPOSE_VENV / "bin" / "docker-compose",
        install_hint="`make deploy-tools` (docker-compose in .venv-compose) or set DOCKER_COMPOSE",
    )


def run_compose(*args: str, **env: str) -> subprocess.CompletedProcess:
    """docker-compose on docker-compose.yml, with none of the caller's variables that the
    file or docker-compose itself reads (COMPOSE_*, DOCKER_*, the interpolated ones)."""
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL")}
    return subprocess.run(
        [docker_compose(), "--file", str(COMPOSE_FILE), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        env={**keep, **env},
    )


def render(**env: str) -> dict[str, Any]:
    proc = run_compose("--profile", PROFILE, "config", **env)
    assert proc.returncode == 0, proc.stderr
    return yaml.safe_load(proc.stdout)


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    return render()


@pytest.fixture(scope="module")
def services(config) -> dict[str, dict[str, Any]]:
    return config["services"]


@pytest.fixture(scope="module")
def serve_port() -> int:
    return yaml.safe_load(SERVE_CONFIG.read_text())["http_options"]["port"]


def volumes(service: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(source, target, read-only) of every volume, short or long syntax. docker-compose
    config makes bind sources absolute paths; named volumes stay names."""
    out = []
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            out.append((volume.get("source", ""), volume["target"], bool(volume.get("read_only"))))
        else:
            source, target, *mode = volume.split(":")
            out.append((source, target, mode == ["ro"]))
    return out


def binds(service: dict[str, Any]) -> list[tuple[Path, str, bool]]:
    return [(Path(s), t, ro) for s, t, ro in volumes(service) if s.startswith("/")]


def named_volumes(service: dict[str, Any]) -> list[str]:
    return [s for s, _, _ in volumes(service) if s and not s.startswith("/")]


def bind_target(service: dict[str, Any], rel: str) -> str:
    targets = {source.relative_to(REPO).as_posix(): t for source, t, _ in binds(service)}
    assert rel in targets, f"{rel} is not mounted: {targets}"
    return targets[rel]


def published(service: dict[str, Any]) -> list[tuple[str | None, str | None, int]]:
    """(host ip, host port, container port) of every published port."""
    out = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            host_port = port.get("published")
            host_port = None if host_port is None else str(host_port)
            out.append((port.get("host_ip"), host_port, int(port["target"])))
            continue
        match = PORT_SPEC.match(str(port))
        assert match, f"unrecognised port {port!r}"
        out.append((match["ip"], match["published"], int(match["target"])))
    return out


def dockerfile_of(service: dict[str, Any]) -> Path | None:
    build = service.get("build")
    if build is None:
        return None
    return Path(build["context"]) / build.get("dockerfile", "Dockerfile")


def test_docker_compose_config_accepts_both_profiles(services):
    plain = run_compose("config", "--quiet")
    assert plain.returncode == 0, plain.stderr
    listed = run_compose("config", "--profiles")
    assert listed.returncode == 0 and listed.stdout.split() == [PROFILE], listed
    assert set(services) == DEFAULT_SERVICES | MONITORING_SERVICES
    for name, service in services.items():
        expected = [PROFILE] if name in MONITORING_SERVICES else []
        assert service.get("profiles", []) == expected, name
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            # A service of the default stack must not wait for one that only a profile starts.
            assert name in MONITORING_SERVICES or dependency not in MONITORING_SERVICES


def test_every_mounted_file_is_in_the_repository(config, services):
    mounted = 0
    for name, service in services.items():
        for source, target, read_only in binds(service):
            assert source.is_relative_to(REPO), f"{name} mounts {source} from outside the repo"
            assert source.exists(), f"{name} mounts {source}, which does not exist"
            ignored = subprocess.run(["git", "check-ignore", "-q", str(source)], cwd=REPO)
            assert ignored.returncode == 1, f"{name} mounts {source}, which git ignores"
            assert read_only, f"{name} mounts {source} writable at {target}"
            mounted += 1
        dockerfile = dockerfile_of(service)
        if dockerfile is not None:
            assert dockerfile.is_file() and dockerfile.is_relative_to(REPO), dockerfile
        assert set(named_volumes(service)) <= set(config.get("volumes") or {}), name
    assert mounted, "no bind mounts seen: is docker-compose config's output understood?"


def test_images_are_pinned_and_built_images_carry_the_project_version(services):
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    for name, service in services.items():
        image = service["image"]
        if "build" in service:
            assert image.endswith(f":{version}"), (name, image)
        else:
            assert EXACT_TAG.match(image), f"{name}: {image} is not pinned to an exact version"
    assert dockerfile_of(services["asr"]) == REPO / "Dockerfile", "the repository's image"
    bases = re.findall(r"^FROM\s+(\S+)", UI_DOCKERFILE.read_text(), flags=re.M)
    minor = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert len(bases) == 1 and re.fullmatch(rf"python:{minor}\.\d+-slim-\w+", bases[0]), bases


def test_http_port_matches_serve_config_and_the_ui(services, serve_port):
    asr = services["asr"]
    assert (LOCALHOST, str(serve_port), serve_port) in published(asr)
    assert services["ui"]["environment"]["ASR_URL"] == f"http://asr:{serve_port}"
    health = " ".join(asr["healthcheck"]["test"])
    assert f"http://127.0.0.1:{serve_port}/health" in health


def test_published_ports_are_bound_to_localhost_only(services):
    dashboard = []
    for name, service in services.items():
        for host_ip, host_port, target in published(service):
            assert host_ip == LOCALHOST, f"{name} publishes {target} on {host_ip or 'all'}"
            if target == RAY_DASHBOARD_PORT or host_port == str(RAY_DASHBOARD_PORT):
                dashboard.append((name, host_ip))
    assert dashboard == [("asr", LOCALHOST)]
    assert services["asr"]["environment"]["RAY_DASHBOARD_PORT"] == str(RAY_DASHBOARD_PORT)
    # Ray's metrics agent is for Prometheus on the compose network, not for the host.
    metrics_port = int(services["asr"]["environment"]["RAY_METRICS_EXPORT_PORT"])
    assert metrics_port not in {target for *_, target in published(services["asr"])}


def test_prometheus_scrapes_the_service_and_loads_the_alert_rules(services, tmp_path):
    prom = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    local = yaml.safe_load((REPO / "ray_cluster" / "prometheus.yml").read_text())
    assert prom["global"] == local["global"] and prom["rule_files"] == local["rule_files"]
    metrics_port = services["asr"]["environment"]["RAY_METRICS_EXPORT_PORT"]
    (job,) = prom["scrape_configs"]
    targets = [t for static in job["static_configs"] for t in static["targets"]]
    assert job["job_name"] == local["scrape_configs"][0]["job_name"]
    assert targets == [f"asr:{metrics_port}"]

    prometheus = services["prometheus"]
    config_path = bind_target(prometheus, "compose/prometheus.yml")
    assert f"--config.file={config_path}" in prometheus["command"]
    assert f"--web.listen-address=0.0.0.0:{PROMETHEUS_PORT}" in prometheus["command"]
    (rules,) = prom["rule_files"]  # relative to the config file
    rules_path = str(Path(config_path).parent / rules)
    assert bind_target(prometheus, "ray_cluster/alerts.yml") == rules_path

    # What Prometheus in the container reads, laid out the same way, through promtool.
    shutil.copy(PROMETHEUS_CONFIG, tmp_path / "prometheus.yml")
    shutil.copy(REPO / "ray_cluster" / "alerts.yml", tmp_path / rules)
    promtool = find_tool("promtool", install_hint="`make test-deps` (Debian's prometheus)")
    proc = subprocess.run(
        [promtool, "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_grafana_gets_the_datasource_and_every_dashboard(services):
    grafana = services["grafana"]
    env = grafana["environment"]
    assert env["PROMETHEUS_URL"] == f"http://prometheus:{PROMETHEUS_PORT}"
    for kind in ("datasources", "dashboards"):
        target = bind_target(grafana, f"dashboards/provisioning/{kind}")
        assert target == f"/etc/grafana/provisioning/{kind}"
    provider = yaml.safe_load((REPO / "dashboards/provisioning/dashboards/vi-asr.yaml").read_text())
    assert provider["providers"][0]["options"]["path"] == "$ASR_DASHBOARDS_DIR"
    dashboards_dir = Path(env["ASR_DASHBOARDS_DIR"])
    for dashboard in kuberay.dashboard_files():
        rel = dashboard.relative_to(REPO / "dashboards")
        # Mounted itself, or inside a mounted folder, at the same place under the dir.
        where = [
            Path(target) / dashboard.relative_to(source)
            for source, target, _ in binds(grafana)
            if dashboard.is_relative_to(source)
        ]
        assert where == [dashboards_dir / rel], (dashboard, where)


def test_traces_go_to_jaeger_over_otlp_http(services):
    env = services["asr"]["environment"]
    endpoint = urlsplit(env["OTEL_EXPORTER_OTLP_ENDPOINT"])
    assert (endpoint.hostname, endpoint.port) == ("jaeger", OTLP_HTTP_PORT)
    # serve_app/tracing.py's default protocol is OTLP/HTTP, the port above.
    assert "OTEL_EXPORTER_OTLP_PROTOCOL" not in env
    assert tracing.exporter_names(env) == ["otlp"]
    # Documented switch: an empty endpoint exports nothing (no monitoring profile).
    quiet = render(OTEL_EXPORTER_OTLP_ENDPOINT="")["services"]["asr"]["environment"]
    assert tracing.exporter_names(quiet) == []
    # ASR_API_KEY reaches the service and the UI alike.
    keyed = render(ASR_API_KEY="k")["services"]
    assert keyed["asr"]["environment"]["ASR_API_KEY"] == keyed["ui"]["environment"]["ASR_API_KEY"]
    assert keyed["asr"]["environment"]["ASR_API_KEY"] == "k"


def test_every_service_has_a_health_check(services):
    for name, service in services.items():
        test = service.get("healthcheck", {}).get("test")
        dockerfile = dockerfile_of(service)
        in_image = dockerfile is not None and "\nHEALTHCHECK " in dockerfile.read_text()
        assert test or in_image, f"{name} has no health check"
        for dependency, condition in service.get("depends_on", {}).items():
            assert condition["condition"] == "service_healthy", (name, dependency)


def test_start_script_serves_serve_config_with_http_on_all_interfaces(services, tmp_path):
    asr = services["asr"]
    script_path = bind_target(asr, "compose/start_service.sh")
    assert asr["command"] == ["bash", script_path]
    assert asr["environment"]["SERVE_CONFIG"] == bind_target(asr, "serve_config.yaml")
    script = START_SCRIPT.read_text()
    assert subprocess.run(["bash", "-n", str(START_SCRIPT)]).returncode == 0
    for flag, variable in (
        ("--metrics-export-port", "RAY_METRICS_EXPORT_PORT"),
        ("--dashboard-port", "RAY_DASHBOARD_PORT"),
    ):
        assert f'{flag}="${{{variable}:-{asr["environment"][variable]}}}"' in script, flag
    assert "--dashboard-host=0.0.0.0" in script and "RAY_AUTH_MODE=token" in script

    # The script's Python step on the real serve_config.yaml: only the HTTP host changes.
    (program,) = re.findall(r"<<'PY'\n(.*?)\nPY\n", script, flags=re.S)
    out = tmp_path / "serve_config.yaml"
    subprocess.run([sys.executable, "-c", program, str(SERVE_CONFIG), str(out)], check=True)
    original = yaml.safe_load(SERVE_CONFIG.read_text())
    ran = yaml.safe_load(out.read_text())
    assert ran["http_options"].pop("host") == "0.0.0.0"
    original["http_options"].pop("host")
    assert ran == original
    ServeDeploySchema.model_validate(yaml.safe_load(out.read_text()))


def test_ui_image_copies_only_the_build_context_runs_as_non_root_and_passes_checkov(services):
    ui = services["ui"]
    text = UI_DOCKERFILE.read_text()
    copies = re.findall(r"^COPY\s+(.+)$", text, flags=re.M)
    sources = [s for line in copies for s in line.split()[:-1] if not s.startswith("--")]
    assert sources and all(_dockerignore_allows(s) for s in sources), sources
    users = re.findall(r"^USER\s+(\S+)", text, flags=re.M)
    assert users and users[-1] not in ("root", "0"), users
    # The UI imports nothing of serve_app: the image installs the `ui` extra's requirements
    # from pyproject.toml, not the project.
    assert sources == ["pyproject.toml"], sources
    assert '["optional-dependencies"]["ui"]' in text and "pip install --no-cache-dir -r" in text
    # ui/ is not in the build context: it is mounted where the image runs ui/app.py from, and
    # `python -m` puts that working directory on sys.path for the `ui.*` imports.
    (workdir,) = re.findall(r"^WORKDIR\s+(\S+)", text, flags=re.M)
    assert not _dockerignore_allows("ui")
    assert bind_target(ui, "ui") == f"{workdir}/ui"
    assert '["python", "-m", "streamlit", "run", "ui/app.py",' in text
    assert_checkov_clean(run_checkov(UI_DOCKERFILE, "dockerfile"), "compose/ui.Dockerfile")
