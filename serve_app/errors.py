"""Typed errors raised by the inference core.

Bad input raises a subclass of `InputError`; the HTTP edge maps `http_status` to the response.
Nothing in the core asserts on input or returns an error disguised as a result.
"""

from __future__ import annotations


class ASRError(Exception):
    """Base class of every error this package raises on purpose."""

    http_status = 500
    code = "internal_error"


class InputError(ASRError):
    """The caller sent something we cannot transcribe."""

    http_status = 400
    code = "bad_request"


class EmptyAudioError(InputError):
    http_status = 400
    code = "empty_audio"


class CorruptAudioError(InputError):
    """Bytes that claim to be audio but cannot be decoded, or decode to NaN/Inf."""

    http_status = 415
    code = "corrupt_audio"


class UnsupportedAudioError(InputError):
    """A container or codec we do not decode."""

    http_status = 415
    code = "unsupported_audio"


class AudioTooLargeError(InputError):
    http_status = 413
    code = "audio_too_large"


class AudioTooLongError(InputError):
    http_status = 413
    code = "audio_too_long"


class BundleError(ASRError):
    """A model bundle directory is missing a file or has an invalid config."""

    code = "bad_model_bundle"
