"""End to end: the real Streamlit server, pointed at the real Serve graph (`serve_url`), driven
by headless Debian chromium through chromedriver (Debian packages, no browser download).

A clip is uploaded through the page's file input, Transcribe is clicked, and the transcript
that appears must be what the service itself answers for that clip. The screenshot lands in
tests/artifacts/ (git-ignored); docs/ui-screenshot.png is a copy of one such run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import API_KEY, AUTH, free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent
CLIP = REPO / "tests" / "data" / "clips" / "north_16k.wav"
ARTIFACTS = REPO / "tests" / "artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
STARTUP_TIMEOUT_S = 60
PAGE_TIMEOUT_S = 60
TRANSCRIBE_TIMEOUT_S = 180  # the real graph on a shared 2-core machine
WINDOW = (1400, 2000)  # tall enough that transcript, waveform and words fit in one shot


def streamlit_command(port: int) -> list[str]:
    """What `make ui` runs, on a free port, with no file watcher and no usage stats."""
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(REPO / "ui" / "app.py"),
        "--server.address=127.0.0.1",
        f"--server.port={port}",
        "--server.headless=true",
        "--server.fileWatcherType=none",
        "--server.runOnSave=false",
        "--browser.gatherUsageStats=false",
        "--global.developmentMode=false",
        "--client.toolbarMode=viewer",  # no "Deploy" button
    ]


@pytest.fixture(scope="module")
def ui_url(serve_url, tmp_path_factory) -> Iterator[str]:
    port = free_port()
    home = tmp_path_factory.mktemp("streamlit-home")  # ~/.streamlit stays untouched
    env = {
        **os.environ,
        "HOME": str(home),
        "ASR_URL": serve_url,
        "ASR_API_KEY": API_KEY,
        "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false",
    }
    log = (home / "streamlit.log").open("wb")
    process = subprocess.Popen(
        streamlit_command(port),
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, stopped by that id below
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process, home / "streamlit.log")
        yield url
    finally:
        stop(process)
        log.close()


def wait_healthy(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"streamlit exited with {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{url}/_stcore/health", timeout=2).text == "ok":
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    pytest.fail(f"streamlit not healthy after {STARTUP_TIMEOUT_S} s:\n{log.read_text()}")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail("needs Debian's chromium and chromium-driver: run `make system-deps`")
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",  # tests run as root in CI containers
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--no-first-run",
        "--no-proxy-server",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):
        options.add_argument(arg)
    service = Service(executable_path=str(CHROMEDRIVER))
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(PAGE_TIMEOUT_S)
    try:
        yield driver
    finally:
        driver.quit()


def test_upload_a_clip_and_read_the_transcript(ui_url, serve_url, browser):
    from selenium.webdriver.common.by import By

    with CLIP.open("rb") as f:
        response = httpx.post(
            f"{serve_url}/transcribe", files={"file": (CLIP.name, f)}, headers=AUTH, timeout=120
        )
    assert response.status_code == 200, response.text
    expected = response.json()
    assert expected["text"], "the clip should give some words"

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "ui-e2e.png"
    shot.unlink(missing_ok=True)
    try:
        upload_and_wait_for_transcript(browser, ui_url)
    finally:  # on failure too: the picture says what the page showed
        assert browser.save_screenshot(str(shot))
    transcript = browser.find_element(By.CSS_SELECTOR, ".st-key-transcript").text.strip()
    assert transcript == expected["text"]
    page = browser.find_element(By.TAG_NAME, "body").text
    assert f"Transcript · {CLIP.name}" in page
    assert f"{expected['duration']:.2f} s" in page
    first = expected["words"][0]
    assert f"] {first['word']}" in page  # the words with their time marks
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000


def upload_and_wait_for_transcript(browser, ui_url: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(ui_url)
    wait = WebDriverWait(browser, PAGE_TIMEOUT_S)
    status = (By.CSS_SELECTOR, ".st-key-service_status")
    wait.until(lambda d: "Healthy" in d.find_element(*status).text)
    file_input = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "input[type=file]")))
    file_input.send_keys(str(CLIP))
    button = (By.CSS_SELECTOR, ".st-key-transcribe_upload button")
    wait.until(lambda d: d.find_element(*button).is_enabled())
    browser.find_element(*button).click()
    transcript = (By.CSS_SELECTOR, ".st-key-transcript")
    WebDriverWait(browser, TRANSCRIBE_TIMEOUT_S).until(
        lambda d: d.find_elements(*transcript) and d.find_element(*transcript).text.strip()
    )
    # vega draws the waveform in the browser (SVG): wait for it before the screenshot.
    chart = (By.CSS_SELECTOR, "[data-testid=stVegaLiteChart] svg.marks")
    wait.until(ec.presence_of_element_located(chart))
