"""Streamlit front end of the ASR service: upload or record, read the transcript with word
times, download it, and see whether the service is healthy.

It talks to the ingress over HTTP only (`ui/client.py`); everything that is not layout lives
in small modules next to it, none of which imports the service's package. Run it with
`make ui`, or from the repository root (`python -m` puts the working directory on sys.path,
so `ui.*` imports):

    ASR_URL=http://127.0.0.1:8000 python -m streamlit run ui/app.py --server.address 127.0.0.1

Environment: ASR_URL, ASR_API_KEY, ASR_TIMEOUT_S, ASR_RAY_DASHBOARD_URL, ASR_GRAFANA_URL
(all can be changed in the sidebar too).
"""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any

import streamlit as st

from ui import waveform
from ui.client import (
    AsrClient,
    ServiceError,
    Settings,
    normalize_url,
)
from ui.results import (
    History,
    Result,
    downloads,
    format_rtf,
    format_seconds,
    timed_lines,
    word_rows,
)

TITLE = "Vietnamese speech to text"
ACCEPTED_TYPES = ["wav", "mp3", "flac", "ogg", "m4a"]
RECORD_SAMPLE_RATE = 16000  # what the model hears anyway: smaller uploads
ENV_DASHBOARD = "ASR_RAY_DASHBOARD_URL"
ENV_GRAFANA = "ASR_GRAFANA_URL"
BYTES_PER_MIB = 1024 * 1024


def state() -> Any:
    return st.session_state


def init_state() -> None:
    defaults = Settings.from_env()
    state().setdefault("url", defaults.url)
    state().setdefault("api_key", defaults.api_key or "")
    state().setdefault("timeout_s", defaults.timeout_s)
    state().setdefault("dashboard_url", os.environ.get(ENV_DASHBOARD, ""))
    state().setdefault("grafana_url", os.environ.get(ENV_GRAFANA, ""))
    state().setdefault("history", History())
    state().setdefault("current", None)  # (Result, audio bytes or None)
    state().setdefault("error", None)  # the last transcription error, for a person
    state().setdefault("status", None)  # (settings it was fetched with, what came back)


# ---------------------------------------------------------------------------------------
# Sidebar: connection settings and the service's status


def sidebar_settings() -> Settings:
    st.sidebar.header("Service")
    st.sidebar.text_input("Service URL", key="url", help="The ingress, e.g. http://127.0.0.1:8000")
    st.sidebar.text_input(
        "API key", key="api_key", type="password", help="Needed when the service sets ASR_API_KEY"
    )
    with st.sidebar.expander("Monitoring links"):
        st.text_input("Ray dashboard URL", key="dashboard_url")
        st.text_input("Grafana URL", key="grafana_url")
    return Settings(
        url=normalize_url(state().url) or Settings().url,
        api_key=state().api_key.strip() or None,
        timeout_s=state().timeout_s,
    )


def fetch_status(client: AsrClient) -> dict[str, Any]:
    """Health, models and service info; one unreachable service is one message."""
    status: dict[str, Any] = {}
    try:
        status["health"] = client.health()
    except ServiceError as exc:
        return {"error": exc.message}
    for name, call in (("models", client.models), ("info", client.info)):
        try:
            status[name] = call()
        except ServiceError as exc:
            status[f"{name}_error"] = exc.message
    return status


def status_panel(client: AsrClient, settings: Settings) -> None:
    st.sidebar.header("Status")
    refresh = st.sidebar.button("Refresh status", key="refresh_status")
    cached = state().status
    if refresh or cached is None or cached[0] != settings:
        with st.sidebar, st.spinner("Asking the service…"):
            state().status = (settings, fetch_status(client))
    status = state().status[1]
    with st.sidebar.container(key="service_status"):
        show_status(status)
    links = [("Ray dashboard", state().dashboard_url), ("Grafana", state().grafana_url)]
    for label, url in links:
        if url.strip():
            st.sidebar.link_button(label, normalize_url(url))


def show_status(status: dict[str, Any]) -> None:
    if "error" in status:
        st.error(status["error"])
        return
    health = status["health"]
    stages = health.get("stages") or {}
    if health.get("status") == "ok":
        st.success(f"Healthy: all {len(stages)} stages answer")
    else:
        failing = ", ".join(f"{k}: {v}" for k, v in stages.items() if v != "ok") or "no stages"
        st.error(f"Unavailable: {failing}")
    if stages:
        st.dataframe(
            [{"stage": k, "status": v} for k, v in stages.items()],
            hide_index=True,
            width="stretch",
        )
    for model in status.get("models") or []:
        st.markdown(
            f"**Model** `{model.get('id', '?')}` · {model.get('precision', '?')} · "
            f"language `{model.get('language', '?')}`"
        )
    if "models_error" in status:
        st.warning(status["models_error"])
    info = status.get("info") or {}
    limits = info.get("limits") or {}
    if info:
        max_mib = (limits.get("max_upload_bytes") or 0) / BYTES_PER_MIB
        st.caption(
            f"{info.get('service', 'service')} {info.get('version', '')} · auth: "
            f"{info.get('auth', '?')} · max upload {max_mib:.0f} MiB · max "
            f"{limits.get('max_duration_s', '?')} s of audio"
        )
    if "info_error" in status:
        st.warning(status["info_error"])


# ---------------------------------------------------------------------------------------
# Input: upload or record, then transcribe


def audio_inputs() -> tuple[bytes, str] | None:
    """The audio whose Transcribe button was pressed in this run, with its name."""
    upload_tab, record_tab = st.tabs(["Upload a file", "Record"])
    with upload_tab:
        uploaded = st.file_uploader(
            "Audio file (wav, mp3, flac, ogg, m4a)", type=ACCEPTED_TYPES, key="upload"
        )
        if uploaded is not None:
            st.audio(uploaded.getvalue(), format=uploaded.type or "audio/wav")
        send_upload = st.button(
            "Transcribe file", key="transcribe_upload", disabled=uploaded is None
        )
    with record_tab:
        recording = st.audio_input(
            "Record from the microphone", key="record", sample_rate=RECORD_SAMPLE_RATE
        )
        if recording is not None:
            st.audio(recording.getvalue(), format="audio/wav")
        send_recording = st.button(
            "Transcribe recording", key="transcribe_record", disabled=recording is None
        )
    if send_upload and uploaded is not None:
        return uploaded.getvalue(), uploaded.name
    if send_recording and recording is not None:
        return recording.getvalue(), f"recording-{datetime.now():%H%M%S}.wav"
    return None


def transcribe(client: AsrClient, audio: bytes, name: str) -> None:
    with st.spinner(f"Transcribing {name}…"):
        try:
            body = client.transcribe(audio, name)
        except ServiceError as exc:
            state().error = exc.message
            return
    result = Result(name, body)
    state().error = None
    state().current = (result, audio)
    state().history.add(result)


# ---------------------------------------------------------------------------------------
# Output: the current result, and the history


def download_buttons(result: Result, prefix: str) -> None:
    files = downloads(result)
    for column, file in zip(st.columns(len(files)), files, strict=True):
        column.download_button(
            f"Download .{file.file_name.rsplit('.', 1)[-1]}",
            data=file.data,
            file_name=file.file_name,
            mime=file.mime,
            key=f"{prefix}_{file.file_name.rsplit('.', 1)[-1]}",
            on_click="ignore",
        )


def show_result(result: Result, audio: bytes | None) -> None:
    st.subheader(f"Transcript · {result.source}")
    duration, processing, rtf, words = st.columns(4)
    duration.metric("Duration", format_seconds(result.duration))
    processing.metric("Processing time", format_seconds(result.processing_time))
    rtf.metric(
        "Real-time factor",
        format_rtf(result.real_time_factor),
        help="Processing time divided by the audio's duration: below 1 is faster than real time",
    )
    words.metric("Words", len(result.words))
    with st.container(key="transcript"):
        if result.text.strip():
            st.markdown(f"### {escape_markdown(result.text)}")
        else:
            st.info("No speech recognised (silence or noise).")
    if result.words:
        st.markdown("**Text with time marks**")
        st.code("\n".join(timed_lines(result)), language=None, wrap_lines=True)
    env = waveform.envelope_of(audio) if audio else None
    if env is not None:
        st.markdown("**Waveform and word boundaries**")
        st.altair_chart(waveform.chart(env, result.words), width="stretch")
    elif audio:
        st.caption("No waveform: this format cannot be decoded here (the service could).")
    if result.words:
        st.markdown("**Words**")
        st.dataframe(word_rows(result), hide_index=True, width="stretch")
    download_buttons(result, "dl_current")


def escape_markdown(text: str) -> str:
    for char in "\\`*_{}[]()#+-.!|<>~":
        text = text.replace(char, "\\" + char)
    return text


def history_section() -> None:
    history: History = state().history
    st.subheader(f"History ({len(history)})")
    if not history:
        st.caption("Results of this session appear here.")
        return
    st.dataframe(history.rows(), hide_index=True, width="stretch", key="history_table")
    labels = history.labels()
    choice = st.selectbox(
        "Result", range(len(labels)), format_func=labels.__getitem__, key="history_choice"
    )
    chosen = history.entries[min(choice or 0, len(history) - 1)][1]
    download_buttons(chosen, "dl_history")
    show, clear = st.columns(2)
    if show.button("Show this result", key="history_show"):
        current = state().current
        audio = current[1] if current and current[0] is chosen else None
        state().current = (chosen, audio)
        st.rerun()
    if clear.button("Clear history", key="history_clear"):
        history.clear()
        st.rerun()


def main() -> None:
    st.set_page_config(page_title=TITLE, page_icon="🎙️", layout="wide")
    init_state()
    settings = sidebar_settings()
    with AsrClient(settings) as client:
        status_panel(client, settings)
        st.title(TITLE)
        st.caption(f"Service: {settings.url}")
        # Live captions stream over a WebSocket, which Streamlit cannot hold: the service's
        # own page does it (GET /live).
        st.link_button("Live transcription from the microphone", f"{settings.url}/live")
        chosen = audio_inputs()
        if chosen is not None:
            transcribe(client, *chosen)
    if state().error:
        st.error(state().error)
    if state().current is not None:
        show_result(*state().current)
    st.divider()
    history_section()


try:
    main()
except Exception as exc:  # a bug here must still read as a message, not a traceback
    st.error(f"The UI hit an unexpected problem: {type(exc).__name__}: {exc}")
