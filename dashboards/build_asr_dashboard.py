"""Writes dashboards/asr_service.json, the Grafana dashboard of the ASR service.

Panels are listed here once, as (title, unit, [(legend, PromQL)]), and laid out two per
row; `python dashboards/build_asr_dashboard.py` regenerates the JSON (a test checks that
the committed file is current, and the integration test runs every query against a real
Prometheus). Metric names: `ray_asr_*` are the service's own (serve_app/metrics.py, with
the `ray_` prefix Ray adds), `ray_serve_*` and `ray_component_*` are Ray's.
"""

from __future__ import annotations

import json
from pathlib import Path

OUT = Path(__file__).resolve().parent / "asr_service.json"
APP = 'application=~"$application"'
RATE = "$__rate_interval"
BY = "by (application, deployment)"
TRANSCRIBE_ROUTES = 'route=~"/transcribe|/v1/audio/transcriptions"'


def quantiles(metric: str, by: str = "", where: str = APP) -> list[tuple[str, str]]:
    group = f"le, {by}" if by else "le"
    prefix = f"{{{{{by}}}}} " if by else ""
    return [
        (
            f"{prefix}p{q}",
            f"histogram_quantile(0.{q}, sum by ({group}) "
            f"(rate({metric}_bucket{{{where}}}[{RATE}])))",
        )
        for q in ("50", "90", "99")
    ]


# (row title, [(panel title, unit, description, [(legend, expr)])])
ROWS: list[tuple[str, list[tuple[str, str, str, list[tuple[str, str]]]]]] = [
    (
        "Traffic",
        [
            (
                "Requests per second by route and status",
                "reqps",
                "Every HTTP request the ingress app answered (Serve's own proxy 503s are "
                "in the Ray Serve dashboard).",
                [
                    (
                        "{{route}} {{status}}",
                        f"sum by (route, status) (rate(ray_asr_requests_total{{{APP}}}[{RATE}]))",
                    )
                ],
            ),
            (
                "Audio seconds transcribed per second",
                "short",
                "Seconds of audio per wall-clock second: above 1 the service keeps up with "
                "that many real-time streams.",
                [("audio s/s", f"sum(rate(ray_asr_audio_seconds_total{{{APP}}}[{RATE}]))")],
            ),
            (
                "Transcriptions per second",
                "reqps",
                "Successful transcriptions by route.",
                [
                    (
                        "{{route}}",
                        f"sum by (route) (rate(ray_asr_transcriptions_total{{{APP}}}[{RATE}]))",
                    )
                ],
            ),
            (
                "Model served",
                "short",
                "asr_model_info: which model and precision each application serves.",
                [
                    (
                        "{{application}} {{model}} {{precision}} {{version}}",
                        "max by (application, model, precision, language, version) "
                        f"(ray_asr_model_info{{{APP}}})",
                    )
                ],
            ),
        ],
    ),
    (
        "Live streams (WS /v1/stream)",
        [
            (
                "Open streams",
                "short",
                "WebSocket streams open on the ingress replicas (each replica admits "
                "max_streams; more get close code 1013).",
                [("open", f"sum(ray_asr_streams_active{{{APP}}})")],
            ),
            (
                "Partial latency",
                "s",
                "From the arrival of a stream's newest audio to the partial that covers it: "
                "the caption delay a viewer sees (target p95 under 1 s).",
                quantiles("ray_asr_stream_partial_latency_seconds"),
            ),
            (
                "Finals and new streams per second",
                "short",
                "Utterances closed (finals sent), and streams accepted.",
                [
                    ("finals/s", f"sum(rate(ray_asr_stream_finals_total{{{APP}}}[{RATE}]))"),
                    ("streams/s", f"sum(rate(ray_asr_streams_total{{{APP}}}[{RATE}]))"),
                ],
            ),
            (
                "Stream errors per second by code",
                "short",
                "The error message's code: invalid_message, misaligned_frame, frame_too_large, "
                "invalid_api_key, idle_timeout, stream_too_long, too_many_streams, overloaded, "
                "internal_error, ...",
                [
                    (
                        "{{code}}",
                        f"sum by (code) (rate(ray_asr_stream_errors_total{{{APP}}}[{RATE}]))",
                    )
                ],
            ),
        ],
    ),
    (
        "Errors",
        [
            (
                "Errors per second by kind",
                "reqps",
                "kind is the JSON error code (audio_too_large, unsupported_media_type, "
                "invalid_api_key, overloaded, stage_unavailable, internal_error, ...).",
                [("{{kind}}", f"sum by (kind) (rate(ray_asr_errors_total{{{APP}}}[{RATE}]))")],
            ),
            (
                "Error ratio",
                "percentunit",
                "Share of requests answered with an error: all errors, and server-side (5xx).",
                [
                    (
                        "all errors",
                        f"sum(rate(ray_asr_errors_total{{{APP}}}[{RATE}])) / "
                        f"sum(rate(ray_asr_requests_total{{{APP}}}[{RATE}]))",
                    ),
                    (
                        "5xx",
                        f'sum(rate(ray_asr_requests_total{{{APP},status=~"5.."}}[{RATE}])) / '
                        f"sum(rate(ray_asr_requests_total{{{APP}}}[{RATE}]))",
                    ),
                ],
            ),
            (
                "Queue rejections per second",
                "reqps",
                "Requests refused with 503 + Retry-After because a stage's queue "
                "(max_queued_requests) was full.",
                [
                    (
                        "{{application}}",
                        "sum by (application) "
                        f"(rate(ray_asr_queue_rejections_total{{{APP}}}[{RATE}]))",
                    )
                ],
            ),
        ],
    ),
    (
        "Latency",
        [
            (
                "Transcription latency (ingress)",
                "s",
                "Wall time of /transcribe and /v1/audio/transcriptions inside the ingress.",
                quantiles("ray_asr_request_duration_seconds", where=f"{APP},{TRANSCRIBE_ROUTES}"),
            ),
            (
                "Stage latency p50 / p99",
                "s",
                "Per stage as the ingress sees it (Ray hop included; encode includes the "
                "@serve.batch wait).",
                [
                    (legend, expr)
                    for legend, expr in quantiles("ray_asr_stage_duration_seconds", by="stage")
                    if not legend.endswith("p90")
                ],
            ),
            (
                "Real-time factor",
                "short",
                "Processing seconds per audio second; below 1 is faster than real time.",
                quantiles("ray_asr_real_time_factor"),
            ),
        ],
    ),
    (
        "Encoder batching",
        [
            (
                "Encoder batch size",
                "short",
                "Windows per @serve.batch call; the batch rate shows how often it runs.",
                [
                    *quantiles("ray_asr_encoder_batch_size")[::2],
                    (
                        "batches/s",
                        f"sum(rate(ray_asr_encoder_batch_size_count{{{APP}}}[{RATE}]))",
                    ),
                ],
            ),
            (
                "Encoder padding waste",
                "percentunit",
                "Share of the frames ONNX Runtime computed that were padding "
                "(windows of one ORT call are padded to the longest).",
                [
                    (
                        "padding",
                        f'1 - sum(rate(ray_asr_encoder_frames_total{{{APP},kind="real"}}[{RATE}]))'
                        f' / sum(rate(ray_asr_encoder_frames_total{{{APP},kind="computed"}}'
                        f"[{RATE}]))",
                    )
                ],
            ),
        ],
    ),
    (
        "Replicas and queues",
        [
            (
                "Healthy replicas per deployment",
                "short",
                "Replicas passing their health check.",
                [
                    (
                        "{{application}}/{{deployment}}",
                        f"sum {BY} (ray_serve_deployment_replica_healthy{{{APP}}})",
                    )
                ],
            ),
            (
                "Autoscaler: target and desired replicas",
                "short",
                "target: what the autoscaler is moving to; desired: the policy's raw decision "
                "before min/max bounds.",
                [
                    (
                        "{{application}}/{{deployment}} target",
                        f"max {BY} (ray_serve_autoscaling_target_replicas{{{APP}}})",
                    ),
                    (
                        "{{application}}/{{deployment}} desired",
                        f"max {BY} (ray_serve_autoscaling_desired_replicas{{{APP}}})",
                    ),
                ],
            ),
            (
                "Ongoing requests vs autoscaling target",
                "short",
                "Requests running or waiting at each deployment's replicas, and the "
                "target_ongoing_requests per replica the autoscaler aims for.",
                [
                    (
                        "{{application}}/{{deployment}} ongoing",
                        f"sum {BY} (ray_serve_num_ongoing_requests_at_replicas{{{APP}}})",
                    ),
                    (
                        "{{application}}/{{deployment}} target per replica",
                        f"max {BY} (ray_serve_autoscaling_target_ongoing_requests{{{APP}}})",
                    ),
                ],
            ),
            (
                "Queue length",
                "short",
                "Requests waiting for a replica (per deployment) and windows waiting in the "
                "encoder's batch queue.",
                [
                    (
                        "{{application}}/{{deployment}} queued",
                        f"sum {BY} (ray_serve_deployment_queued_queries{{{APP}}})",
                    ),
                    (
                        "{{application}}/{{deployment}} batch queue",
                        f"sum {BY} (ray_serve_batch_queue_length{{{APP}}})",
                    ),
                ],
            ),
            (
                "Memory per replica",
                "decmbytes",
                "Resident memory of each deployment's replicas on a node, divided by its "
                "healthy replicas.",
                [
                    (
                        "{{application}}/{{deployment}}",
                        f"sum {BY} (label_replace(label_replace("
                        'ray_component_rss_mb{Component=~"ray::ServeReplica:($application):.+"}, '
                        '"application", "$1", "Component", "ray::ServeReplica:([^:]+):.+"), '
                        '"deployment", "$1", "Component", "ray::ServeReplica:[^:]+:(.+)")) '
                        f"/ sum {BY} "
                        f"(ray_serve_deployment_replica_healthy{{{APP}}})",
                    )
                ],
            ),
        ],
    ),
]


def panel(panel_id: int, x: int, y: int, title: str, unit: str, description: str, targets):
    return {
        "id": panel_id,
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"x": x, "y": y, "w": 12, "h": 8},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "table", "placement": "bottom"}},
        "targets": [
            {
                "refId": chr(ord("A") + i),
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "expr": expr,
                "legendFormat": legend,
            }
            for i, (legend, expr) in enumerate(targets)
        ],
    }


def dashboard() -> dict:
    panels, y, next_id = [], 0, 1
    for row_title, row_panels in ROWS:
        panels.append(
            {
                "id": next_id,
                "type": "row",
                "title": row_title,
                "collapsed": False,
                "gridPos": {"x": 0, "y": y, "w": 24, "h": 1},
                "panels": [],
            }
        )
        next_id, y = next_id + 1, y + 1
        for i, spec in enumerate(row_panels):
            panels.append(panel(next_id, 12 * (i % 2), y + 8 * (i // 2), *spec))
            next_id += 1
        y += 8 * ((len(row_panels) + 1) // 2)
    return {
        "uid": "vi-asr-service",
        "title": "Vietnamese ASR service",
        "description": "The Ray Serve ASR graph: traffic, live streams, errors, latency per "
        "stage, RTF, encoder batching, replicas, queues and memory. Built by "
        "dashboards/build_asr_dashboard.py.",
        "tags": ["asr", "ray-serve"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "10s",
        "time": {"from": "now-30m", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "type": "datasource",
                    "query": "prometheus",
                    "hide": 0,
                },
                {
                    "name": "application",
                    "label": "Application",
                    "type": "query",
                    "datasource": {"type": "prometheus", "uid": "${datasource}"},
                    "query": {
                        "query": "label_values(ray_asr_model_info, application)",
                        "refId": "application",
                    },
                    "definition": "label_values(ray_asr_model_info, application)",
                    "includeAll": True,
                    "multi": True,
                    "allValue": ".*",
                    "current": {"text": ["All"], "value": ["$__all"]},
                    "refresh": 2,
                },
            ]
        },
        "panels": panels,
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


if __name__ == "__main__":
    OUT.write_text(render())
    print(f"wrote {OUT}")
