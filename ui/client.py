"""The UI's only way to the service: a small HTTP client over httpx, and readable errors.

Every failure (an HTTP error status, a body that is not the service's JSON, a refused
connection, a timeout) becomes one `ServiceError` whose `message` is meant for a person;
the app shows it with `st.error` and never a traceback.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"  # what `make serve` listens on
DEFAULT_TIMEOUT_S = 300.0  # a long recording on a busy 2-core machine takes minutes
STATUS_TIMEOUT_S = 5.0  # /health, /models and / answer at once or not at all
ENV_URL = "ASR_URL"
ENV_API_KEY = "ASR_API_KEY"
ENV_TIMEOUT = "ASR_TIMEOUT_S"
MAX_DETAIL_CHARS = 300  # of a non-JSON error body shown to the user

# What each status means to someone uploading a file, before the service's own words.
STATUS_HINTS = {
    400: "The service rejected the request",
    401: "The service needs an API key (set it in the sidebar or ASR_API_KEY)",
    404: "This URL does not look like the ASR service (route not found)",
    413: "The audio is too large or too long for the service",
    415: "The service could not decode this file as audio",
    422: "The service could not process this audio",
    429: "Too many requests; try again shortly",
    500: "The service failed on this request",
    502: "A proxy in front of the service could not reach it",
    503: "The service is busy or one of its stages is down",
    504: "A proxy in front of the service timed out",
}


class ServiceError(Exception):
    """A request that did not give a result, described for a person."""

    def __init__(
        self,
        message: str,
        status: int | None = None,  # None: no HTTP answer at all (refused, timed out)
        code: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class Settings:
    url: str = DEFAULT_URL
    api_key: str | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ) if env is None else env
        try:
            timeout_s = float(env.get(ENV_TIMEOUT) or DEFAULT_TIMEOUT_S)
        except ValueError:
            timeout_s = DEFAULT_TIMEOUT_S  # a typo in the environment must not stop the UI
        return cls(
            url=normalize_url(env.get(ENV_URL, "")) or DEFAULT_URL,
            api_key=env.get(ENV_API_KEY, "").strip() or None,
            timeout_s=timeout_s if timeout_s > 0 else DEFAULT_TIMEOUT_S,
        )


def normalize_url(url: str) -> str:
    """`127.0.0.1:8000/` -> `http://127.0.0.1:8000`; empty stays empty."""
    url = url.strip().rstrip("/")
    if url and "://" not in url:
        url = "http://" + url
    return url


def error_from_response(response: httpx.Response) -> ServiceError:
    """The service's JSON error (`{"error": {"code", "message"}}`) or whatever came back."""
    status = response.status_code
    code, detail = None, ""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        code = body["error"].get("code")
        detail = str(body["error"].get("message") or "")
    elif isinstance(body, dict) and "detail" in body:
        detail = str(body["detail"])
    else:
        detail = " ".join(response.text.split())[:MAX_DETAIL_CHARS]
    retry_after = _retry_after(response.headers.get("retry-after"))
    hint = STATUS_HINTS.get(status, f"The service answered HTTP {status}")
    message = f"{hint} (HTTP {status}"
    message += f", {code})" if code else ")"
    if detail:
        message += f": {detail}"
    if retry_after:
        message += f" Retry in about {retry_after:g} s."
    return ServiceError(message, status, code, retry_after)


def _retry_after(value: str | None) -> float | None:
    try:
        seconds = float(value) if value else None
    except ValueError:
        return None  # an HTTP date: rare, and a hint is enough
    return seconds if seconds and seconds > 0 else None


def error_from_exception(exc: httpx.HTTPError, url: str) -> ServiceError:
    if isinstance(exc, httpx.TimeoutException):
        return ServiceError(f"No answer from the service at {url} in time ({type(exc).__name__}).")
    if isinstance(exc, httpx.ConnectError):
        return ServiceError(
            f"Cannot reach the service at {url}: is it running (`make serve`) and is the URL right?"
        )
    return ServiceError(f"Talking to the service at {url} failed: {type(exc).__name__}: {exc}")


class AsrClient:
    """GET /, /health, /models and POST /transcribe on the ingress."""

    def __init__(self, settings: Settings, transport: httpx.BaseTransport | None = None) -> None:
        self.settings = settings
        headers = {"authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
        self._http = httpx.Client(
            base_url=settings.url, headers=headers, transport=transport, trust_env=False
        )

    def __enter__(self) -> AsrClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise error_from_exception(exc, self.settings.url) from None

    def _json(self, response: httpx.Response) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise ServiceError(
                f"The service at {self.settings.url} answered HTTP {response.status_code} "
                "with something that is not its JSON: is this the ASR service's URL?",
                response.status_code,
            )
        return body

    def transcribe(
        self, audio: bytes, filename: str, response_format: str = "json"
    ) -> dict[str, Any] | str:
        """JSON formats give the parsed body; text, srt and vtt the text itself."""
        response = self._request(
            "POST",
            "/transcribe",
            files={"file": (filename, audio, "application/octet-stream")},
            data={"response_format": response_format},
            timeout=self.settings.timeout_s,
        )
        if response.status_code != httpx.codes.OK:
            raise error_from_response(response)
        if response_format in ("text", "srt", "vtt"):
            return response.text
        body = self._json(response)
        if "text" not in body:
            raise ServiceError("The service's answer has no transcript text.", response.status_code)
        return body

    def health(self) -> dict[str, Any]:
        """The health body for 200 and 503 alike: 503 is an answer (a stage is down)."""
        response = self._request("GET", "/health", timeout=STATUS_TIMEOUT_S)
        if response.status_code not in (httpx.codes.OK, httpx.codes.SERVICE_UNAVAILABLE):
            raise error_from_response(response)
        try:
            return self._json(response)
        except ServiceError:
            # Serve's proxy answers 503 in plain text while the app is starting or gone.
            raise error_from_response(response) from None

    def models(self) -> list[dict[str, Any]]:
        response = self._request("GET", "/models", timeout=STATUS_TIMEOUT_S)
        if response.status_code != httpx.codes.OK:
            raise error_from_response(response)
        data = self._json(response).get("data")
        return [m for m in data if isinstance(m, dict)] if isinstance(data, list) else []

    def info(self) -> dict[str, Any]:
        response = self._request("GET", "/", timeout=STATUS_TIMEOUT_S)
        if response.status_code != httpx.codes.OK:
            raise error_from_response(response)
        return self._json(response)
