#!/usr/bin/env bash
# `make observe`: Prometheus (the Debian package's binary) scraping the running local Ray
# cluster through Ray's service-discovery file, with the ASR alert rules, on 127.0.0.1 only.
# Runs in the foreground until Ctrl-C; its data lives in a temp dir removed on exit.
#   RAY_TEMP_DIR     Ray's temp dir (default /tmp/ray), where the discovery file is
#   PROMETHEUS_PORT  default 9090 (RAY_PROMETHEUS_HOST in start_head.sh points there)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
ray_temp="${RAY_TEMP_DIR:-/tmp/ray}"
port="${PROMETHEUS_PORT:-9090}"
sd_file="$ray_temp/prom_metrics_service_discovery.json"
command -v prometheus >/dev/null || { echo "prometheus not found: run 'make system-deps'" >&2; exit 1; }
if [[ ! -f "$sd_file" ]]; then
  echo "no $sd_file: start Ray first (ray_cluster/start_head.sh)" >&2
  exit 1
fi
run_dir="$(mktemp -d -t asr-prometheus-XXXXXX)"
trap 'rm -rf "$run_dir"' EXIT
sed "s#/tmp/ray/prom_metrics_service_discovery.json#$sd_file#" "$here/prometheus.yml" \
  > "$run_dir/prometheus.yml"
cp "$here/alerts.yml" "$run_dir/alerts.yml"
promtool check config "$run_dir/prometheus.yml"
echo "Prometheus on http://127.0.0.1:$port (targets: $sd_file); Ctrl-C to stop"
# Not exec: the EXIT trap removes the data dir once Prometheus has stopped.
prometheus --config.file="$run_dir/prometheus.yml" --storage.tsdb.path="$run_dir/data" \
  --web.listen-address="127.0.0.1:$port" --log.level=warn &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$run_dir"' EXIT
trap 'exit 130' INT TERM
wait "$pid"
