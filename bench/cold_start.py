"""Cold start by phase: from `serve run serve_config.yaml` (a fresh local Ray instance) to the
first transcript, with the time each milestone first appears in serve run's log.

    .venv/bin/python -m bench.cold_start [--runs 3]

Phases (seconds from the start of `serve run`): Ray started, Serve started and the config
submitted, the app imported and built by the controller, replicas requested, the Decoder's
LM read (the last model load), the first HTTP answer of any kind, the first 200 transcript of
a short clip. Polled every 0.25 s; each run is its own `serve run`, stopped by process group.
Prints a table (median over runs) and writes bench/results/cold_start-<time>.json.
"""

from __future__ import annotations

import argparse
import re
import statistics
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import machine_info, uptime_line, write_results
from bench.stack import ServeStack

CLIP = Path(__file__).resolve().parent.parent / "tests" / "data" / "clips" / "north_16k.wav"
MILESTONES = {  # name -> a log line that marks it (the first one seen counts)
    "ray_started": re.compile(r"Started a local Ray instance"),
    "serve_started": re.compile(r"Submitted deploy config successfully"),
    "app_built": re.compile(r"Imported and built app"),
    "replicas_requested": re.compile(r"Adding \d+ replica"),
    "lm_loaded": re.compile(r"ServeReplica:\w+:Decoder.*\*{20,}"),
}
START_TIMEOUT_S = 300.0


class MilestoneFollower:
    """Watches a starting `ServeStack`'s log on a thread and notes, for each milestone, the
    seconds from `t0` at which its line first appeared."""

    def __init__(self, stack: ServeStack, t0: float) -> None:
        self.stack, self.t0 = stack, t0
        self.found: dict[str, float | None] = dict.fromkeys(MILESTONES)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._follow, daemon=True)

    def start(self) -> MilestoneFollower:
        self._thread.start()
        return self

    def stop(self) -> dict[str, float | None]:
        self._done.set()
        self._thread.join()
        return dict(self.found)

    def _follow(self) -> None:
        seen = 0
        while not self._done.is_set():
            path = self.stack.log_path
            if path and path.exists():
                text = path.read_text(errors="replace")
                complete = text.rfind("\n") + 1  # a line still being written waits
                now = round(time.monotonic() - self.t0, 2)
                for line in text[seen:complete].splitlines():
                    for name, pattern in MILESTONES.items():
                        if self.found[name] is None and pattern.search(line):
                            self.found[name] = now
                seen = max(seen, complete)
            time.sleep(0.1)


def one_run(model_dir: Path, serve_bin: Path | None = None) -> dict[str, Any]:
    stack = ServeStack(model_dir, serve_bin=serve_bin)
    t0 = time.monotonic()
    stack.start()
    follower = MilestoneFollower(stack, t0).start()
    clip = CLIP.read_bytes()
    try:
        first = stack.wait_first_answer(
            lambda c: c.post(f"{stack.url}/transcribe", files={"file": ("a.wav", clip)}),
            START_TIMEOUT_S,
        )
        time.sleep(0.5)  # the log's last lines
    finally:
        found = follower.stop()
        stopped = stack.stop()
    return {
        **found,
        **first,
        "stop_s": stopped.get("driver_exit_s"),
        "serve_bin": str(stack.serve_bin),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.cold_start", description=__doc__)
    p.add_argument("--model-dir", type=Path, default=Path("models/default"))
    p.add_argument("--runs", type=int, default=3)
    p.add_argument(
        "--serve-bin", type=Path, nargs="+", default=[None], metavar="SERVE",
        help="the `serve` executable(s) to start (default: what `make serve` runs, "
        ".venv-serve's when it exists); several: the runs alternate between them",
    )  # fmt: skip
    p.add_argument("--note", default="")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    runs: list[dict[str, Any]] = []
    for i in range(args.runs):
        for serve_bin in args.serve_bin:  # interleaved, so drifting load hits each alike
            runs.append(one_run(args.model_dir, serve_bin))
            print(f"run {i + 1}: {runs[-1]}", flush=True)
    keys = [*MILESTONES, "first_http_answer_s", "first_200_s"]
    by_bin: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        by_bin.setdefault(r["serve_bin"], []).append(r)
    bins = list(by_bin)
    medians = {
        b: {
            k: statistics.median(v) if (v := [r[k] for r in mine if r[k] is not None]) else None
            for k in keys
        }
        for b, mine in by_bin.items()
    }
    print("| milestone | " + " | ".join(f"`{b}` (median s)" for b in bins) + " |")
    print("| --- |" + " --- |" * len(bins))
    for k in keys:
        print(f"| {k} | " + " | ".join(str(medians[b][k]) for b in bins) + " |")
    print(uptime_line())
    results = {
        "machine": machine_info(), "note": args.note, "runs": runs,
        "median": medians[bins[0]], "median_by_serve_bin": medians,
    }  # fmt: skip
    write_results(results, "cold_start", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
