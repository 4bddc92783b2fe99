"""ServePipeline retries a stage call once when the replica died under it, and never retries
an answer (an input error, back-pressure). Handles are stand-ins; the real replica deaths
are what bench/faults.py does to a running graph."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError
from ray.serve.exceptions import BackPressureError

from serve_app.api import ServiceInfo, ServiceUnavailable
from serve_app.deployments import ServePipeline
from serve_app.errors import CorruptAudioError
from serve_app.formats import Transcript
from serve_app.transcriber import Prepared, WindowFeatures

INFO = ServiceInfo(model="m", precision="int8")
TRANSCRIPT = Transcript("xin chào", "vi", 1.0, [], [])


class FlakyHandle:
    """A DeploymentHandle stand-in whose first `failures` calls raise `error`."""

    def __init__(self, result, error: BaseException | None = None, failures: int = 0):
        self.result, self.error, self.failures = result, error, failures
        self.calls = 0

    def remote(self, *args):
        self.calls += 1
        return self._answer(self.calls)

    def __getattr__(self, _name):  # handle.encode.remote(...) calls the same stand-in
        return self

    async def _answer(self, call: int):
        if self.error is not None and call <= self.failures:
            raise self.error
        return self.result


def prepared() -> Prepared:
    features = np.zeros((80, 100), np.float16)
    return Prepared(1.0, [WindowFeatures(0.0, 1.0, features)])


def pipeline(pre=None, enc=None, dec=None) -> ServePipeline:
    return ServePipeline(
        pre or FlakyHandle(prepared()),
        enc or FlakyHandle((np.zeros((50, 8), np.float32), 1)),
        dec or FlakyHandle(TRANSCRIPT),
        INFO,
    )


def died() -> list[BaseException]:
    return [
        ActorDiedError(),
        ActorUnavailableError("replica unreachable", b"\0" * 16),
        RayActorError(),
    ]


@pytest.mark.parametrize("stage", ["pre", "enc", "dec"])
@pytest.mark.parametrize("error", died(), ids=lambda e: type(e).__name__)
def test_a_stage_call_is_retried_once_when_its_replica_died(stage, error):
    flaky = {
        "pre": FlakyHandle(prepared(), error, failures=1),
        "enc": FlakyHandle((np.zeros((50, 8), np.float32), 1), error, failures=1),
        "dec": FlakyHandle(TRANSCRIPT, error, failures=1),
    }[stage]
    result = asyncio.run(pipeline(**{stage: flaky}).transcribe(b"audio"))
    assert result.transcript == TRANSCRIPT
    assert flaky.calls == 2


def test_a_second_death_is_a_503_not_a_third_try():
    flaky = FlakyHandle((np.zeros((50, 8), np.float32), 1), ActorDiedError(), failures=2)
    with pytest.raises(ServiceUnavailable):
        asyncio.run(pipeline(enc=flaky).transcribe(b"audio"))
    assert flaky.calls == 2


@pytest.mark.parametrize(
    "error",
    [
        CorruptAudioError("not audio"),
        BackPressureError(num_queued_requests=9, max_queued_requests=8),
    ],
    ids=lambda e: type(e).__name__,
)
def test_answers_are_never_retried(error):
    flaky = FlakyHandle(prepared(), error, failures=1)
    with pytest.raises((CorruptAudioError, ServiceUnavailable)):
        asyncio.run(pipeline(pre=flaky).transcribe(b"audio"))
    assert flaky.calls == 1
