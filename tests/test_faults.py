"""Faults in the engines: a turn that fails ends with an `error` event and a spoken apology, the
session goes on, other sessions are untouched; a hung call is cut by the executor's timeout; a
full executor answers `busy`."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator, Sequence

import numpy as np

from tests.fakes import FakeASR, FakeLLM, FakeTTS
from tests.servers import MakeServer, make_settings, ws_url
from tests.speech import speech_16k
from voice_agent.audio.vad import vad_factory
from voice_agent.backbone.base import GenerationParams
from voice_agent.backbone.stages import ASRStage
from voice_agent.bench.caller import PcmCaller
from voice_agent.engines import Engines
from voice_agent.executor import EngineExecutor
from voice_agent.frames import InputAudioFrame, UserStartedSpeakingFrame, UserStoppedSpeakingFrame
from voice_agent.modelfiles import ModelStore
from voice_agent.persona import Persona
from voice_agent.pipeline import Pipeline

QUESTION = "What is the capital of France?"
APOLOGY = Persona.model_fields["apology"].default


class HangingLLM(FakeLLM):
    """Its first reply hangs before the first word until `release` is set (or 60 s: longer
    than any test waits)."""

    def __init__(self) -> None:
        super().__init__(["Paris is the capital."], repeat_last=True)
        self.release = threading.Event()
        self.hung = threading.Event()
        self.calls = 0

    def stream(self, messages: Sequence[dict[str, str]], params: GenerationParams) -> Iterator[str]:
        self.calls += 1
        if self.calls == 1:
            return self._hang()
        return super().stream(messages, params)

    def _hang(self) -> Iterator[str]:
        self.hung.set()
        self.release.wait(60)
        yield "Too late."


def engines(store: ModelStore, llm: FakeLLM, executor: EngineExecutor) -> Engines:
    return Engines(
        asr=FakeASR(["what is the capital of france"] * 20),
        llm=llm,
        tts={"piper": FakeTTS()},
        executor=executor,
        vad=vad_factory(make_settings().vad, store),
    )


async def ask(caller: PcmCaller) -> None:
    caller.say(speech_16k(QUESTION), 16000, "question")


def spoken(server_engines: Engines) -> list[str]:
    tts = server_engines.tts["piper"]
    assert isinstance(tts, FakeTTS)
    return tts.spoken


async def test_an_engine_that_fails_one_turn_apologizes_and_the_session_goes_on(
    make_server: MakeServer, store: ModelStore
) -> None:
    llm = FakeLLM([RuntimeError("the model fell over"), "Paris is the capital."], repeat_last=False)
    llm.replies.append("Paris is the capital.")  # for the bystander
    server = await make_server(engines(store, llm, EngineExecutor(workers=2)))
    url = ws_url(server, "")
    async with await PcmCaller.connect(url) as caller:
        await caller.greeted()
        greeted = len(caller.events)  # (the greeting is a reply too)
        await ask(caller)
        error = await caller.wait_for("error", within_s=15)
        assert error == {
            "type": "error",
            "code": "engine",
            "message": "RuntimeError: the model fell over",
            "fatal": False,
        }
        said = await caller.wait_for(
            "transcript",
            lambda e: e["role"] == "assistant" and e["final"],
            within_s=15,
            after=greeted,
        )
        assert said["text"] == APOLOGY  # spoken, so the person knows
        assert caller.audible_ms() >= 1000
        async with await PcmCaller.connect(url) as bystander:  # another session: untouched
            await bystander.greeted()
            greeted_too = len(bystander.events)
            await ask(bystander)
            other = await bystander.wait_for(
                "transcript",
                lambda e: e["role"] == "assistant" and e["final"],
                within_s=15,
                after=greeted_too,
            )
            assert other["text"] == "Paris is the capital."
        mark = len(caller.events)
        await ask(caller)  # the same session, next turn
        again = await caller.wait_for(
            "transcript",
            lambda e: e["role"] == "assistant" and e["final"],
            within_s=15,
            after=mark,
        )
        assert again["text"] == "Paris is the capital."
        assert not [e for e in caller.events if e["type"] == "error" and e["fatal"]]


async def test_a_hung_engine_call_is_cut_by_the_timeout(
    make_server: MakeServer, store: ModelStore
) -> None:
    llm = HangingLLM()
    executor = EngineExecutor(workers=2, call_timeout_s=0.5)
    server = await make_server(engines(store, llm, executor))
    try:
        async with await PcmCaller.connect(ws_url(server, "")) as caller:
            await caller.greeted()
            greeted = len(caller.events)
            await ask(caller)
            error = await caller.wait_for("error", within_s=15)
            assert error["code"] == "timeout" and not error["fatal"]
            assert "0.5 s" in error["message"]
            said = await caller.wait_for(  # while the call still hangs in its thread
                "transcript",
                lambda e: e["role"] == "assistant" and e["final"],
                within_s=8,
                after=greeted,
            )
            assert said["text"] == APOLOGY
            llm.release.set()  # (the hung thread finishes on its own)
            mark = len(caller.events)
            await ask(caller)
            again = await caller.wait_for(
                "transcript",
                lambda e: e["role"] == "assistant" and e["final"],
                within_s=15,
                after=mark,
            )
            assert again["text"] == "Paris is the capital."
    finally:
        llm.release.set()


async def test_a_full_executor_answers_busy(make_server: MakeServer, store: ModelStore) -> None:
    executor = EngineExecutor(workers=1, max_pending=2, call_timeout_s=30)
    llm = FakeLLM(["Paris is the capital."], repeat_last=True)
    server = await make_server(engines(store, llm, executor))
    stuck = threading.Event()
    held: list[asyncio.Future[bool]] = []
    try:
        async with await PcmCaller.connect(ws_url(server, "")) as caller:
            await caller.greeted()
            # two calls that hang take every place the executor has
            held += [asyncio.ensure_future(executor.run(stuck.wait, 20)) for _ in range(2)]
            await ask(caller)
            busy = await caller.wait_for("error", within_s=15)
            assert busy["code"] == "busy" and not busy["fatal"]
            assert busy["message"].startswith("the server is busy")
            stuck.set()
            await asyncio.gather(*held)
            await asyncio.sleep(1.0)  # the turn that found it busy is over
            mark = len(caller.events)
            await ask(caller)  # room again: served
            reply = await caller.wait_for(
                "transcript",
                lambda e: e["role"] == "assistant" and e["final"],
                within_s=20,
                after=mark,
            )
            assert reply["text"] == "Paris is the capital."
    finally:
        stuck.set()
        await asyncio.gather(*held, return_exceptions=True)


async def test_an_endless_stretch_of_speech_is_transcribed_up_to_the_cap() -> None:
    asr = FakeASR(["x"])
    executor = EngineExecutor(workers=1)
    stage = ASRStage(asr, executor, max_stretch_ms=1000)
    events: list[str] = []
    pipeline = Pipeline([stage], events=lambda event: events.append(event.type))
    await pipeline.start()
    try:
        pipeline.queue(UserStartedSpeakingFrame())
        for _ in range(150):  # 3 s
            pipeline.queue(InputAudioFrame(pcm=np.zeros(320, np.int16), sample_rate=16000))
        pipeline.queue(UserStoppedSpeakingFrame())
        for _ in range(100):
            if asr.utterances:
                break
            await asyncio.sleep(0.02)
    finally:
        await pipeline.stop()
        executor.shutdown()
    assert asr.utterances == [16000]  # 1 s of the 3
    assert events.count("asr_stretch_capped") == 1
