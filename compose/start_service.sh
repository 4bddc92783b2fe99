#!/usr/bin/env bash
# The `asr` container of docker-compose.yml: a Ray head node, then the graph of
# serve_config.yaml in the foreground (`serve run`), so the container lives as long as the
# service does. docker-compose.yml mounts this file and serve_config.yaml read-only.
#   SERVE_CONFIG             the mounted serve_config.yaml
#   RAY_METRICS_EXPORT_PORT  Ray's metrics agent, scraped by compose/prometheus.yml (8080)
#   RAY_DASHBOARD_PORT       the Ray dashboard (8265), published on the host's 127.0.0.1 only
#   RAY_NUM_CPUS             optional; Ray counts the container's CPUs otherwise
set -euo pipefail
serve_config="${SERVE_CONFIG:-/etc/vi-asr/serve_config.yaml}"
run_config="$(mktemp --suffix=.yaml)"

# The dashboard listens on the container's network below, and it can submit jobs, i.e. run
# code: Ray's token authentication guards it and the cluster. The token is made here, in
# ~/.ray/auth_token; `docker compose exec asr ray get-auth-token` prints it for the browser.
ray get-auth-token --generate >/dev/null
export RAY_AUTH_MODE=token

args=(
  --head
  --port=6379
  --metrics-export-port="${RAY_METRICS_EXPORT_PORT:-8080}"
  --include-dashboard=true
  --dashboard-host=0.0.0.0
  --dashboard-port="${RAY_DASHBOARD_PORT:-8265}"
)
[[ -n "${RAY_NUM_CPUS:-}" ]] && args+=(--num-cpus="$RAY_NUM_CPUS")
ray start "${args[@]}"

# serve_config.yaml binds HTTP to 127.0.0.1, which nothing outside this container reaches:
# run the same config with HTTP on the container's interfaces (docker-compose.yml decides
# which host address publishes it), nothing else changed.
python - "$serve_config" "$run_config" <<'PY'
import sys

import yaml

source, target = sys.argv[1:]
with open(source) as f:
    config = yaml.safe_load(f)
config["http_options"]["host"] = "0.0.0.0"
with open(target, "w") as f:
    yaml.safe_dump(config, f, sort_keys=False)
PY

# Foreground until the container stops: docker-compose.yml stops it with SIGINT, which
# `serve run` answers by shutting the application down gracefully.
exec serve run --address=auto "$run_config"
