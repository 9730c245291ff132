"""The browser page against the real server, in headless chromium.

The server runs as `voice-agent serve` in a subprocess with its embedded models; Debian's
chromium (never a Playwright download) plays a WAV of a spoken question as its fake microphone,
in a loop. The page's own record, `window.voiceAgent`, says what it received and heard.
Without /usr/bin/chromium these tests skip on a workstation and fail in CI.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from playwright.sync_api import Browser, Page, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from tests.servers import console_script, free_port
from tests.speech import silence_16k, speech_16k
from voice_agent.audio.pcm import resample

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
QUESTION = "What is the capital of France?"
QUESTION_WORDS = {"capital", "france"}
MIC_RATE = 48000
SERVER_START_S = 180
TURN_TIMEOUT_MS = 60_000
HEARD_MS = 300
SCREENSHOT = Path("/tmp/voice-agent-page.png")
TOKEN = "s3cret-t0ken"
"""The server runs with a token, so every test also checks that the page passes `?token=` on."""

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
]


def _tail(path: Path, chars: int = 4000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"


@pytest.fixture(scope="module")
def chromium() -> Path:
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is missing (apt-get install chromium): the browser tests need it"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return CHROMIUM


@contextlib.contextmanager
def _serve(workdir: Path, *args: str) -> Iterator[tuple[str, Path]]:
    """`voice-agent serve` on a free loopback port: its base URL and its log file."""
    exe_path = console_script()
    log = workdir / "server.log"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [exe_path, "serve", "--host", "127.0.0.1", "--port", str(port), *args],
            cwd=workdir,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + SERVER_START_S
        with httpx.Client(trust_env=False, timeout=2) as http:
            while True:
                if proc.poll() is not None:
                    pytest.fail(f"the server exited with {proc.returncode}:\n{_tail(log)}")
                try:
                    if http.get(f"{url}/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(f"no /healthz after {SERVER_START_S} s:\n{_tail(log)}")
                time.sleep(0.5)
        yield url, log
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def server(chromium: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    with _serve(tmp_path_factory.mktemp("server"), "--set", f"server.token={TOKEN}") as running:
        yield running


@pytest.fixture(scope="module")
def mic_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The question, then 3 s of silence, as 16-bit mono at 48 kHz (chromium loops it)."""
    pcm = np.concatenate([speech_16k(QUESTION), silence_16k(3.0)])
    path = tmp_path_factory.mktemp("mic") / "question.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(MIC_RATE)
        w.writeframes(resample(pcm, 16000, MIC_RATE).tobytes())
    return path


@pytest.fixture(scope="module")
def browser(chromium: Path, mic_wav: Path) -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=str(chromium),
            args=[*CHROMIUM_ARGS, f"--use-file-for-fake-audio-capture={mic_wav}"],
        )
        try:
            yield b
        finally:
            b.close()


@contextlib.contextmanager
def _open(browser: Browser, url: str) -> Iterator[Page]:
    """The page at `url`, its personas loaded; fails on any uncaught error in the page."""
    context = browser.new_context(viewport={"width": 900, "height": 1100})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        pg.goto(url)
        pg.wait_for_function("document.querySelector('#persona option[value]:not([value=\"\"])')")
        yield pg
    finally:
        context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


@pytest.fixture
def page(browser: Browser, server: tuple[str, Path]) -> Iterator[Page]:
    with _open(browser, f"{server[0]}/?token={TOKEN}") as pg:
        yield pg


def _events(page: Page) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = page.evaluate("window.voiceAgent.events")
    return events


def _wait(page: Page, predicate: str, what: str, server_log: Path, timeout_ms: int) -> None:
    try:
        page.wait_for_function(predicate, timeout=timeout_ms, polling=100)
    except PlaywrightTimeout:
        record = page.evaluate(
            "({state: voiceAgent.state, phase: voiceAgent.phase, errors: voiceAgent.errors,"
            " remoteAudibleMs: voiceAgent.remoteAudibleMs,"
            " remoteLevelMax: String(voiceAgent.remoteLevelMax)})"
        )
        events = json.dumps(_events(page)[-40:], indent=None)[-6000:]
        pytest.fail(
            f"{what} within {timeout_ms / 1000:.0f} s. Page: {record}\n"
            f"events: {events}\nserver log:\n{_tail(server_log)}"
        )


HEARD_THE_QUESTION = """() => {
  const ev = window.voiceAgent.events;
  const userFinal = ev.some((e) => e.type === "transcript" && e.role === "user" && e.final
    && /capital|france/i.test(e.text));
  return ev.some((e) => e.type === "session") && userFinal
    && ev.some((e) => e.type === "turn_metrics")
    && ev.some((e) => e.type === "transcript" && e.role === "assistant" && e.text.trim());
}"""


def test_a_spoken_question_gets_a_spoken_answer_in_the_browser(
    page: Page, server: tuple[str, Path]
) -> None:
    url, log = server
    started = time.monotonic()
    page.click("#talk")
    _wait(page, HEARD_THE_QUESTION, "no answer to the spoken question", log, TURN_TIMEOUT_MS)
    answered_s = time.monotonic() - started
    # turn_metrics comes when the reply starts playing: its audio must now reach the page.
    heard_before = page.evaluate("window.voiceAgent.remoteAudibleMs")
    _wait(
        page,
        f"window.voiceAgent.remoteAudibleMs > {heard_before + HEARD_MS}",
        f"the page did not hear {HEARD_MS} ms of the reply",
        log,
        TURN_TIMEOUT_MS,
    )
    page.screenshot(path=str(SCREENSHOT), full_page=True)

    events = _events(page)
    types = [e["type"] for e in events]
    assert types[0] == "answer", types[:5]
    assert types[1] == "session", types[:5]
    finals = [e for e in events if e["type"] == "transcript" and e["role"] == "user" and e["final"]]
    words = {w.strip(".,?!").lower() for e in finals for w in e["text"].split()}
    assert QUESTION_WORDS & words, finals
    metrics = next(e for e in events if e["type"] == "turn_metrics")
    walk = [(e["type"], e.get("turn"), e.get("state")) for e in events]
    assert isinstance(metrics["voice_to_voice_ms"], int | float), (metrics, walk)
    assert 0 < metrics["voice_to_voice_ms"] < TURN_TIMEOUT_MS, metrics
    level = page.evaluate("window.voiceAgent.remoteLevelMax")
    assert level > -40, level
    assert not [e for e in events if e["type"] == "error"], events

    # What a person sees: the question in the transcript, an answer, the turn's latency.
    user_text = " ".join(page.locator(".msg.user").all_inner_texts()).lower()
    assert "capital" in user_text or "france" in user_text, user_text
    assert page.locator(".msg.assistant").count() >= 1
    assert page.inner_text("#v2v").endswith(" ms")
    assert page.inner_text("#state") in {"Listening", "You are speaking", "Thinking…", "Speaking"}
    assert page.is_disabled("#persona")
    page.click("#mute")
    assert page.evaluate("window.voiceAgent.muted") is True
    assert page.inner_text("#mute") == "Unmute"
    page.click("#mute")
    assert page.evaluate("window.voiceAgent.muted") is False

    # Stop: the page says bye and the server ends the session.
    page.click("#talk")
    assert page.evaluate("window.voiceAgent.phase") == "idle"
    assert page.inner_text("#talk") == "Talk"
    deadline = time.monotonic() + 15
    with httpx.Client(trust_env=False, timeout=2) as http:
        while (sessions := http.get(f"{url}/healthz").json()["sessions"]) and (
            time.monotonic() < deadline
        ):
            time.sleep(0.2)
    assert sessions == 0, "the session outlived the page's bye"
    print(f"answered in {answered_s:.1f} s; voice to voice {metrics['voice_to_voice_ms']} ms")


def test_the_persona_picker_lists_the_servers_personas(
    page: Page, server: tuple[str, Path]
) -> None:
    with httpx.Client(trust_env=False, timeout=5) as http:
        personas = http.get(f"{server[0]}/personas", params={"token": TOKEN}).json()
    assert personas, "the server lists no persona"
    options = page.eval_on_selector_all(
        "#persona option", "els => els.map((o) => [o.value, o.textContent, o.selected])"
    )
    assert [o[0] for o in options] == [p["id"] for p in personas]
    assert [o[1] for o in options] == [p["name"] for p in personas]
    default = [p["id"] for p in personas if p["default"]]
    assert [o[0] for o in options if o[2]] == default
    assert page.is_enabled("#persona")


def test_an_error_event_is_shown_and_ends_the_talk(page: Page, server: tuple[str, Path]) -> None:
    # A persona the server does not know: it answers with a fatal `unknown_persona` error.
    page.evaluate(
        """() => {
          const sel = document.querySelector("#persona");
          sel.append(new Option("Nobody", "no-such-persona", false, true));
        }"""
    )
    page.click("#talk")
    _wait(
        page,
        "document.querySelector('#errors .error')",
        "no error shown for an unknown persona",
        server[1],
        15_000,
    )
    error = next(e for e in _events(page) if e["type"] == "error")
    assert error["code"] == "unknown_persona", error
    shown = page.inner_text("#errors")
    assert error["message"] in shown and "unknown_persona" in shown, shown
    page.wait_for_function("window.voiceAgent.phase === 'idle'", timeout=5000)
    assert page.inner_text("#talk") == "Talk"


def test_without_its_token_the_page_says_why(browser: Browser, server: tuple[str, Path]) -> None:
    url = server[0]
    with httpx.Client(trust_env=False, timeout=5) as http:
        assert http.get(f"{url}/personas").status_code == 401
    context = browser.new_context()
    try:
        pg = context.new_page()
        pg.goto(f"{url}/")
        pg.wait_for_selector("#errors .error", timeout=10_000)
        assert "HTTP 401" in pg.inner_text("#errors")
    finally:
        context.close()
