#!/usr/bin/env bash
# Start a local Ray head node for the ASR service:
#   - metrics export on a fixed port (RAY_METRICS_EXPORT_PORT, default 8080), listed with every
#     other node's in <temp dir>/prom_metrics_service_discovery.json for Prometheus;
#   - the dashboard on 127.0.0.1 only (it can submit jobs, i.e. run code: never expose it);
#   - RAY_PROMETHEUS_HOST / RAY_GRAFANA_HOST so the dashboard's metrics pages find
#     `make observe`'s Prometheus (and a Grafana, if you run one).
# Then deploy with `RAY_AUTH_MODE=token .venv/bin/serve deploy serve_config.yaml` (or
# `serve run`), watch with `make observe`, stop with `.venv/bin/ray stop` (this machine's
# Ray processes only, all of them). Extra arguments go to `ray start`.
set -euo pipefail
cd "$(dirname "$0")/.."
RAY="${RAY:-.venv/bin/ray}"
export RAY_PROMETHEUS_HOST="${RAY_PROMETHEUS_HOST:-http://127.0.0.1:9090}"
export RAY_GRAFANA_HOST="${RAY_GRAFANA_HOST:-http://127.0.0.1:3000}"
args=(
  --head
  --port="${RAY_GCS_PORT:-6379}"
  --metrics-export-port="${RAY_METRICS_EXPORT_PORT:-8080}"
  --include-dashboard=true
  --dashboard-host=127.0.0.1
  --dashboard-port="${RAY_DASHBOARD_PORT:-8265}"
)
[[ -n "${RAY_NUM_CPUS:-}" ]] && args+=(--num-cpus="$RAY_NUM_CPUS")
[[ -n "${RAY_TEMP_DIR:-}" ]] && args+=(--temp-dir="$RAY_TEMP_DIR")
exec "$RAY" start "${args[@]}" "$@"
