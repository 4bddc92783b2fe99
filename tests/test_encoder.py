from __future__ import annotations

import numpy as np
import pytest

from serve_app.encoder import EncoderOptions, padding_waste, plan_batches


def test_plan_batches_covers_every_index_once():
    lengths = [3000, 200, 2800, 1000, 3000, 400, 220, 2990]
    groups = plan_batches(lengths, max_batch=3, max_waste=0.25)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    assert all(len(g) <= 3 for g in groups)
    assert all(padding_waste([lengths[i] for i in g]) <= 0.25 for g in groups)


def test_plan_batches_puts_equal_lengths_together():
    groups = plan_batches([500] * 10, max_batch=4, max_waste=0.0)
    assert [len(g) for g in groups] == [4, 4, 2]


@pytest.mark.parametrize(
    "kwargs", [{"max_batch": 0}, {"max_padding_waste": 1.0}, {"intra_op_threads": -1}]
)
def test_options_validate(kwargs):
    with pytest.raises(ValueError):
        EncoderOptions(**kwargs)


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_window_transcript_independent_of_batch(default_bundle, precision):
    """A clip's transcript is the same alone or padded into a batch with longer clips.

    fp32 outputs agree to float noise. INT8 quantizes activations with one scale per
    tensor, so batch-mates nudge the numbers slightly; the decoded text must not change.
    """
    from serve_app.transcriber import Transcriber
    from tests.conftest import CLIPS_DIR

    t = Transcriber(default_bundle, precision, EncoderOptions(intra_op_threads=2))
    clips = sorted(p for p in CLIPS_DIR.iterdir() if p.suffix in (".wav", ".flac", ".ogg", ".mp3"))
    windows = [t.preprocessor(p.read_bytes()).windows[0].features for p in clips]
    windows = [w for w in windows if w is not None]
    alone = [t.encoder.run_padded([w])[0] for w in windows]
    together = t.encoder.run_padded(windows)
    for a, b in zip(alone, together, strict=True):
        assert a.shape == b.shape
        words_a = t.decoder.decode_window(a, 0.0, 30.0)
        words_b = t.decoder.decode_window(b, 0.0, 30.0)
        assert [w.word for w in words_a] == [w.word for w in words_b]
        if precision == "fp32":
            assert np.abs(a - b).max() < 1e-3
