"""`serve run serve_config.yaml` as a benchmark subject: start it in its own process group on
a fresh local Ray instance, time the cold start to the first transcript, sample the memory
of every process it started, and stop exactly those processes again.

The config is serve_config.yaml as committed, with two changes written to a temporary copy:
the HTTP port (a free one, so a service already on 8000 is left alone) and the absolute
model directory. Ray's files go to a temporary directory of our own (RAY_TMPDIR), and
RAY_ADDRESS=local makes `serve run` start a new Ray instance even when another one runs on
this machine. Stopping: SIGTERM to the process group (`serve run` in the background ignores
SIGINT), then SIGKILL for whatever of the processes we saw is still alive.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import yaml

REPO = Path(__file__).resolve().parent.parent
SERVE_CONFIG = REPO / "serve_config.yaml"
STOP_WAIT_S = 45.0
POLL_S = 0.25
MEMORY_POLL_S = 1.0
IDLE_WORKER = "ray::IDLE"  # a pooled Ray worker before it is given an actor


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_config(model_dir: Path, port: int, source: Path = SERVE_CONFIG) -> dict[str, Any]:
    """serve_config.yaml with the port and the (absolute) model directory replaced."""
    config = yaml.safe_load(source.read_text())
    config["http_options"]["port"] = port
    config["http_options"]["host"] = "127.0.0.1"
    for app in config["applications"]:
        app.setdefault("args", {})["model_dir"] = str(Path(model_dir).resolve())
    return config


def process_label(cmdline: list[str], name: str) -> str:
    """A readable name for a process of the stack: Ray sets its workers' titles to
    `ray::<actor or task>` (e.g. `ray::ServeReplica:asr:Encoder`); Ray's Python daemons are
    named by their script; native daemons (gcs_server, raylet) by their executable."""
    first = cmdline[0] if cmdline else ""
    if first.startswith("ray::"):
        # The title carries the running method too (`ray::ServeController.listen_for_change`).
        return first.split()[0].split(".")[0]
    if name.startswith("python") or Path(first).name.startswith("python"):
        scripts = [Path(a).stem for a in cmdline[1:] if a.endswith(".py")]
        if scripts:
            return scripts[0]
        if "-m" in cmdline[:-1]:
            return f"python -m {cmdline[cmdline.index('-m') + 1]}"
        if "-c" in cmdline[:-1]:  # e.g. multiprocessing's forkserver: name the module
            code = cmdline[cmdline.index("-c") + 1]
            words = code.replace(";", " ").split()
            module = words[1] if len(words) > 1 and words[0] in ("from", "import") else code[:30]
            return f"python -c {module}"
        serve_cli = [a for a in cmdline[1:3] if Path(a).name == "serve"]
        if serve_cli:
            return "serve run (driver)"
    if Path(first).name == "serve":
        return "serve run (driver)"
    return name or Path(first).name or "?"


@dataclass
class MemorySample:
    t_s: float
    processes: dict[int, dict[str, Any]]  # pid -> {label, rss, pss, uss} in bytes

    def totals(self) -> dict[str, int]:
        return {
            key: sum(p.get(key) or 0 for p in self.processes.values())
            for key in ("rss", "pss", "uss")
        }


def snapshot(root: psutil.Process) -> dict[int, dict[str, Any]]:
    """rss/pss/uss of `root` and all its descendants (processes that vanish are skipped)."""
    out: dict[int, dict[str, Any]] = {}
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return out
    for proc in procs:
        try:
            with proc.oneshot():
                label = process_label(proc.cmdline(), proc.name())
                try:
                    mem = proc.memory_full_info()
                    row = {"rss": mem.rss, "pss": getattr(mem, "pss", None), "uss": mem.uss}
                except psutil.AccessDenied:
                    row = {"rss": proc.memory_info().rss, "pss": None, "uss": None}
                out[proc.pid] = {"label": label, "create_time": proc.create_time(), **row}
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return out


class MemorySampler(threading.Thread):
    """Samples the process tree every MEMORY_POLL_S seconds until stopped."""

    def __init__(self, root_pid: int, phase: str) -> None:
        super().__init__(daemon=True)
        self.root = psutil.Process(root_pid)
        self.phase = phase
        self.samples: list[MemorySample] = []
        self.halt = threading.Event()
        self.t0 = time.monotonic()

    def run(self) -> None:
        while not self.halt.is_set():
            self.samples.append(MemorySample(time.monotonic() - self.t0, snapshot(self.root)))
            self.halt.wait(MEMORY_POLL_S)

    def stop(self) -> list[MemorySample]:
        self.halt.set()
        self.join()
        return self.samples


def memory_summary(samples: list[MemorySample]) -> dict[str, Any]:
    """Per process: the peak of each figure over the samples; for the stack: the peak of
    the per-sample totals (RSS counts shared pages once per process that maps them, PSS
    shares them out, so the PSS total is the stack's real footprint)."""
    per_pid: dict[int, dict[str, Any]] = {}
    for sample in samples:
        for pid, row in sample.processes.items():
            seen = per_pid.setdefault(pid, {"pid": pid, "label": row["label"]})
            if row["label"] != IDLE_WORKER:  # a pooled worker that became a replica: name it so
                seen["label"] = row["label"]
            for key in ("rss", "pss", "uss"):
                if row.get(key) is not None:
                    seen[key] = max(seen.get(key, 0), row[key])
    totals = [s.totals() for s in samples]
    processes = sorted(per_pid.values(), key=lambda r: -r.get("rss", 0))
    return {
        "samples": len(samples),
        "processes": [
            {**p, **{f"{k}_mib": round(p[k] / 2**20, 1) for k in ("rss", "pss", "uss") if k in p}}
            for p in processes
        ],
        "total_peak_mib": {
            k: round(max((t[k] for t in totals), default=0) / 2**20, 1)
            for k in ("rss", "pss", "uss")
        },
        "process_count_peak": max((len(s.processes) for s in samples), default=0),
    }


def serve_executable() -> Path:
    """The `serve` that `make serve` runs: the serving-only environment's (.venv-serve, the
    project's `serve` extra and nothing else) when it exists, else this interpreter's. Which
    one matters at start only: in an environment with pandas/pyarrow (the UI's and the dev
    tools'), every Serve process imports them with ray.serve."""
    serve_venv = REPO / ".venv-serve" / "bin" / "serve"
    return serve_venv if serve_venv.exists() else Path(sys.executable).parent / "serve"


@dataclass
class ServeStack:
    model_dir: Path
    port: int = 0  # 0: a free port
    log_path: Path | None = None
    proc: subprocess.Popen | None = None
    workdir: Path | None = None
    seen: dict[int, float] = field(default_factory=dict)  # pid -> create_time, ever sampled
    env: dict[str, str] = field(default_factory=dict)  # extra variables for `serve run`
    config: Path = SERVE_CONFIG  # the config to run (port and model directory replaced)
    serve_bin: Path | None = None  # the `serve` to run; None: serve_executable()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.port = self.port or free_port()
        self.workdir = Path(tempfile.mkdtemp(prefix="asrbench-", dir="/tmp"))
        config_path = self.workdir / "serve_config.yaml"
        config_path.write_text(yaml.safe_dump(bench_config(self.model_dir, self.port, self.config)))
        env = {
            **os.environ,
            "RAY_ADDRESS": "local",  # a new Ray instance, never someone else's cluster
            "RAY_TMPDIR": str(self.workdir),
            "RAY_USAGE_STATS_ENABLED": "0",
            "ASR_MODEL_DIR": str(Path(self.model_dir).resolve()),
            **self.env,
        }
        env.pop("ASR_API_KEY", None)  # the benchmark measures the open service
        serve = self.serve_bin = self.serve_bin or serve_executable()
        self.log_path = self.workdir / "serve_run.log"
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [str(serve), "run", str(config_path)],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, stopped as a whole
        )
        log.close()

    def log_tail(self, n: int = 40) -> str:
        if not self.log_path or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def wait_first_answer(
        self, request: Callable[[httpx.Client], httpx.Response], timeout_s: float
    ) -> dict[str, float]:
        """Poll with `request` from the moment `serve run` was started until it answers 200;
        returns seconds to the first HTTP answer of any kind and to the first 200."""
        assert self.proc is not None
        t0 = time.monotonic()
        first_any: float | None = None
        with httpx.Client(timeout=60) as client:
            while time.monotonic() - t0 < timeout_s:
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"serve run exited ({self.proc.returncode}):\n{self.log_tail()}"
                    )
                try:
                    response = request(client)
                except httpx.TransportError:
                    time.sleep(POLL_S)
                    continue
                now = time.monotonic() - t0
                first_any = first_any if first_any is not None else now
                if response.status_code == 200:
                    return {
                        "first_http_answer_s": round(first_any, 2),
                        "first_200_s": round(now, 2),
                    }
                time.sleep(POLL_S)
        raise TimeoutError(f"no 200 within {timeout_s} s:\n{self.log_tail()}")

    def wait_healthy(self, timeout_s: float) -> dict[str, float]:
        """`wait_first_answer` polling GET /health: the stack is up and every stage answers."""
        return self.wait_first_answer(lambda client: client.get(f"{self.url}/health"), timeout_s)

    def remember(self, samples: list[MemorySample]) -> None:
        for sample in samples:
            for pid, row in sample.processes.items():
                self.seen.setdefault(pid, row["create_time"])

    def stop(self) -> dict[str, Any]:
        """SIGTERM the group, wait, then SIGKILL the group and any process we ever sampled
        that is still alive (matched by pid AND start time, so a reused pid is left alone)."""
        result: dict[str, Any] = {"signal": "SIGTERM to the process group"}
        if self.proc is not None:
            if self.proc.poll() is None:
                self.remember([MemorySample(0.0, snapshot(psutil.Process(self.proc.pid)))])
            t0 = time.monotonic()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                result["sigkill_driver"] = True
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
            result["driver_exit_s"] = round(time.monotonic() - t0, 2)
        leftovers = self._alive_seen()
        deadline = time.monotonic() + 15
        while leftovers and time.monotonic() < deadline:
            time.sleep(0.5)
            leftovers = self._alive_seen()
        for proc in leftovers:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        result["killed_leftovers"] = len(leftovers)
        if self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        return result

    def _alive_seen(self) -> list[psutil.Process]:
        alive = []
        for pid, created in self.seen.items():
            try:
                proc = psutil.Process(pid)
                if proc.create_time() == created and proc.status() != psutil.STATUS_ZOMBIE:
                    alive.append(proc)
            except psutil.NoSuchProcess:
                continue
        return alive
