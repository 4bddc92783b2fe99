"""The benchmark suite's pure parts: percentiles, the closed-loop runner's bookkeeping, the
clip builder (real espeak-ng), the serve config it runs, process naming, the ratios and the
generated BENCHMARKS.md and plots. No timing assertions: speed is bench/'s business."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from bench import clips as clipmod
from bench import common, report, stack, suite

REPO = Path(__file__).resolve().parent.parent


# --- percentiles and the load runner ---------------------------------------------------------


@pytest.mark.parametrize("q", [0, 10, 50, 95, 99, 100])
@pytest.mark.parametrize("n", [1, 2, 7, 100])
def test_percentile_matches_numpy(q: float, n: int) -> None:
    values = list(np.random.default_rng(n).exponential(1.0, n))
    assert common.percentile(values, q) == pytest.approx(np.percentile(values, q))


def test_percentile_rejects_nothing_and_bad_q() -> None:
    with pytest.raises(ValueError, match="no values"):
        common.percentile([], 50)
    with pytest.raises(ValueError, match="q must be"):
        common.percentile([1.0], 101)


def test_latency_summary() -> None:
    summary = common.latency_summary([1.0, 2.0, 3.0, 4.0])
    assert summary["latency_p50_s"] == 2.5
    assert summary["latency_max_s"] == 4.0
    assert summary["latency_mean_s"] == 2.5
    assert summary["latency_p50_s"] <= summary["latency_p95_s"] <= summary["latency_p99_s"]
    assert all(v is None for v in common.latency_summary([]).values())


def test_run_load_sends_exactly_n_and_counts_failures() -> None:
    seen: list[str] = []

    def call(item: str) -> tuple[bool, float, object]:
        seen.append(item)
        if item == "bad":
            raise ConnectionError("refused")
        return True, 2.0, item.upper()

    row, outcomes = common.run_load(call, ["a", "b", "bad"], concurrency=3, n_requests=7)
    assert len(seen) == row["requests"] == 7
    assert sorted(seen) == sorted(["a", "b", "bad"] * 2 + ["a"])  # items in turn
    assert row["ok"] == 5 and row["failed"] == 2
    assert row["audio_s"] == 10.0
    failed = [o for o in outcomes if not o.ok]
    assert all("ConnectionError" in o.extra["exception"] for o in failed)
    assert {o.extra for o in outcomes if o.ok} == {"A", "B"}


def test_cpu_meter_shares_add_up() -> None:
    meter = common.CpuMeter()
    sum(i * i for i in range(200_000))  # some CPU of our own
    shares = meter.stop()
    assert 0.0 <= shares["ours"] <= 1.0 and 0.0 <= shares["others"] <= 1.0
    assert shares["others"] <= shares["machine_busy"] + 1e-9


def test_run_load_validates() -> None:
    with pytest.raises(ValueError):
        common.run_load(lambda item: (True, 1.0, None), [], 1, 1)
    with pytest.raises(ValueError):
        common.run_load(lambda item: (True, 1.0, None), [1], 0, 1)


def test_batch_histogram_counts_batches_once() -> None:
    # two requests of one window batched together (2, 2), one alone (1), a batch of 3
    hist = common.batch_histogram([2, 2, 1, 3, 3, 3])
    assert hist["windows_by_batch_size"] == {1: 1, 2: 2, 3: 3}
    assert hist["batches"] == {1: 1, 2: 1, 3: 1}
    assert common.parse_batch_sizes("1,3, 2,") == [1, 3, 2]
    assert report.mean_batch(hist) == 2.0


def test_requests_per_point_and_quick_args() -> None:
    assert suite.requests_for(32, 4) == 32
    assert suite.requests_for(1, 4) == 4
    args = suite.parse_args(["--quick"])
    assert args.levels == [1, 4]
    assert args.kinds == ["short", "medium"]
    assert args.clips["long"] == 0  # a kind not measured needs no clips
    args = suite.parse_args(["--levels", "8,1,8", "--skip", "onnx,http"])
    assert args.levels == [1, 8]
    assert args.skip == {"onnx", "http"}
    with pytest.raises(SystemExit):
        suite.parse_args(["--skip", "gpu"])


def test_machine_info_describes_the_machine() -> None:
    info = common.machine_info()
    assert info["nproc"] >= 1
    assert info["mem_total_gib"] > 0
    assert len(info["loadavg_start"]) == 3
    assert "load average" in info["uptime_start"]
    assert info["versions"]["onnxruntime"]


# --- clips ------------------------------------------------------------------------------------


def test_pack_fills_the_target_in_order_and_skips_misfits() -> None:
    edge, gap = 2 * clipmod.EDGE_SILENCE_S, clipmod.GAP_S
    picked = clipmod.pack([4.0, 4.0, 9.0, 3.0, 1.0], target_s=15.0)
    assert picked == [0, 1, 3, 4]  # 9 s does not fit after 8 s; 3 s and 1 s do
    total = edge + sum([4.0, 4.0, 3.0, 1.0]) + gap * 3
    assert total <= 15.0
    assert clipmod.pack([20.0], target_s=15.0) == []


def test_join_pads_to_the_exact_length() -> None:
    piece = np.ones(16000, np.float32)
    audio = clipmod.join([piece, piece], total_s=5.0)
    assert audio.size == 5 * clipmod.SAMPLE_RATE
    assert np.abs(audio).max() == pytest.approx(clipmod.PEAK)
    with pytest.raises(ValueError, match="exceed"):
        clipmod.join([piece] * 10, total_s=5.0)


@pytest.fixture(scope="module")
def built_clips() -> list[clipmod.Clip]:
    return clipmod.build_clips({"short": 2, "medium": 1, "long": 0})


def test_build_clips_real_espeak(built_clips: list[clipmod.Clip]) -> None:
    short = [c for c in built_clips if c.kind == "short"]
    medium = [c for c in built_clips if c.kind == "medium"]
    assert len(short) == 2 and len(medium) == 1
    for clip in short:
        assert 3.0 <= clip.duration_s <= 5.0
    assert medium[0].duration_s == 15.0
    texts = [c.text for c in built_clips]
    assert len(set(texts)) == len(texts)  # every sentence used once
    held_out = clipmod.held_out_sentences(40)
    assert short[0].text == held_out[0]  # the first held-out sentence is 3-5 s spoken
    assert len(medium[0].sentences) >= 2
    assert all(sentence in held_out for sentence in medium[0].sentences)
    assert medium[0].text == " ".join(medium[0].sentences)
    audio, rate = sf.read(io.BytesIO(medium[0].wav_bytes()))
    assert rate == 16000 and audio.ndim == 1 and audio.size == 15 * 16000


def test_build_clips_is_deterministic(built_clips: list[clipmod.Clip]) -> None:
    again = clipmod.build_clips({"short": 1, "medium": 0, "long": 0})
    assert again[0].wav_bytes() == built_clips[0].wav_bytes()
    assert again[0].text == built_clips[0].text


# --- the serve config and the process tree ---------------------------------------------------


def test_serve_executable_is_what_make_serve_runs(tmp_path: Path, monkeypatch) -> None:
    """The serving-only environment's `serve` when .venv-serve exists, else this one's."""
    monkeypatch.setattr(stack, "REPO", tmp_path)
    assert stack.serve_executable() == Path(sys.executable).parent / "serve"
    lean = tmp_path / ".venv-serve" / "bin" / "serve"
    lean.parent.mkdir(parents=True)
    lean.write_text("#!/bin/sh\n")
    assert stack.serve_executable() == lean
    makefile = (REPO / "Makefile").read_text()
    assert "exec $(SERVE_VENV)/bin/serve run serve_config.yaml" in makefile
    assert "SERVE_VENV ?= .venv-serve" in makefile


def test_bench_config_changes_only_port_and_model_dir(tmp_path: Path) -> None:
    committed = yaml.safe_load((REPO / "serve_config.yaml").read_text())
    config = stack.bench_config(tmp_path / "bundle", 12345)
    assert config["http_options"]["port"] == 12345
    assert config["http_options"]["host"] == "127.0.0.1"
    app = config["applications"][0]
    assert app["args"]["model_dir"] == str((tmp_path / "bundle").resolve())
    app["args"].pop("model_dir")
    committed_app = committed["applications"][0]
    assert app == committed_app
    assert config["proxy_location"] == committed["proxy_location"]


@pytest.mark.parametrize(
    ("cmdline", "name", "label"),
    [
        (
            ["ray::ServeReplica:asr:Encoder.handle_request"],
            "python",
            "ray::ServeReplica:asr:Encoder",
        ),
        (["ray::ServeController.listen_for_change"], "python", "ray::ServeController"),
        (["/x/bin/gcs_server", "--log_dir=/tmp"], "gcs_server", "gcs_server"),
        (
            ["/x/bin/python3", "-u", "/x/ray/dashboard/dashboard.py", "--port=1"],
            "python3",
            "dashboard",
        ),
        (
            ["/x/.venv/bin/python3", "/x/.venv/bin/serve", "run", "c.yaml"],
            "python3",
            "serve run (driver)",
        ),
        (
            ["/x/bin/python3", "-c", "from multiprocessing.forkserver import main; main(1)"],
            "python3",
            "python -c multiprocessing.forkserver",
        ),
        (["/x/bin/python3", "-c", "print(1)"], "python3", "python -c print(1)"),
        ([], "raylet", "raylet"),
    ],
)
def test_process_label(cmdline: list[str], name: str, label: str) -> None:
    assert stack.process_label(cmdline, name) == label


def test_memory_summary_peaks_and_totals() -> None:
    mib = 2**20
    row = {"label": "ray::ServeReplica:asr:Encoder", "create_time": 1.0}
    samples = [
        stack.MemorySample(0.0, {1: {**row, "rss": 100 * mib, "pss": 50 * mib, "uss": 40 * mib}}),
        stack.MemorySample(
            1.0,
            {
                1: {**row, "rss": 300 * mib, "pss": 60 * mib, "uss": 45 * mib},
                2: {**row, "rss": 100 * mib, "pss": 80 * mib, "uss": 70 * mib},
            },
        ),
    ]
    summary = stack.memory_summary(samples)
    assert summary["total_peak_mib"] == {"rss": 400.0, "pss": 140.0, "uss": 115.0}
    assert summary["process_count_peak"] == 2
    first = summary["processes"][0]
    assert (first["pid"], first["rss_mib"], first["pss_mib"]) == (1, 300.0, 60.0)
    assert [p["label"] for p in summary["processes"]] == [row["label"]] * 2
    idle_then_replica = [
        stack.MemorySample(0.0, {3: {**row, "label": "ray::IDLE", "rss": mib}}),
        stack.MemorySample(1.0, {3: {**row, "rss": 2 * mib}}),
        stack.MemorySample(2.0, {3: {**row, "label": "ray::IDLE", "rss": mib}}),
    ]
    assert stack.memory_summary(idle_then_replica)["processes"][0]["label"] == row["label"]
    peaks = suite.replicas_per_point(samples, [("short", 1, 0.0), ("short", 4, 0.5)])
    assert peaks == {"short/1": {"Encoder": 1}, "short/4": {"Encoder": 2}}


# --- ratios and the report ------------------------------------------------------------------


def _row(c: int, throughput: float, p50: float = 0.5) -> dict:
    return {
        "concurrency": c,
        "requests": 8,
        "ok": 8,
        "failed": 0,
        "audio_s_per_wall_s": throughput,
        "latency_p50_s": p50,
        "latency_p95_s": p50 * 1.5,
        "latency_p99_s": p50 * 2,
        "latency_max_s": p50 * 2,
        "cpu": {"machine_busy": 0.9, "ours": 0.8, "others": 0.1 * c},
    }


def _results() -> dict:
    hist = common.batch_histogram([1, 2, 2, 4, 4, 4, 4])
    http_rows = [
        {**_row(1, 10.0), "encoder_batches": hist, "replicas_peak": {"Encoder": 1}},
        {**_row(4, 20.0, 1.0), "encoder_batches": hist, "replicas_peak": {"Encoder": 2}},
    ]
    mem = {"pid": 7, "label": "ray::ServeReplica:asr:Encoder", "rss_mib": 500.0, "pss_mib": 300.0}
    fw_rows = {"short": _row(1, 2.5, 1.6)}
    return {
        "created": "2026-01-01T00:00:00+00:00",
        "command": ["python", "bench/suite.py"],
        "note": "shared machine",
        "machine": {
            "cpu_model": "Test CPU",
            "cpu_flags": {"avx2": True},
            "nproc": 2,
            "os_cpu_count": 2,
            "mem_total_gib": 24.0,
            "os": "Debian",
            "kernel": "6",
            "python": "3.11",
            "versions": {"onnxruntime": "1.0", "faster-whisper": "1.2.1"},
            "uptime_start": "up 1.0 h, load average: 1.00, 1.00, 1.00",
            "uptime_end": "up 1.2 h, load average: 2.00, 1.50, 1.00",
        },
        "settings": {"wall_s": 100.0, "base_requests": {"short": 8}},
        "clips": [{"name": "short-00", "kind": "short", "duration_s": 4.0, "text": "a b"}],
        "paths": {
            "onnx": {"rows": {"short": [_row(1, 80.0), _row(4, 90.0)]}},
            "in_process": {"rows": {"short": [_row(1, 40.0), _row(4, 50.0)]}},
            "faster_whisper": {
                "settings": {"compute_type": "int8", "beam_size": 1, "cpu_threads": 2},
                "rows": fw_rows,
                "variants": {"greedy": {"rows": fw_rows}, "greedy_fallback": {"rows": fw_rows}},
                "load_s": 1.5,
            },
            "http": {
                "rows": {"short": http_rows},
                "cold_start": {
                    "first_http_answer_s": 12.0,
                    "first_200_s": 30.0,
                    "phases": {"ray_started": 5.0, "app_built": 9.5, "lm_loaded": None},
                    "serve_bin": "/x/.venv-serve/bin/serve",
                },
                "memory_idle": {
                    "processes": [{**mem, "rss_mib": 400.0}],
                    "total_peak_mib": {"rss": 400.0},
                },
                "memory_load": {
                    "processes": [mem],
                    "total_peak_mib": {"rss": 500.0, "pss": 300.0},
                    "process_count_peak": 1,
                },
                "stop": {"driver_exit_s": 3.0},
            },
        },
        "accuracy": {
            "service": {"short": {"cer": 0.1, "wer": 0.4, "clips": 1}},
            "faster_whisper": {"short": {"cer": 0.6, "wer": 0.9, "clips": 1}},
            "faster_whisper_greedy_fallback": {"short": {"cer": 0.5, "wer": 0.8, "clips": 1}},
        },
    }


def test_compute_ratios() -> None:
    ratios = suite.compute_ratios(_results())
    assert ratios["http_over_in_process"] == {"short": {"1": 0.25, "4": 0.4}}
    assert ratios["http_best_over_in_process_best"] == {"short": 0.4}
    assert ratios["in_process_best_over_onnx_best"] == {"short": pytest.approx(0.556)}
    assert ratios["in_process_over_onnx"] == {"short": {"1": 0.5, "4": pytest.approx(0.556)}}
    fw = ratios["service_vs_faster_whisper"]["short"]
    assert fw["in_process_c1_over_fw"] == 16.0
    assert fw["http_c1_over_fw"] == 4.0
    assert fw["http_best_over_fw"] == 8.0
    assert (fw["cer_service"], fw["cer_faster_whisper"]) == (0.1, 0.6)
    assert fw["cer_faster_whisper_fallback"] == 0.5


def test_accuracy_per_kind() -> None:
    clips = [
        clipmod.Clip("s", "short", np.zeros(4), "xin chào"),
        clipmod.Clip("m", "medium", np.zeros(4), "một hai ba"),
    ]
    acc = suite.accuracy(clips, {"s": "Xin chào.", "m": "một hai"})
    assert acc["short"] == {"cer": 0.0, "wer": 0.0, "clips": 1}
    assert acc["medium"]["wer"] == pytest.approx(1 / 3, abs=1e-4)
    assert "long" not in acc


def test_render_markdown_has_every_section() -> None:
    results = _results()
    results["ratios"] = suite.compute_ratios(results)
    text = report.render_markdown(results, {"throughput": "bench/report/throughput.png"})
    for heading in (
        "## The ratios",
        "## Machine",
        "## Clips",
        "## Throughput vs concurrency",
        "## Latency vs concurrency",
        "## Encoder batch sizes (HTTP)",
        "## Memory of the Ray stack",
        "## Cold start",
        "## faster-whisper, side by side",
        "## How it was measured",
    ):
        assert heading in text
    assert "(bench/RESILIENCE.md)" in text
    assert "![throughput](bench/report/throughput.png)" in text
    assert "| short | 0.40x | c=1: 0.25x, c=4: 0.40x |" in text
    assert "Test CPU (avx2)" in text and "24.0 GiB" in text
    assert "load average: 2.00, 1.50, 1.00" in text
    assert "**Note on this run:** shared machine" in text
    assert "| 4 | 20.00 | 8/8 | 50.00 | 90.00 | 0.40x | 0.56x | 40% / 40% / 40% |" in text
    assert "| short | c=1: 0.50x, c=4: 0.56x |" in text  # in-process over bare ONNX
    assert "| local Ray instance started | 5.0 s |" in text
    assert "`serve run serve_config.yaml` (`.venv-serve/bin/serve`)" in text
    assert "| app imported and built by the controller | 9.5 s |" in text
    assert "LM" not in text.split("## Cold start")[1].split("##")[0]  # a phase not seen
    assert "(min / mean / max) | 10% / 23% / 40% |" in text
    assert "| ServeReplica:asr:Encoder | 400 | 500 | 300 |" in text
    assert "| first 200 transcript | 30.0 s |" in text
    assert "faster-whisper, greedy + fallback" in text
    assert "16.00x" in text and "10.0%" in text and "60.0%" in text


def test_command_line_leaves_the_note_out() -> None:
    command = ["python", "bench/suite.py", "--note", "a busy day", "--levels", "1,2", "--x=a b"]
    assert report.command_line(command) == (
        "python bench/suite.py --note '…' --levels 1,2 '--x=a b'"
    )


def test_render_markdown_survives_skipped_paths() -> None:
    results = _results()
    del results["paths"]["http"], results["paths"]["faster_whisper"]
    results["accuracy"] = {}
    results["ratios"] = suite.compute_ratios(results)
    text = report.render_markdown(results, {})
    assert "HTTP path skipped" in text
    assert "## faster-whisper" not in text


def test_write_report_draws_the_plots(tmp_path: Path) -> None:
    results = _results()
    results["ratios"] = suite.compute_ratios(results)
    markdown = tmp_path / "BENCHMARKS.md"
    report.write_report(results, markdown, tmp_path / "report")
    names = {"throughput", "latency", "batches", "memory", "faster_whisper"}
    for name in names:
        png = tmp_path / "report" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"(report/{name}.png)" in markdown.read_text()


# --- the faster-whisper peer ----------------------------------------------------------------


@pytest.mark.slow
def test_faster_whisper_runs_on_the_wheels_weights() -> None:
    from bench import fw
    from modelbuild.weights import model_bin_parts

    path = fw.model_dir()  # cache/faster-whisper-base, git-ignored; reused when complete
    parts = model_bin_parts()
    assert (path / "model.bin").stat().st_size == sum(p.stat().st_size for p in parts)
    with (path / "model.bin").open("rb") as f:
        assert f.read(64) == parts[0].read_bytes()[:64]
    for name in (*fw.COPIED_FILES, "preprocessor_config.json"):
        assert (path / name).is_file()
    engine = fw.FasterWhisper(path)
    assert engine.settings.describe()["temperature"] == 0.0
    text = engine.transcribe((REPO / "tests" / "data" / "clips" / "north_16k.wav").read_bytes())
    assert text.strip()
    assert any(ord(ch) > 0x7F for ch in text)  # Vietnamese letters with diacritics


def test_write_results_names_a_timestamped_file_or_uses_out(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(common, "RESULTS", tmp_path / "results")
    written = common.write_results({"ratio": 0.87, "clip": "tiếng"}, "probe", None)
    assert written.parent == tmp_path / "results" and written.name.startswith("probe-")
    assert json.loads(written.read_text()) == {"ratio": 0.87, "clip": "tiếng"}
    chosen = tmp_path / "deep" / "x.json"
    assert common.write_results({"p": Path("a")}, "probe", chosen, default=str) == chosen
    assert json.loads(chosen.read_text()) == {"p": "a"}


@pytest.mark.slow
def test_stages_times_every_stage_of_the_real_transcriber(default_bundle) -> None:
    from bench import stages
    from serve_app.transcriber import Transcriber

    transcriber = Transcriber(default_bundle, precision="int8")
    clip = Path(__file__).parent / "data" / "clips" / "north_16k.wav"
    ms = stages.measure(transcriber, [clip.read_bytes()], repeats=1)
    assert set(ms) == {"preprocess", "encoder_bare", "decode_greedy", "in_process_greedy",
                       "decode_beam", "in_process_beam"}  # fmt: skip
    assert all(v > 0 for v in ms.values())
    # the whole path includes the bare encoder's work on the same features
    assert ms["in_process_greedy"] > 0.5 * ms["encoder_bare"]


def test_stream_gap_streams_and_uploads_one_recording(default_bundle, tmp_path) -> None:
    """bench.stream_gap on committed clips: the recording is cut at its pause into two
    utterances, and the streamed text keeps every word the upload has, give or take."""
    import asyncio

    from bench import stream_gap
    from serve_app.evaluation import cer
    from serve_app.transcriber import Transcriber

    clips = REPO / "tests" / "data" / "clips"
    refs = {
        json.loads(x)["audio"]: json.loads(x)["text"] for x in (clips / "manifest.jsonl").open()
    }
    rows = [{"audio": "north_16k.wav"}, {"audio": "south_48k.ogg"}]
    pcm = stream_gap.pcm16(clips, rows)
    assert pcm.dtype == np.int16 and len(pcm) > 2 * stream_gap.GAP_S * 16000
    transcriber = Transcriber(default_bundle)
    streamed = asyncio.run(stream_gap.streamed(transcriber, pcm))
    upload = transcriber.transcribe_audio(pcm.astype(np.float32) / 32768).text
    reference = " ".join(refs[r["audio"]] for r in rows)
    assert cer([reference], [streamed]) <= cer([reference], [upload]) + 0.05
    assert abs(len(streamed.split()) - len(upload.split())) <= 2

    # recordings(): clean dev rows only, the same draw for the same seed
    manifest = tmp_path / "manifest.jsonl"
    corpus_rows = [
        {"id": f"{split}{i}", "split": split, "condition": cond, "audio": "x", "text": "t"}
        for split in ("dev", "test") for cond in ("clean", "babble") for i in range(6)
    ]  # fmt: skip
    manifest.write_text("".join(json.dumps(r) + "\n" for r in corpus_rows))
    drawn = stream_gap.recordings(tmp_path, 3, 4, seed=1)
    assert [len(g) for g in drawn] == [4, 4, 4]
    assert all(r["split"] == "dev" and r["condition"] == "clean" for g in drawn for r in g)
    assert drawn == stream_gap.recordings(tmp_path, 3, 4, seed=1)


def test_cold_start_milestones_match_serve_runs_log_lines() -> None:
    from bench.cold_start import MILESTONES

    lines = {
        "ray_started": "INFO worker.py:2029 -- Started a local Ray instance. View the dashboard",
        "serve_started": "SUCC scripts.py:546 -- Submitted deploy config successfully.",
        "app_built": "INFO controller 7488 -- Imported and built app 'asr' successfully.",
        "replicas_requested": "INFO controller -- Adding 1 replica to Deployment(name='Encoder')",
        "lm_loaded": "(ServeReplica:asr:Decoder pid=7648) ********************************",
    }
    assert set(lines) == set(MILESTONES)
    for name, line in lines.items():
        assert [n for n, p in MILESTONES.items() if p.search(line)] == [name]


def test_hop_cost_uses_the_replica_settings_of_the_serve_config(tmp_path: Path) -> None:
    from bench import hop_cost

    env = hop_cost.replica_env()
    config = yaml.safe_load(stack.SERVE_CONFIG.read_text())
    assert env == {
        k: str(v) for k, v in config["applications"][0]["runtime_env"]["env_vars"].items()
    }
    assert env["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "1"
    bare = tmp_path / "bare.yaml"
    bare.write_text(yaml.safe_dump({"applications": [{"name": "x"}]}))
    assert hop_cost.replica_env(bare) == {}
