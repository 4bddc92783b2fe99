"""The ONNX Runtime session behind one small class.

Windows of different lengths share a batch: each is zero-padded to the longest and its
true length passed in `lengths`, so attention ignores the padding and the result for a
window is the same alone or batched. Padding still costs compute, so `plan_batches` groups
windows of similar length and caps the wasted fraction.

Big batches are not faster on CPU: past a few seconds of audio per call the attention
maps outgrow the caches, so a call also stops at `max_batch_frames` padded mel frames
(short windows batch, long ones run alone).

Graphs quantized by ONNX Runtime's `quantize_dynamic` (INT8 recipes with one activation
scale per tensor, i.e. per batch) are the exception to batch invariance: batch-mates
would nudge each other's numbers. Such graphs carry `BATCH_INVARIANT_KEY = "false"` in
their metadata and run one window per call. The default INT8 recipe scales each frame on
its own (modelbuild/rowquant.py) and batches like fp32.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DEFAULT_MAX_BATCH = 8
DEFAULT_MAX_PADDING_WASTE = 0.25  # at most a quarter of a sub-batch's frames may be padding
DEFAULT_MAX_BATCH_FRAMES = 800  # padded mel frames per ORT call (8 s); one window always fits
BATCH_INVARIANT_KEY = "asr.batch_invariant"  # ONNX metadata written by the INT8 export


@dataclass(frozen=True)
class EncoderOptions:
    intra_op_threads: int = 0  # 0: ORT's default (all cores); set it when replicas share cores
    inter_op_threads: int = 1
    max_batch: int = DEFAULT_MAX_BATCH
    max_padding_waste: float = DEFAULT_MAX_PADDING_WASTE
    max_batch_frames: int = DEFAULT_MAX_BATCH_FRAMES
    # ORT calls in flight at once, each on a thread of a pool shared by every caller of this
    # encoder (1: each run() calls ORT on its own thread). With one intra-op thread per call
    # this is how one replica uses several cores: independent windows in parallel scale
    # better than one window split across threads, and single-threaded calls never spin-wait.
    parallel_runs: int = 1

    def __post_init__(self) -> None:
        if self.intra_op_threads < 0 or self.inter_op_threads < 1:
            raise ValueError("intra_op_threads must be >= 0 and inter_op_threads >= 1")
        if not 1 <= self.parallel_runs <= 64:
            raise ValueError(f"parallel_runs must be in 1..64, got {self.parallel_runs}")
        if self.max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {self.max_batch}")
        if self.max_batch_frames < 1:
            raise ValueError(f"max_batch_frames must be >= 1, got {self.max_batch_frames}")
        if not 0.0 <= self.max_padding_waste < 1.0:
            raise ValueError(f"max_padding_waste must be in [0, 1), got {self.max_padding_waste}")

    @classmethod
    def from_env(cls, **overrides: int | float) -> EncoderOptions:
        """Thread counts from ASR_ORT_THREADS (a deployment knob), else ORT's default."""
        threads = int(os.environ.get("ASR_ORT_THREADS", "0"))
        return cls(**{"intra_op_threads": threads, **overrides})


def plan_batches(
    lengths: Sequence[int], max_batch: int, max_waste: float, max_frames: int | None = None
) -> list[list[int]]:
    """Group indices into sub-batches of similar length (longest first).

    A window joins the current group while the group's padding stays within `max_waste`
    of its padded frame count, the group holds fewer than `max_batch` windows and, with
    `max_frames`, its padded frames (windows x longest) stay within `max_frames`.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    groups: list[list[int]] = []
    current: list[int] = []
    for i in order:
        if current:
            longest = lengths[current[0]]
            real = sum(lengths[j] for j in current) + lengths[i]
            waste = 1.0 - real / (longest * (len(current) + 1))
            too_big = max_frames is not None and longest * (len(current) + 1) > max_frames
            if len(current) >= max_batch or waste > max_waste or too_big:
                groups.append(current)
                current = []
        current.append(i)
    if current:
        groups.append(current)
    return groups


def padding_waste(lengths: Sequence[int]) -> float:
    if not lengths:
        return 0.0
    return 1.0 - sum(lengths) / (max(lengths) * len(lengths))


class OnnxEncoder:
    """Whisper encoder + CTC head: mel features in, CTC log-probs out."""

    def __init__(self, model_path: Path | str, options: EncoderOptions | None = None) -> None:
        import onnxruntime as ort  # heavy import kept out of module import time

        self.options = options or EncoderOptions()
        so = ort.SessionOptions()
        so.intra_op_num_threads = self.options.intra_op_threads
        so.inter_op_num_threads = self.options.inter_op_threads
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.model_path = Path(model_path)
        self._session = ort.InferenceSession(
            str(self.model_path), so, providers=["CPUExecutionProvider"]
        )
        self.n_mels = self._session.get_inputs()[0].shape[1]
        self.vocab_size = self._session.get_outputs()[0].shape[2]
        metadata = self._session.get_modelmeta().custom_metadata_map
        self.batch_invariant = metadata.get(BATCH_INVARIANT_KEY, "true") != "false"
        self._pool: ThreadPoolExecutor | None = None
        self._pool_size = 0
        self._pool_lock = threading.Lock()

    @property
    def max_batch(self) -> int:
        """Windows per ORT call: 1 for graphs whose results depend on their batch-mates."""
        return self.options.max_batch if self.batch_invariant else 1

    def plan(self, lengths: Sequence[int]) -> list[list[int]]:
        """How `run` groups windows of these mel lengths into ORT calls."""
        o = self.options
        return plan_batches(lengths, self.max_batch, o.max_padding_waste, o.max_batch_frames)

    def run(self, features: Sequence[np.ndarray]) -> list[np.ndarray]:
        """features: [n_mels, T] arrays (T even, any float dtype). Returns [T/2, V] float32 each,
        in input order, running similar lengths together."""
        results: list[np.ndarray | None] = [None] * len(features)
        lengths = [f.shape[1] for f in features]
        groups = self.plan(lengths)
        inputs = [[features[i] for i in group] for group in groups]
        if self.options.parallel_runs > 1:  # also for one group: the pool bounds all callers
            outputs = [future.result() for future in self._submit(inputs)]
        else:
            outputs = [self.run_padded(batch) for batch in inputs]
        for group, outs in zip(groups, outputs, strict=True):
            for i, out in zip(group, outs, strict=True):
                results[i] = out
        return results  # type: ignore[return-value]

    def _submit(self, inputs: list[list[np.ndarray]]) -> list[Future]:
        """Queue one ORT call per group on the shared pool, rebuilt when parallel_runs
        changes. Submitting under the lock keeps a concurrent rebuild from shutting the
        pool down between choosing it and queueing on it."""
        with self._pool_lock:
            wanted = self.options.parallel_runs
            if self._pool is None or self._pool_size != wanted:
                old, self._pool = self._pool, ThreadPoolExecutor(wanted, "ort-run")
                self._pool_size = wanted
                if old is not None:
                    old.shutdown(wait=False)  # queued and running calls finish, then it exits
            return [self._pool.submit(self.run_padded, batch) for batch in inputs]

    def run_padded(self, features: Sequence[np.ndarray]) -> list[np.ndarray]:
        """One ORT call over all `features`, zero-padded to the longest."""
        longest = max(f.shape[1] for f in features)
        batch = np.zeros((len(features), self.n_mels, longest), dtype=np.float32)
        for i, f in enumerate(features):
            batch[i, :, : f.shape[1]] = f
        lengths = np.array([f.shape[1] for f in features], dtype=np.int64)
        log_probs, out_lengths = self._session.run(
            ["log_probs", "out_lengths"], {"input_features": batch, "lengths": lengths}
        )
        return [log_probs[i, : out_lengths[i]] for i in range(len(features))]
