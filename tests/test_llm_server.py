"""The default LLM engine: llama.cpp's server (xllamacpp) in a supervised child process. Real
server, real model (SmolLM2, the small one); the child is killed for real."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import urllib.request
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import httpx
import pytest

from tests.fakes import FakeASR, FakeTTS
from tests.servers import MakeServer, console_script, free_port, make_settings, ws_url
from tests.speech import speech_16k
from voice_agent.audio.vad import vad_factory
from voice_agent.backbone.base import GenerationParams
from voice_agent.backbone.llm_llama_server import LlamaServerLLM, SlotMap
from voice_agent.bench.caller import PcmCaller
from voice_agent.engines import Engines
from voice_agent.executor import EngineExecutor
from voice_agent.modelfiles import ModelStore
from voice_agent.persona import Persona

APOLOGY = Persona.model_fields["apology"].default
HEAD = [{"role": "system", "content": "You are a friendly concierge. Answer in one sentence."}]


def ask(text: str) -> list[dict[str, str]]:
    return [*HEAD, {"role": "user", "content": text}]


def test_a_conversation_keeps_its_slot_and_the_least_recent_one_gives_its_slot_up() -> None:
    slots = SlotMap(2)
    assert [slots.slot("a"), slots.slot("b"), slots.slot("a")] == [0, 1, 0]
    assert slots.slot("c") == 1  # b was heard from least recently
    assert slots.slot(None) is None
    slots.release("a")
    assert slots.slot("d") == 0


@pytest.fixture(scope="module")
def served(store: ModelStore, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServerLLM]:
    llm = LlamaServerLLM(
        store.path("smollm2-135m"),
        slots=4,
        context_tokens=1024,
        threads=2,
        log_path=tmp_path_factory.mktemp("llm") / "server.log",
        restart_wait_s=60,
    )
    yield llm
    llm.close()


def _timings(
    llm: LlamaServerLLM, messages: list[dict[str, str]], conversation: str
) -> dict[str, int]:
    """llama.cpp's own account of one (whole) reply: how much of the prompt came from the
    slot's cache (`cache_n`) and how much was evaluated (`prompt_n`)."""
    client = llm._client()
    body = llm._body(client, messages, GenerationParams(max_tokens=4, conversation=conversation))
    body["stream"] = False
    r = httpx.post(client.url, json=body, headers={"Authorization": f"Bearer {llm.server.key}"})
    r.raise_for_status()
    timings: dict[str, int] = r.json()["timings"]
    return timings


@pytest.mark.slow
def test_a_conversation_evaluates_only_its_new_words_in_its_own_slot(
    served: LlamaServerLLM,
) -> None:
    assert served.prefill(HEAD, GenerationParams(conversation="alice")).wait(60)
    first = _timings(served, ask("Where is the station?"), "alice")
    assert first["cache_n"] >= 10  # the persona's head was already there
    _timings(served, ask("Tell me a joke about trains."), "bob")  # another slot
    again = _timings(served, ask("Where is the station?"), "alice")
    assert again["prompt_n"] <= 2 and again["cache_n"] >= first["cache_n"]


@pytest.mark.slow
async def test_replies_of_several_conversations_stream_together_and_one_can_stop(
    served: LlamaServerLLM,
) -> None:
    async def reply(conversation: str, stop_early: bool) -> str:
        text = ""
        params = GenerationParams(max_tokens=40, temperature=0, conversation=conversation)
        async for piece in served.astream(ask("Describe the city in two sentences."), params):
            text += piece
            if stop_early:
                break  # closes the response: the server stops this one
        return text

    cut, *whole = await asyncio.gather(reply("c1", True), reply("c2", False), reply("c3", False))
    assert cut and all(len(t) > len(cut) for t in whole)
    sync = "".join(served.stream(ask("Say hello."), GenerationParams(max_tokens=8)))
    assert sync.strip()


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSEGV])
async def test_a_runtime_killed_mid_reply_fails_that_reply_and_is_back_for_the_next(
    served: LlamaServerLLM, sig: signal.Signals
) -> None:
    before = served.health()["restarts"]
    pid = served.server.pid
    assert pid is not None
    params = GenerationParams(max_tokens=400, temperature=0.8, conversation="victim")
    got = ""
    with pytest.raises(RuntimeError, match="LLM server"):
        async for piece in served.astream(ask("Tell me a very long story."), params):
            if not got:
                os.kill(pid, sig)
            got += piece
    assert got  # it was mid-reply
    text = ""  # the next request waits for the new child and is answered
    async for piece in served.astream(ask("Say hello."), GenerationParams(max_tokens=8)):
        text += piece
    assert text.strip()
    health = served.health()
    assert health["state"] == "up" and health["restarts"] == before + 1
    assert health["last_exit"] == f"killed by {sig.name}"
    assert served.server.pid not in (None, pid)


class KilledMidReply:
    """The served engine, whose runtime is SIGKILLed when the next reply's first piece arrives:
    a reply is surely in flight then (a persona's short reply could end before a kill that waits
    for its first spoken words)."""

    def __init__(self, served: LlamaServerLLM) -> None:
        self.served = served
        self.armed = False

    def stream(self, messages: Sequence[dict[str, str]], params: GenerationParams) -> Iterator[str]:
        raise AssertionError("the session reads a served engine's async stream")

    async def astream(
        self, messages: Sequence[dict[str, str]], params: GenerationParams
    ) -> AsyncIterator[str]:
        async for piece in self.served.astream(messages, params):
            if self.armed:
                self.armed = False
                assert self.served.server.pid is not None
                os.kill(self.served.server.pid, signal.SIGKILL)
            yield piece

    def __getattr__(self, name: str) -> object:
        return getattr(self.served, name)


@pytest.mark.slow
async def test_a_session_whose_llm_crashes_hears_the_apology_and_goes_on(
    make_server: MakeServer, store: ModelStore, served: LlamaServerLLM
) -> None:
    settings = make_settings()
    llm = KilledMidReply(served)
    engines = Engines(
        asr=FakeASR(["tell me a long story about the sea"] * 20),
        llm=llm,
        tts={"piper": FakeTTS()},
        executor=EngineExecutor(workers=2),
        vad=vad_factory(settings.vad, store),
    )
    server = await make_server(engines)
    base = server.url
    async with await PcmCaller.connect(ws_url(server, "")) as caller:
        await caller.greeted()
        greeted = len(caller.events)  # (the greeting is a reply too)
        llm.armed = True
        caller.say(speech_16k("Tell me a long story about the sea."), 16000, "question")
        error = await caller.wait_for("error", within_s=30)
        assert error["code"] == "engine" and not error["fatal"]
        said = await caller.wait_for(
            "transcript",
            lambda e: e["role"] == "assistant" and e["final"],
            within_s=30,
            after=greeted,
        )
        assert said["text"].endswith(APOLOGY)

        def get(path: str) -> bytes:
            with urllib.request.urlopen(base + path, timeout=10) as r:
                body: bytes = r.read()
                return body

        health = json.loads(await asyncio.to_thread(get, "/healthz"))
        assert health["engines"]["llm"]["restarts"] >= 1
        metrics = (await asyncio.to_thread(get, "/metrics")).decode()
        assert "voice_agent_llm_server_restarts_total" in metrics
        async with await PcmCaller.connect(ws_url(server, "")) as newcomer:  # comes right after
            await newcomer.greeted()
            greeted_too = len(newcomer.events)
            newcomer.say(speech_16k("Tell me a long story about the sea."), 16000, "question")
            answer = await newcomer.wait_for(
                "transcript",
                lambda e: e["role"] == "assistant" and e["final"],
                within_s=60,
                after=greeted_too,
            )
            assert answer["text"].strip() and APOLOGY not in answer["text"]
        mark = len(caller.events)
        caller.say(speech_16k("Tell me a long story about the sea."), 16000, "again")
        again = await caller.wait_for(
            "transcript",
            lambda e: e["role"] == "assistant" and e["final"],
            within_s=60,
            after=mark,
        )
        assert again["text"].strip() and APOLOGY not in again["text"]
        assert not [e for e in caller.events if e["type"] == "error" and e["fatal"]]
        assert (
            json.loads(await asyncio.to_thread(get, "/healthz"))["engines"]["llm"]["state"] == "up"
        )


def test_a_model_the_server_cannot_load_is_said_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(RuntimeError, match=r"the LLM server did not start \(.*\): its log"):
        LlamaServerLLM(bad, log_path=tmp_path / "server.log")


@pytest.mark.slow
def test_the_server_child_stops_when_its_parent_goes(store: ModelStore, tmp_path: Path) -> None:
    """The child reads its stdin until the parent closes it (or dies): it never outlives us."""
    llm = LlamaServerLLM(store.path("smollm2-135m"), slots=1, log_path=tmp_path / "server.log")
    try:
        proc = llm.server._proc
        assert proc is not None and proc.stdin is not None
        proc.stdin.close()  # what the parent's death does to it
        assert proc.wait(30) == 0
    finally:
        llm.close()


@pytest.mark.slow
def test_llm_server_serves_session_servers_elsewhere_with_a_key(tmp_path: Path) -> None:
    """`voice-agent llm-server`: the same server alone, for `engines.llm.engine: openai`."""
    import subprocess
    import time

    from voice_agent.backbone.llm_openai import OpenAICompatibleLLM

    exe, port = console_script(), free_port()
    log = tmp_path / "llm-server.log"
    env = {**os.environ, "LLAMA_SERVER_API_KEY": "sesame"}
    cmd = [exe, "llm-server", "--port", str(port), "--slots", "2"]
    with log.open("w") as out:
        proc = subprocess.Popen(
            [*cmd, "--set", "engines.llm.model=smollm2-135m"], stderr=out, stdout=out, env=env
        )
    try:
        deadline = time.monotonic() + 60
        while "voice-agent llm-server: serving" not in log.read_text(errors="replace"):
            assert proc.poll() is None, log.read_text(errors="replace")[-2000:]
            assert time.monotonic() < deadline
            time.sleep(0.2)
        base = f"http://127.0.0.1:{port}/v1"
        llm = OpenAICompatibleLLM(base, "smollm2", api_key="sesame")
        assert "".join(llm.stream(ask("Say hello."), GenerationParams(max_tokens=8))).strip()
        stranger = OpenAICompatibleLLM(base, "smollm2")
        with pytest.raises(RuntimeError, match="HTTP 401"):
            "".join(stranger.stream(ask("Say hello."), GenerationParams(max_tokens=8)))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
