from __future__ import annotations

import numpy as np
import pytest

from serve_app.encoder import EncoderOptions, OnnxEncoder, padding_waste, plan_batches


def test_plan_batches_covers_every_index_once():
    lengths = [3000, 200, 2800, 1000, 3000, 400, 220, 2990]
    groups = plan_batches(lengths, max_batch=3, max_waste=0.25)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    assert all(len(g) <= 3 for g in groups)
    assert all(padding_waste([lengths[i] for i in g]) <= 0.25 for g in groups)


def test_plan_batches_puts_equal_lengths_together():
    groups = plan_batches([500] * 10, max_batch=4, max_waste=0.0)
    assert [len(g) for g in groups] == [4, 4, 2]


def test_plan_batches_caps_padded_frames_per_call():
    """Short windows share a call up to the frame budget; a window longer than the budget
    still runs (alone)."""
    lengths = [200, 200, 200, 200, 200, 1500, 3000, 100]
    groups = plan_batches(lengths, max_batch=8, max_waste=0.25, max_frames=800)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    assert all(max(lengths[i] for i in g) * len(g) <= 800 or len(g) == 1 for g in groups)
    assert [6] in groups and [5] in groups
    assert sorted(len(g) for g in groups if lengths[g[0]] == 200) == [2, 4]  # 200+100 share


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_batch": 0},
        {"max_padding_waste": 1.0},
        {"intra_op_threads": -1},
        {"parallel_runs": 0},
        {"max_batch_frames": 0},
    ],
)
def test_options_validate(kwargs):
    with pytest.raises(ValueError):
        EncoderOptions(**kwargs)


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_window_result_independent_of_batch(default_bundle, precision):
    """A window's output is the same alone or batched with longer windows, in one ORT call.

    fp32 graphs mask the padding, so batch-mates change nothing beyond float noise. The
    default INT8 graph scales every frame on its own and accumulates in integers, so its
    outputs are bit-identical.
    """
    from serve_app.transcriber import Transcriber
    from tests.conftest import CLIPS_DIR

    options = EncoderOptions(intra_op_threads=2, max_batch_frames=100_000)
    t = Transcriber(default_bundle, precision, options)
    assert t.encoder.batch_invariant
    clips = sorted(p for p in CLIPS_DIR.iterdir() if p.suffix in (".wav", ".flac", ".ogg", ".mp3"))
    windows = [t.preprocessor(p.read_bytes()).windows[0].features for p in clips]
    windows = [w for w in windows if w is not None]
    assert len({w.shape[1] for w in windows}) > 1  # really different lengths
    alone = [t.encoder.run([w])[0] for w in windows]
    assert len(t.encoder.plan([w.shape[1] for w in windows])) < len(windows)  # really batched
    together = t.encoder.run(windows)
    for a, b in zip(alone, together, strict=True):
        assert a.shape == b.shape
        if precision == "int8":
            assert np.array_equal(a, b)
        else:
            assert np.abs(a - b).max() < 1e-3
        words_a = t.decoder.decode_window(a, 0.0, 30.0)
        words_b = t.decoder.decode_window(b, 0.0, 30.0)
        assert words_a == words_b


@pytest.mark.slow
def test_fp32_padded_batch_equals_alone(default_bundle):
    """One ORT call over windows of different lengths: padding is masked out exactly."""
    from serve_app.bundle import load_bundle

    encoder = OnnxEncoder(load_bundle(default_bundle).model_path("fp32"))
    rng = np.random.default_rng(0)
    windows = [rng.standard_normal((80, n)).astype(np.float32) * 0.5 for n in (300, 1000, 2000)]
    together = encoder.run_padded(windows)
    for w, b in zip(windows, together, strict=True):
        a = encoder.run_padded([w])[0]
        assert np.array_equal(a.argmax(-1), b.argmax(-1))
        assert np.abs(a - b).max() < 1e-3


@pytest.mark.slow
def test_parallel_runs_give_the_same_outputs_in_order(default_bundle):
    """ORT calls spread over threads: every window's output equals the sequential one, in
    input order, and changing parallel_runs live swaps the thread pool."""
    from dataclasses import replace

    from serve_app.bundle import load_bundle

    path = load_bundle(default_bundle).model_path("int8")
    rng = np.random.default_rng(1)
    windows = [rng.standard_normal((80, n)).astype(np.float32) * 0.5 for n in (400, 120, 260, 300)]
    one_per_call = EncoderOptions(intra_op_threads=1, max_batch=1)
    sequential = OnnxEncoder(path, one_per_call).run(windows)
    encoder = OnnxEncoder(path, replace(one_per_call, parallel_runs=3))  # four calls to spread
    for runs in (3, 2):
        encoder.options = replace(encoder.options, parallel_runs=runs)
        parallel = encoder.run(windows)
        assert encoder._pool_size == runs
        for a, b in zip(sequential, parallel, strict=True):
            np.testing.assert_array_equal(a, b)
