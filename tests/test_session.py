"""Timelines through a whole Session with fake engines: a turn, a barge-in, errors, endings."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import replace

import pytest

from tests.fakes import (
    MS_PER_WORD,
    RATE,
    FakeASR,
    FakeASRStream,
    FakeLLM,
    FakeTransport,
    FakeTTS,
    engines,
    persona,
    settings,
)
from voice_agent.backbone.base import GenerationParams
from voice_agent.backbone.stages import PersonaChangeFrame
from voice_agent.eventbus import Subscription
from voice_agent.frames import (
    HistoryAddFrame,
    HistoryRemoveFrame,
    HistoryTruncateFrame,
)
from voice_agent.session import Session
from voice_agent.turns.policy import TurnPolicyFrame

FRAME_MS = 20


async def next_event(events: Subscription, kind: str) -> dict[str, object]:
    async def find() -> dict[str, object]:
        async for e in events:
            if e.type == kind:
                return e.data
        raise AssertionError(f"session ended before a {kind!r} event")

    return await asyncio.wait_for(find(), 5.0)


def frames_for(words: int) -> int:
    return words * MS_PER_WORD // FRAME_MS


async def test_one_turn_is_heard_whole_and_cut_at_the_sentence_limit() -> None:
    asr = FakeASR(["what is the weather"])
    llm = FakeLLM(["It is sunny. It is warm. It may rain later."])
    transport = FakeTransport()
    async with Session(settings(), persona(max_sentences=2), transport, engines(asr, llm)) as s:
        events = s.events()
        transport.say(seconds=1.0)
        transcript = await next_event(events, "transcript")
        assert transcript == {"role": "user", "text": "what is the weather", "final": True}
        await next_event(events, "bot_started_speaking")
        await next_event(events, "bot_stopped_speaking")
        transport.hang_up()
        await asyncio.wait_for(s.run(), 5)

    assert asr.utterances == [16000]  # one second of audio reached the ASR
    # the third sentence was never generated into speech, nor kept
    assert [(m.role, m.content) for m in s.history.messages] == [
        ("user", "what is the weather"),
        ("assistant", "It is sunny. It is warm."),
    ]
    assert len(transport.sink.frames) == frames_for(6)  # 6 words, 100 ms each, 20 ms frames
    assert llm.prompts[0][0] == {"role": "system", "content": "Be brief."}
    assert llm.prompts[0][-1] == {"role": "user", "content": "what is the weather"}
    kinds = [e.type for e in transport.events]
    assert (
        kinds.index("transcript") < kinds.index("llm_first_token") < kinds.index("tts_first_chunk")
    )
    assert (
        kinds.index("tts_first_chunk")
        < kinds.index("bot_started_speaking")
        < kinds.index("bot_stopped_speaking")
    )
    assert kinds[-1] == "session_ended"
    assert transport.closed == 1


async def test_barge_in_mid_reply_keeps_only_the_words_that_were_played() -> None:
    asr = FakeASR(["tell me a story", "and then"])
    llm = FakeLLM(["Once there was a fox. It ran far away.", "It came back."])
    transport = FakeTransport()
    # first chunk "Once there was a fox." = 5 words = 25 frames; stop 10 frames (200 ms) into
    # "It ran far away." (4 words, 400 ms): half of it, so two of its words were heard.
    transport.sink.interrupt_after = 35
    async with Session(settings(), persona(), transport, engines(asr, llm)) as s:
        transport.sink.pipeline_queue = s.pipeline.queue
        events = s.events()
        transport.say()
        truncated = await next_event(events, "history_truncated")
        assert truncated.pop("id") == s.history.messages[-1].id  # the message it cut
        assert truncated == {"heard": "Once there was a fox. It ran", "played_ms": 700}
        assert len(transport.sink.frames) == 35  # nothing went out after the interruption
        assert transport.sink.cleared == 1  # what the device still held is dropped unheard

        transport.sink.interrupt_after = None
        transport.say()
        await next_event(events, "bot_stopped_speaking")
        transport.hang_up()
        await asyncio.wait_for(s.run(), 5)

    assert [(m.role, m.content, m.interrupted) for m in s.history.messages] == [
        ("user", "tell me a story", False),
        ("assistant", "Once there was a fox. It ran", True),
        ("user", "and then", False),
        ("assistant", "It came back.", False),
    ]
    # the second prompt carries the truncated reply, not what was generated
    assert {"role": "assistant", "content": "Once there was a fox. It ran"} in llm.prompts[1]
    assert len(transport.sink.frames) == 35 + frames_for(3)


async def test_barge_in_before_any_audio_cancels_generation_and_forgets_the_reply() -> None:
    asr = FakeASR(["first", "second"])
    llm = FakeLLM(["Sure thing.", "One two three four five six seven eight."])
    transport = FakeTransport()
    async with Session(settings(), persona(), transport, engines(asr, llm)) as s:
        events = s.events()
        transport.say()
        await next_event(events, "bot_stopped_speaking")
        llm.gate = threading.Event()  # the next reply produces its first word, then waits
        transport.say()
        await next_event(events, "llm_first_token")
        s.pipeline.interrupt("test")
        assert (await next_event(events, "playback_interrupted"))["heard"] == ""
        llm.gate.set()
        await next_event(events, "history_truncated")
        transport.hang_up()
        await asyncio.wait_for(s.run(), 5)

    for _ in range(500):  # the cut generator is closed in the pool once its last next() returns
        if llm.closed == 2:
            break
        await asyncio.sleep(0.01)
    assert llm.closed == 2
    assert [(m.role, m.content) for m in s.history.messages] == [
        ("user", "first"),
        ("assistant", "Sure thing."),
        ("user", "second"),
    ]


async def test_an_engine_error_ends_the_turn_with_an_error_event_and_the_session_goes_on() -> None:
    asr = FakeASR(["hello", "hello again"])
    llm = FakeLLM([RuntimeError("model fell over"), "Hi there."])
    transport = FakeTransport()
    async with Session(settings(), persona(), transport, engines(asr, llm)) as s:
        events = s.events()
        transport.say()
        error = await next_event(events, "error")
        assert error["source"] == "llm" and "model fell over" in str(error["message"])
        assert error["fatal"] is False
        transport.say()
        await next_event(events, "bot_stopped_speaking")
        transport.hang_up()
        await asyncio.wait_for(s.run(), 5)
    assert s.history.messages[-1].content == "Hi there."


async def test_a_session_leaves_no_task_behind_however_it_ends() -> None:
    before = asyncio.all_tasks()
    for ending in ("hang_up", "close", "exception"):
        asr, llm = FakeASR(["hi"]), FakeLLM(["One two three four five six seven eight nine ten."])
        transport = FakeTransport()
        with pytest.raises(KeyError) if ending == "exception" else _nothing():
            async with Session(settings(), persona(), transport, engines(asr, llm)) as s:
                events = s.events()
                transport.say()
                await next_event(events, "bot_started_speaking")
                if ending == "hang_up":
                    transport.hang_up()  # the reply in progress plays out, then run() returns
                    await asyncio.wait_for(s.run(), 5)
                    assert len(transport.sink.frames) == frames_for(10)
                elif ending == "close":
                    s.close()
                    await asyncio.wait_for(s.run(), 5)
                else:
                    raise KeyError("boom")
        assert transport.closed == 1
        assert s.pipeline.tasks == [] and s.tasks == frozenset()
    await asyncio.sleep(0)
    assert asyncio.all_tasks() == before


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


async def test_partials_arrive_while_the_user_speaks_then_the_final() -> None:
    asr, llm = FakeASR(["the final words"]), FakeLLM(["Ok."])
    transport = FakeTransport()
    s_ = settings().model_copy(
        update={
            "engines": settings().engines.model_copy(
                update={
                    "asr": settings().engines.asr.model_copy(update={"partial_interval_ms": 400})
                }
            )
        }
    )
    async with Session(s_, persona(), transport, engines(asr, llm)) as s:
        events = s.events()
        await transport.say_paced(seconds=1.3)
        await next_event(events, "bot_stopped_speaking")
        transport.hang_up()
        await asyncio.wait_for(s.run(), 5)
    said = [(e.data["text"], e.data["final"]) for e in transport.events if e.type == "transcript"]
    assert said[-1] == ("the final words", True)
    partials = [text for text, final in said if not final]
    # one partial per 400 ms of audio, each decoding what had arrived by then (or a bit more)
    assert 2 <= len(partials) <= 3  # at 400, 800, 1200 ms; the last may be stale under load
    assert all(p.startswith("heard ") for p in partials)
    assert [int(p.split()[1]) for p in partials] == sorted(int(p.split()[1]) for p in partials)


async def test_the_persona_prompt_is_prefilled_when_the_session_starts() -> None:
    class PrefillingLLM(FakeLLM):
        def __init__(self) -> None:
            super().__init__([])
            self.prefilled: list[tuple[list[dict[str, str]], str | None]] = []

        def prefill(self, messages: list[dict[str, str]], params: GenerationParams) -> None:
            self.prefilled.append((messages, params.conversation))

    llm = PrefillingLLM()
    async with Session(settings(), persona(), FakeTransport(), engines(FakeASR([]), llm)) as s:
        s.close()
        await s.run()
    assert llm.prefilled == [([{"role": "system", "content": "Be brief."}], s.name)]


async def test_a_stage_that_fails_to_start_leaves_nothing_running() -> None:
    class BrokenLLM(FakeLLM):
        def prefill(self, messages: list[dict[str, str]], params: GenerationParams) -> None:
            raise RuntimeError("no model")

    before = asyncio.all_tasks()
    transport = FakeTransport()
    with pytest.raises(RuntimeError, match="no model"):
        async with Session(settings(), persona(), transport, engines(FakeASR([]), BrokenLLM([]))):
            pass
    await asyncio.sleep(0)
    assert asyncio.all_tasks() == before and transport.closed == 1


async def test_the_asr_hears_the_audio_from_just_before_the_speech_start() -> None:
    asr, llm = FakeASR(["hello"]), FakeLLM(["Hi."])
    transport = FakeTransport()
    async with Session(settings(), persona(), transport, engines(asr, llm)) as s:
        events = s.events()
        transport.silence(1.0)  # then speech that the VAD confirms late
        transport.say(seconds=0.5)
        await next_event(events, "bot_stopped_speaking")
        transport.hang_up()
        await asyncio.wait_for(s.run(), 5)
    preroll = RATE * (settings().vad.start_ms + 200) // 1000
    assert asr.utterances == [preroll + RATE // 2]


async def test_a_failed_final_decode_still_closes_the_stretch_and_the_next_turn_is_answered() -> (
    None
):
    class FailingOnce(FakeASR):
        def stream(self) -> FakeASRStream:
            stream = FakeASRStream(self)
            if not self.utterances and not getattr(self, "failed", False):
                self.failed = True

                def boom() -> str:
                    raise RuntimeError("decoder fell over")

                stream.finalize = boom  # type: ignore[method-assign]
            return stream

    asr, llm = FailingOnce(["second try"]), FakeLLM(["Got it."])
    transport = FakeTransport()
    async with Session(settings(), persona(), transport, engines(asr, llm)) as s:
        events = s.events()
        transport.say()
        error = await next_event(events, "error")
        assert "decoder fell over" in error["message"] and not error["fatal"]
        transport.say()
        await next_event(events, "bot_stopped_speaking")
        transport.hang_up()
        await asyncio.wait_for(s.run(), 5)
    finals = [
        e.data["text"] for e in transport.events if e.type == "transcript" and e.data["final"]
    ]
    assert finals == ["", "second try"]
    assert [(m.role, m.content) for m in s.history.messages] == [
        ("user", "second try"),
        ("assistant", "Got it."),
    ]


async def test_a_clients_changes_are_applied_by_the_stages_that_keep_the_state() -> None:
    asr = FakeASR(["what is the weather"])
    llm = FakeLLM(["It is sunny."])
    first_voice, second_voice = FakeTTS(), FakeTTS()
    transport = FakeTransport()
    async with Session(settings(), persona(), transport, engines(asr, llm, first_voice)) as s:
        events = s.events()
        for edit in (
            HistoryAddFrame(role="user", text="first", message_id="m1"),
            HistoryAddFrame(role="assistant", text="cut", message_id="m0", after=""),
            HistoryAddFrame(role="user", text="placed", message_id="m2", after="m1"),
            HistoryAddFrame(role="user", text="last", message_id="m3", after="gone"),
            HistoryRemoveFrame(message_id="m2"),
            HistoryRemoveFrame(message_id="never"),  # nothing to do
            HistoryTruncateFrame(message_id="m0", heard=""),  # nothing heard: removed
        ):
            s.change(edit)
        terse = persona().model_copy(update={"system_prompt": "Be terse."})
        s.change(PersonaChangeFrame(persona=terse, tts=second_voice))
        policy = replace(s._turns.policy, barge_in=False)
        s.change(TurnPolicyFrame(policy=policy))
        transport.say()
        await next_event(events, "bot_stopped_speaking")
        transport.hang_up()
        await asyncio.wait_for(s.run(), 5)
    assert s._turns.policy is policy
    assert [(m.id, m.content) for m in s.history.messages[:2]] == [("m1", "first"), ("m3", "last")]
    assert llm.prompts[0][0] == {"role": "system", "content": "Be terse."}
    assert first_voice.spoken == [] and second_voice.spoken == ["It is sunny."]
