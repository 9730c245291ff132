"""Turn-taking on real audio, in real time: a scripted person talks into a simulated room.

Real VAD (WebRTC gate + Silero), real Smart Turn, real Whisper, real Piper for the assistant's
voice (so its echo sounds like speech); only the LLM is scripted, so the replies are known.
The person's speech is Piper too (tests/speech.py). Each case asserts the decisions (events),
what left the speaker, and the history.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import numpy as np
import pytest

from tests.fakes import FakeLLM, persona
from tests.speech import silence_16k, speech_16k
from tests.wer import wer
from voice_agent.audio.echo import EchoCanceller, EchoCancelStage
from voice_agent.audio.pcm import audible
from voice_agent.audio.smart_turn import SmartTurn, load_smart_turn
from voice_agent.audio.vad import vad_factory
from voice_agent.backbone.base import ASREngine, TTSEngine
from voice_agent.bench.room import Room
from voice_agent.config import Settings
from voice_agent.engines import Engines
from voice_agent.events import Event, event_type
from voice_agent.executor import EngineExecutor
from voice_agent.modelfiles import ModelStore
from voice_agent.persona import Persona
from voice_agent.pipeline import Stage
from voice_agent.session import Session

pytestmark = pytest.mark.slow

RATE = 16000
LONG_REPLY = (
    "Paris is lovely in the spring, with mild days and long light evenings. "
    "The chestnut trees along the boulevards flower in April. "
    "Most museums are open late on Wednesdays, which is a good time to visit."
)


SAID = [
    "What is the weather like in Paris tomorrow?",
    "My phone number is four one five",
    "two three nine, eight eight.",
    "Tell me about Paris.",
    "Wait, stop. What about London instead?",
    "Uh-huh.",
    "I would like to book a table.",
    "For two people at eight.",
]


@pytest.fixture(scope="module", autouse=True)
def _voice_the_script_beforehand() -> None:
    """Synthesize the person's lines now: done during a conversation, it would stall the event
    loop for a few hundred ms and the room's microphone with it."""
    for text in SAID:
        speech_16k(text)


@pytest.fixture(scope="module")
def smart_turn(store: ModelStore) -> SmartTurn:
    return load_smart_turn(store)


class Conversation:
    def __init__(self, room: Room, session: Session, llm: FakeLLM) -> None:
        self.room, self.session, self.llm = room, session, llm

    async def until(self, kind: str, after: int = 0, timeout_s: float = 20) -> tuple[int, Event]:
        """Until the session reports `kind` (at or after mic sample `after`)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while (hit := self.room.first_event(event_type(kind), after)) is None:
            if loop.time() > deadline:
                raise AssertionError(f"no {kind} within {timeout_s} s; saw {self.room.kinds()}")
            await self.room.wait_ms(20)
        return hit

    def count(self, kind: str) -> int:
        return self.room.kinds().count(kind)

    def history(self) -> list[tuple[str, str, bool]]:
        return [(m.role, m.content, m.interrupted) for m in self.session.history.messages]


@asynccontextmanager
async def conversation(
    asr: ASREngine,
    tts: TTSEngine,
    store: ModelStore,
    smart_turn: SmartTurn,
    replies: list[str],
    who: Persona | None = None,
    *,
    echo_db: float | None = None,
    cancel_echo: bool = False,
) -> AsyncIterator[Conversation]:
    settings = Settings()
    canceller = EchoCanceller(RATE) if cancel_echo else None
    room = Room(RATE, echo_db=echo_db, far_end=canceller.far_end if canceller is not None else None)
    llm = FakeLLM(replies, repeat_last=True)
    engines = Engines(
        asr=asr,
        llm=llm,
        tts={"piper": tts},
        executor=EngineExecutor(workers=2),
        vad=vad_factory(settings.vad, store),
        turn_model=smart_turn.predict,
    )
    stages: list[Stage] = [EchoCancelStage(canceller)] if canceller is not None else []
    try:
        async with Session(
            settings, who or persona(5), room, engines, input_stages=stages
        ) as session:
            runner = asyncio.create_task(session.run())
            try:
                yield Conversation(room, session, llm)
            finally:
                room.hang_up()
                await asyncio.wait_for(runner, 30)
    finally:
        engines.executor.shutdown()


async def test_a_plain_turn_is_answered_after_a_short_silence_and_heard_whole(
    asr: ASREngine, piper: TTSEngine, store: ModelStore, smart_turn: SmartTurn
) -> None:
    question = "What is the weather like in Paris tomorrow?"
    async with conversation(asr, piper, store, smart_turn, ["Sunny and mild."]) as c:
        said = await c.room.said(c.room.say(speech_16k(question), "question"))
        await c.until("bot_stopped_speaking")

    kinds = c.room.kinds()
    order = [
        "user_started_speaking",
        "user_stopped_speaking",
        "user_turn_sent",
        "end_of_turn",
        "bot_started_speaking",
        "bot_stopped_speaking",
    ]
    assert kinds.index("reply_audio_ready") < kinds.index("bot_started_speaking")
    assert [kinds.index(k) for k in order] == sorted(kinds.index(k) for k in order), kinds
    _, end = await c.until("end_of_turn")
    assert end.data["reason"] == "finished turn"
    (user, _, _), reply = c.history()
    assert user == "user" and wer(question, c.session.history.messages[0].content) <= 0.15
    assert reply == ("assistant", "Sunny and mild.", False)
    # the reply waited for the end of turn: nothing played within 400 ms of the end of speech
    last_sound = said.start + audible(speech_16k(question))[1] - 1
    assert c.room.played and c.room.played[0].at >= last_sound + RATE * 400 // 1000


async def test_a_pause_in_the_middle_of_a_number_does_not_end_the_turn(
    asr: ASREngine, piper: TTSEngine, store: ModelStore, smart_turn: SmartTurn
) -> None:
    async with conversation(asr, piper, store, smart_turn, ["Noted.", "Noted, thanks."]) as c:
        c.room.say(speech_16k("My phone number is four one five"), "first half")
        c.room.say(silence_16k(0.7))
        second = await c.room.said(c.room.say(speech_16k("two three nine, eight eight."), "rest"))
        await c.until("bot_stopped_speaking")

    assert c.count("end_of_turn") == 1
    users = [content for role, content, _ in c.history() if role == "user"]
    assert len(users) == 1, users
    assert "415" in users[0].replace(" ", "") or "four one five" in users[0].lower()
    assert c.room.played[0].at > second.end  # not a word of reply before the number was done


async def test_barge_in_ducks_at_once_stops_the_reply_and_keeps_only_what_was_heard(
    asr: ASREngine, piper: TTSEngine, store: ModelStore, smart_turn: SmartTurn
) -> None:
    replies = [LONG_REPLY, "London is rainy."]
    async with conversation(asr, piper, store, smart_turn, replies) as c:
        c.room.say(speech_16k("Tell me about Paris."), "question")
        started, _ = await c.until("bot_started_speaking")
        await c.room.wait_ms(2500)
        line = c.room.say(speech_16k("Wait, stop. What about London instead?"), "barge-in")
        barge = await c.room.said(line)
        duck_at, _ = await c.until("duck", after=started)
        interrupted_at, cut = await c.until("playback_interrupted", after=started)
        await c.until("bot_stopped_speaking", after=barge.end)

    assert c.count("interruption_confirmed") == 1
    assert 0 <= duck_at - barge.start <= RATE * 150 // 1000  # the bench measures it exactly
    # ducked by the configured 24 dB, and it stayed down until the reply stopped
    before = c.room.level_db(barge.start - RATE // 2, barge.start)
    ducked = c.room.level_db(duck_at + RATE * 40 // 1000, interrupted_at)
    assert before - ducked >= 20, (before, ducked)
    # the history keeps exactly the words that were played
    heard = cut.data["heard"]
    assert heard and LONG_REPLY.startswith(heard) and heard != LONG_REPLY
    assert c.history()[1] == ("assistant", heard, True)
    played_by_room = 1000 * sum(len(p.pcm) for p in c.room.played if p.at < interrupted_at) / RATE
    reply_frames = [p for p in c.room.played if started <= p.at < interrupted_at]
    assert abs(1000 * len(reply_frames) * 320 / RATE - cut.data["played_ms"]) <= 60
    assert played_by_room >= cut.data["played_ms"] - 60
    users = [content for role, content, _ in c.history() if role == "user"]
    assert len(users) == 2 and "london" in users[1].lower()
    assert c.history()[-1] == ("assistant", "London is rainy.", False)


async def test_a_backchannel_or_a_cough_does_not_interrupt_and_nothing_is_lost(
    asr: ASREngine, piper: TTSEngine, store: ModelStore, smart_turn: SmartTurn
) -> None:
    async with conversation(asr, piper, store, smart_turn, [LONG_REPLY]) as c:
        c.room.say(speech_16k("Tell me about Paris."), "question")
        await c.until("bot_started_speaking")
        await c.room.wait_ms(1500)
        await c.room.said(c.room.say(speech_16k("Uh-huh."), "backchannel"))
        await c.room.wait_ms(1500)
        await c.room.said(c.room.say(cough(), "cough"))
        await c.until("bot_stopped_speaking")

    assert c.count("interruption_confirmed") == 0
    assert c.count("playback_interrupted") == 0
    assert c.count("duck") == c.count("unduck")  # every duck came back up
    assert c.history()[1:] == [("assistant", LONG_REPLY, False)]


async def test_going_on_during_the_preemptive_reply_cancels_it_for_the_whole_turn(
    asr: ASREngine, piper: TTSEngine, store: ModelStore, smart_turn: SmartTurn
) -> None:
    replies = ["What time?", "A table for two at eight, booked."]
    patient = persona(5, endpoint_silence_ms=1200)
    async with conversation(asr, piper, store, smart_turn, replies, patient) as c:
        c.room.say(speech_16k("I would like to book a table."), "first")
        c.room.say(silence_16k(0.5))  # with the voice's own trailing silence, ~0.7 s
        c.room.say(speech_16k("For two people at eight."), "second")
        await c.until("bot_stopped_speaking")

    assert c.count("preemption_cancelled") == 1
    assert c.count("end_of_turn") == 1
    assert c.count("bot_started_speaking") == 1  # the cancelled reply was never heard
    (_, user, _), reply = c.history()
    assert "table" in user.lower() and "eight" in user.lower()
    assert reply == ("assistant", "A table for two at eight, booked.", False)
    assert "eight" in c.llm.prompts[1][-1]["content"].lower()


@pytest.mark.parametrize("cancel_echo", [True, False], ids=["with-aec", "without-aec"])
async def test_the_assistants_own_echo_does_not_interrupt_it_once_cancelled(
    asr: ASREngine, piper: TTSEngine, store: ModelStore, smart_turn: SmartTurn, cancel_echo: bool
) -> None:
    async with conversation(
        asr, piper, store, smart_turn, [LONG_REPLY], echo_db=-6, cancel_echo=cancel_echo
    ) as c:
        c.room.say(speech_16k("Tell me about Paris."), "question")
        started, _ = await c.until("bot_started_speaking")
        # with the echo cancelled the reply plays out; without, its echo is taken for the user
        end = "bot_stopped_speaking" if cancel_echo else "barge_in_candidate"
        await c.until(end, after=started, timeout_s=30)

    if cancel_echo:
        assert c.count("barge_in_candidate") == 0
        assert c.count("interruption_confirmed") == 0
        assert c.history()[1:] == [("assistant", LONG_REPLY, False)]
    else:  # the same room without the canceller: the echo sounds like someone barging in
        assert c.count("barge_in_candidate") >= 1


def cough(seconds: float = 0.25, seed: int = 7) -> np.ndarray:
    """A cough-like burst: band-limited noise with a sharp attack and a fast decay."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    noise = rng.standard_normal(n + 64)
    kernel = np.hanning(9) - np.hanning(9).mean() * 0.5  # a crude 300 Hz - 3 kHz band
    burst = np.convolve(noise, kernel, mode="same")[:n]
    envelope = np.minimum(np.arange(n) / (0.01 * RATE), 1) * np.exp(-np.arange(n) / (0.07 * RATE))
    burst *= envelope / np.max(np.abs(burst * envelope)) * 0.5 * 32767
    return burst.astype(np.int16)
