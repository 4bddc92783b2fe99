"""Where a live stream's utterances may end: frame energies against an adaptive noise floor.

Every FRAME_S of audio is one frame; its level in dBFS is speech when it is SPEECH_ABOVE_
FLOOR_DB above the noise floor and at least SPEECH_MIN_DBFS. The floor follows the quietest
frames down at once and rises slowly (NOISE_FLOOR_RISE_DB per frame), so a steady background
becomes the floor. A pause of `silence_s` after MIN_SPEECH_FRAMES of speech ends an utterance,
cut in the middle of the pause.
"""

from __future__ import annotations

import numpy as np

FRAME_S = 0.02  # endpointer frame: 20 ms
NOISE_FLOOR_START_DB = -70.0  # dBFS, before any audio is heard
NOISE_FLOOR_RISE_DB = 0.02  # per frame (1 dB/s): the floor follows a rising background
SPEECH_ABOVE_FLOOR_DB = 12.0  # a frame this far above the floor is speech...
SPEECH_MIN_DBFS = -55.0  # ... and at least this loud
MIN_SPEECH_FRAMES = 3  # 60 ms of speech frames make an utterance worth transcribing


class Endpointer:
    """Frame energies against an adaptive noise floor: where utterances may end."""

    def __init__(self, sample_rate: int, silence_s: float) -> None:
        self.frame = max(1, round(FRAME_S * sample_rate))
        self.silence_frames = max(1, round(silence_s / FRAME_S))
        self.floor_db = NOISE_FLOOR_START_DB
        self._rest = np.zeros(0, np.float32)
        self.frames_db: list[float] = []  # of the open utterance
        self.speech_frames = 0  # in the open utterance
        self._silent_run = 0

    def push(self, samples: np.ndarray) -> int | None:
        """Add audio; returns the frame of the open utterance at which it should close (a
        pause after speech), or None."""
        audio = np.concatenate([self._rest, samples]) if len(self._rest) else samples
        n = len(audio) // self.frame
        self._rest = audio[n * self.frame :].copy()
        cut = None
        if n == 0:
            return None
        power = np.mean(np.square(audio[: n * self.frame].reshape(n, self.frame)), axis=1)
        for db in 10 * np.log10(power + 1e-12):
            self.frames_db.append(float(db))
            self.floor_db = min(float(db), self.floor_db + NOISE_FLOOR_RISE_DB)
            speech = db > max(self.floor_db + SPEECH_ABOVE_FLOOR_DB, SPEECH_MIN_DBFS)
            self.speech_frames += speech
            self._silent_run = 0 if speech else self._silent_run + 1
            heard = self.speech_frames >= MIN_SPEECH_FRAMES
            if cut is None and heard and self._silent_run == self.silence_frames:
                # close in the middle of the pause: the rest is the next utterance's lead-in
                cut = len(self.frames_db) - self.silence_frames // 2
        return cut

    def quietest_frame(self, last_s: float) -> int:
        """The quietest frame among the last `last_s` seconds of the open utterance."""
        n = len(self.frames_db)
        first = max(0, n - round(last_s / FRAME_S))
        window = self.frames_db[first:]
        return first + int(np.argmin(window)) if window else n

    def restart_at(self, frame: int) -> None:
        """The open utterance now starts at `frame` (of the old one): keep what follows."""
        self.frames_db = self.frames_db[frame:]
        self.speech_frames = sum(
            db > max(self.floor_db + SPEECH_ABOVE_FLOOR_DB, SPEECH_MIN_DBFS)
            for db in self.frames_db
        )
        self._silent_run = 0
