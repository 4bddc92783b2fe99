#!/usr/bin/env bash
# Join a worker node to a running head: `ray_cluster/start_worker.sh HEAD_IP:6379`.
# Its metrics agent exports on RAY_METRICS_EXPORT_PORT (default 8081, so a second node on
# the head's machine does not collide with the head's 8080); the head adds it to the
# service-discovery file, so Prometheus scrapes it without a config change.
# Extra arguments go to `ray start` (e.g. --num-cpus=4).
set -euo pipefail
cd "$(dirname "$0")/.."
RAY="${RAY:-.venv/bin/ray}"
head="${1:-${RAY_HEAD_ADDRESS:-}}"
if [[ -z "$head" ]]; then
  echo "usage: $0 HEAD_IP:PORT [ray start args...]  (or set RAY_HEAD_ADDRESS)" >&2
  exit 2
fi
[[ $# -gt 0 ]] && shift
args=(--address="$head" --metrics-export-port="${RAY_METRICS_EXPORT_PORT:-8081}")
[[ -n "${RAY_NUM_CPUS:-}" ]] && args+=(--num-cpus="$RAY_NUM_CPUS")
exec "$RAY" start "${args[@]}" "$@"
