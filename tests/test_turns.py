"""The turn logic on its own: scripted VAD and ASR frames in, decisions out (fast and exact).

The same decisions on real speech, through the real VAD, Smart Turn and Whisper, are in
test_conversation.py.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, TypeVar

import numpy as np
import pytest

from tests.fakes import persona
from tests.stagerun import DrainFrame, StageRun, until
from voice_agent.config import Settings
from voice_agent.executor import EngineExecutor
from voice_agent.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    CommitTurnFrame,
    Direction,
    DiscardTurnFrame,
    DuckOutputFrame,
    EndFrame,
    EndOfTurnFrame,
    FalseOnsetFrame,
    Frame,
    InputAudioFrame,
    InterruptionFrame,
    ResponseRequestFrame,
    SpeechOnsetFrame,
    SystemFrame,
    TranscriptionFrame,
    TranscriptRequestFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
    UserTurnFrame,
)
from voice_agent.pipeline import UP
from voice_agent.turns import TurnPolicy, TurnStage, hangs, takes_the_floor, words
from voice_agent.turns.policy import TurnPolicyFrame

RATE = 16000
F = TypeVar("F", bound=Frame)


class WatchedTurnStage(TurnStage):
    """A `TurnStage` that notes the frame it is handling (for a frame it holds back)."""

    handling: Frame | None = None

    async def process(self, frame: Frame, direction: Direction) -> None:
        self.handling = frame
        await super().process(frame, direction)


@dataclass(slots=True, kw_only=True)
class Probe(SystemFrame):
    """Passed on by the stage ahead of anything queued: it comes out while an `EndFrame` is held."""


class Harness:
    """A `TurnStage` under a `StageRun`, with the turn-specific steps the tests are made of.

    Each step sends its frames and then waits for `settled`, so what the stage decided about
    them has come out before the test looks; the one thing no frame marks is the turn model's
    score, coming back from the executor's thread (`utterance` waits for its event)."""

    def __init__(self, policy: TurnPolicy, score: float | None = None) -> None:
        model = None if score is None else (lambda pcm: score)
        self.stage = WatchedTurnStage(policy, EngineExecutor(workers=1), model, RATE)
        self.run = StageRun(self.stage, sample_rate=RATE)

    async def __aenter__(self) -> Harness:
        await self.run.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self.run.__aexit__(*exc)
        finally:
            self.stage.executor.shutdown()

    @property
    def out(self) -> list[Frame]:
        """Frames that came out downstream, in order (the `StartFrame` first)."""
        return self.run.down

    @property
    def up(self) -> list[Frame]:
        """Frames that came out upstream, in order."""
        return self.run.up

    @property
    def events(self) -> list[tuple[str, dict[str, Any]]]:
        return self.run.events

    async def settled(self) -> None:
        """Until every frame sent so far has been handled and what the stage sent in answer has
        come out: a marker down (behind the frames, and behind the data frames the stage sent),
        one up (behind the upstream frames, so the head has turned an interruption the stage
        asked for into an `InterruptionFrame`), and one down again (behind that interruption
        and the frames the stage held until it had passed)."""
        await self.run.through(DrainFrame())
        await self.run.through(DrainFrame(), direction=UP)
        await self.run.through(DrainFrame())

    async def send(self, *frames: Frame) -> None:
        self.run.send(*frames)
        await self.settled()

    async def audio(self, ms: int) -> None:
        silence = np.zeros(320, np.int16)
        await self.send(*(InputAudioFrame(pcm=silence, sample_rate=RATE) for _ in range(ms // 20)))

    async def bot(self, speaking: bool) -> None:
        frame = BotStartedSpeakingFrame() if speaking else BotStoppedSpeakingFrame()
        self.run.send(frame, direction=UP)
        await self.settled()

    async def utterance(self, text: str, ms: int = 600) -> None:
        await self.send(SpeechOnsetFrame())
        await self.audio(120)
        await self.send(UserStartedSpeakingFrame())
        await self.audio(ms - 120)
        scored = self.kinds().count("turn_model")
        await self.send(UserStoppedSpeakingFrame(), TranscriptionFrame(text=text))
        if self.stage.turn_model is not None and self.stage.turn_open:
            # the score comes back from the executor's thread: no frame of ours marks it
            await until(lambda: self.kinds().count("turn_model") > scored)
            await self.settled()

    async def speak_over_the_reply(self, ms: int) -> None:
        """The assistant speaks; the user starts talking over it and goes on for `ms`."""
        await self.bot(True)
        await self.send(SpeechOnsetFrame())
        await self.audio(120)
        await self.send(UserStartedSpeakingFrame())
        await self.audio(ms - 120)

    def before(self, first: type[Frame], then: type[Frame]) -> bool:
        """Whether the first `first` frame left the stage before the first `then` frame."""
        kinds = [type(f) for f in self.out]
        return kinds.index(first) < kinds.index(then)

    def of(self, kind: type[F]) -> list[F]:
        return self.run.of(kind)

    def kinds(self) -> list[str]:
        return self.run.event_names


POLICY = TurnPolicy(endpoint_silence_ms=500, unfinished_silence_ms=1500, pause_ms=160)


async def test_a_finished_turn_is_answered_at_the_pause_and_ends_after_the_endpoint_silence() -> (
    None
):
    async with Harness(POLICY, score=0.97) as h:
        await h.utterance("What is the weather in Paris?")
        turns = h.of(UserTurnFrame)
        assert [(t.text, t.turn, t.replaces) for t in turns] == [
            ("What is the weather in Paris?", 1, 0)
        ]
        assert not h.of(EndOfTurnFrame)  # preemptive: the reply may be made, not played
        await h.audio(320)  # 160 ms pause + 320 ms = 480 ms of silence
        assert not h.of(EndOfTurnFrame)
        await h.audio(40)
        (end,) = h.of(EndOfTurnFrame)
        assert end.turn == 1 and end.reason == "finished turn"
        assert h.kinds().index("turn_model") < h.kinds().index("end_of_turn")


async def test_an_unfinished_turn_waits_for_the_long_silence() -> None:
    async with Harness(POLICY, score=0.4) as h:
        await h.utterance("My number is four one five")
        await h.audio(1200)  # 1360 ms of silence: an unfinished turn is still open
        assert not h.of(EndOfTurnFrame)
        await h.audio(200)
        (end,) = h.of(EndOfTurnFrame)
        assert end.reason == "long silence after an unfinished turn"


async def test_going_on_after_a_pause_cancels_the_early_reply_and_sends_the_whole_turn() -> None:
    async with Harness(POLICY, score=0.97) as h:
        await h.utterance("I'd like to book a table.")
        await h.audio(200)
        await h.utterance("For two people, at eight.")
        assert [f.reason for f in h.of(InterruptionFrame)] == ["user resumed"]
        await h.audio(400)
        turns = h.of(UserTurnFrame)
        assert [(t.text, t.turn, t.replaces) for t in turns] == [
            ("I'd like to book a table.", 1, 0),
            ("I'd like to book a table. For two people, at eight.", 2, 1),
        ]
        assert [e.turn for e in h.of(EndOfTurnFrame)] == [2]
        assert "preemption_cancelled" in h.kinds()


async def test_a_pause_without_words_resends_the_turn_whose_reply_was_cancelled() -> None:
    async with Harness(POLICY, score=0.97) as h:
        await h.utterance("Tell me a joke.")
        await h.audio(100)
        await h.utterance("")  # a breath, a click: no words
        await h.audio(400)
        turns = h.of(UserTurnFrame)
        assert [(t.text, t.replaces) for t in turns] == [
            ("Tell me a joke.", 0),
            ("Tell me a joke.", 1),
        ]


async def test_speech_right_after_the_end_of_turn_reopens_it_until_the_reply_is_heard() -> None:
    async with Harness(POLICY, score=0.97) as h:
        await h.utterance("Call my sister.")
        await h.audio(400)
        assert [e.turn for e in h.of(EndOfTurnFrame)] == [1]
        await h.utterance("On her mobile.")
        await h.audio(400)
        assert [f.reason for f in h.of(InterruptionFrame)] == ["user resumed"]
        last = h.of(UserTurnFrame)[-1]
        assert (last.text, last.replaces) == ("Call my sister. On her mobile.", 1)
        # once the reply is being heard, speech is a barge-in candidate instead
        await h.bot(True)
        await h.utterance("mm-hmm")
        assert [f.reason for f in h.of(InterruptionFrame)] == ["user resumed"]


async def test_a_word_while_the_assistant_speaks_ducks_it_then_interrupts() -> None:
    async with Harness(POLICY, score=0.97) as h:
        await h.bot(True)
        await h.send(SpeechOnsetFrame())
        assert [d.db for d in h.of(DuckOutputFrame)] == [24.0]
        await h.audio(120)
        await h.send(UserStartedSpeakingFrame())
        await h.audio(100)
        await h.send(TranscriptionFrame(text="Stop", final=False))
        assert not h.of(InterruptionFrame)  # 220 ms: it may still be a backchannel
        await h.audio(460)  # 680 ms
        assert not h.of(InterruptionFrame)
        await h.audio(20)  # 700 ms: longer than any backchannel
        (interruption,) = h.of(InterruptionFrame)
        assert interruption.reason == "barge-in"
        await h.bot(False)
        await h.audio(300)
        await h.send(UserStoppedSpeakingFrame(), TranscriptionFrame(text="Stop, please."))
        await h.audio(400)
        assert [t.text for t in h.of(UserTurnFrame)] == ["Stop, please."]
        confirmed = dict(h.events)["interruption_confirmed"]
        assert confirmed["by"] == "words"


async def test_a_backchannel_is_not_an_interruption_and_the_voice_comes_back() -> None:
    async with Harness(POLICY, score=0.97) as h:
        await h.bot(True)
        await h.utterance("Uh-huh.", ms=500)
        # long enough to ask the ASR for words, but a backchannel does not take the floor
        assert any(isinstance(f, TranscriptRequestFrame) for f in h.up)
        assert not h.of(InterruptionFrame)
        assert [d.db for d in h.of(DuckOutputFrame)] == [24.0, 0.0]
        await h.audio(1000)
        assert not h.of(UserTurnFrame) and not h.of(EndOfTurnFrame)
        assert "interruption_rejected" in h.kinds()


async def test_a_short_sound_whose_partial_has_words_is_judged_by_its_final() -> None:
    async with Harness(POLICY, score=0.97) as h:
        await h.speak_over_the_reply(420)
        # Whisper's partial of a short "mm-hmm" (heard in `bench turns`)
        await h.send(TranscriptionFrame(text="in a manner.", final=False))
        await h.audio(80)
        await h.send(UserStoppedSpeakingFrame(), TranscriptionFrame(text="Mm."))
        await h.audio(200)
        assert not h.of(InterruptionFrame)
        assert [d.db for d in h.of(DuckOutputFrame)] == [24.0, 0.0]
        assert "interruption_rejected" in h.kinds()


async def test_a_short_interruption_whose_final_is_empty_goes_by_its_partial() -> None:
    async with Harness(POLICY, score=0.97) as h:
        await h.speak_over_the_reply(420)
        await h.send(TranscriptionFrame(text="Wait, stop.", final=False))
        await h.audio(80)
        await h.send(UserStoppedSpeakingFrame(), TranscriptionFrame(text=""))
        assert [f.reason for f in h.of(InterruptionFrame)] == ["barge-in"]
        assert dict(h.events)["interruption_confirmed"]["text"] == "Wait, stop."


async def test_a_short_interruption_is_confirmed_by_its_final() -> None:
    async with Harness(POLICY, score=0.97) as h:
        await h.speak_over_the_reply(420)
        await h.send(TranscriptionFrame(text="Stop", final=False))
        await h.audio(80)
        assert not h.of(InterruptionFrame)
        await h.send(UserStoppedSpeakingFrame(), TranscriptionFrame(text="Stop!"))
        assert [f.reason for f in h.of(InterruptionFrame)] == ["barge-in"]


async def test_a_brisk_persona_yields_to_any_speech_that_lasts_its_minimum() -> None:
    brisk = TurnPolicy(min_interruption_ms=150, backchannels_interrupt=True)
    async with Harness(brisk, score=0.97) as h:
        await h.bot(True)
        await h.send(SpeechOnsetFrame())
        await h.audio(120)
        await h.send(UserStartedSpeakingFrame())
        assert not h.of(InterruptionFrame)
        await h.audio(40)
        assert len(h.of(InterruptionFrame)) == 1
        assert dict(h.events)["interruption_confirmed"]["by"] == "duration"


async def test_a_click_ducks_for_an_instant_only() -> None:
    async with Harness(POLICY) as h:
        await h.bot(True)
        await h.send(SpeechOnsetFrame())
        await h.audio(40)
        await h.send(FalseOnsetFrame())
        assert [d.db for d in h.of(DuckOutputFrame)] == [24.0, 0.0]
        assert not h.of(InterruptionFrame)


async def test_without_a_turn_model_the_endpoint_silence_decides() -> None:
    async with Harness(POLICY) as h:
        await h.utterance("Hello.")
        await h.audio(340)
        assert h.of(EndOfTurnFrame)[0].reason == "silence"


async def test_the_end_of_input_ends_the_open_turn() -> None:
    async with Harness(POLICY, score=0.2) as h:
        await h.utterance("Goodbye.")
        await h.send(EndFrame())
        (end,) = h.of(EndOfTurnFrame)
        assert end.reason == "input ended"
        assert isinstance(h.out[-1], EndFrame)


@pytest.mark.parametrize(
    ("text", "backchannels_interrupt", "expected"),
    [
        ("Uh-huh.", False, False),
        ("Yeah, right.", False, False),
        ("[coughing]", False, False),
        ("(clears throat)", True, False),
        ("Wait, stop.", False, True),
        ("Yeah, but no.", False, True),
        ("Uh-huh.", True, True),
        ("", True, False),
    ],
)
def test_which_words_take_the_floor(
    text: str, backchannels_interrupt: bool, expected: bool
) -> None:
    assert takes_the_floor(text, backchannels_interrupt) is expected


def test_words_drop_punctuation_and_sound_labels() -> None:
    assert words("Well... [cough] I *sigh* think (laughs) so!") == ["well", "i", "think", "so"]


async def test_a_sound_that_begins_before_the_endpoint_holds_it_until_the_vad_decides() -> None:
    async with Harness(POLICY, score=0.97) as h:
        await h.utterance("Book a table.")
        await h.audio(300)
        await h.send(SpeechOnsetFrame())
        await h.audio(100)  # 560 ms of silence, but something is starting
        assert not h.of(EndOfTurnFrame)
        await h.send(FalseOnsetFrame())  # it was nothing: the turn is over
        assert [e.turn for e in h.of(EndOfTurnFrame)] == [1]


async def test_words_that_only_the_final_transcript_reveals_interrupt_and_make_a_turn() -> None:
    async with Harness(POLICY, score=0.97) as h:
        await h.bot(True)
        await h.utterance("Stop, please.", ms=250)  # too short for partials; the final has words
        assert [f.reason for f in h.of(InterruptionFrame)] == ["barge-in"]
        await h.bot(False)
        await h.audio(400)
        assert [t.text for t in h.of(UserTurnFrame)] == ["Stop, please."]
        # the turn follows the interruption downstream, so the interruption cannot cancel it
        assert h.before(InterruptionFrame, UserTurnFrame)
        assert [e.reason for e in h.of(EndOfTurnFrame)] == ["finished turn"]


async def test_a_backchannel_followed_at_once_by_real_words_still_interrupts() -> None:
    async with Harness(POLICY, score=0.97) as h:
        await h.bot(True)
        await h.send(SpeechOnsetFrame())
        await h.audio(120)
        await h.send(UserStartedSpeakingFrame())
        await h.audio(200)
        await h.send(UserStoppedSpeakingFrame(), SpeechOnsetFrame())
        await h.audio(120)
        await h.send(UserStartedSpeakingFrame(), TranscriptionFrame(text="Yeah."))
        assert not h.of(InterruptionFrame)  # the backchannel alone did not
        await h.audio(200)
        await h.send(UserStoppedSpeakingFrame(), TranscriptionFrame(text="But what about Rome?"))
        assert [f.reason for f in h.of(InterruptionFrame)] == ["barge-in"]
        await h.audio(400)
        assert [t.text for t in h.of(UserTurnFrame)] == ["But what about Rome?"]
        assert h.before(InterruptionFrame, UserTurnFrame)


async def test_a_whole_question_the_model_doubts_ends_after_the_short_silence() -> None:
    async with Harness(POLICY, score=0.85) as h:  # below the threshold, above QUESTION_FLOOR
        await h.utterance("What should I pack for a weekend hike?")
        await h.audio(360)
        (end,) = h.of(EndOfTurnFrame)
        assert end.reason == "finished question"


async def test_a_question_mark_after_a_hanging_word_is_no_whole_question() -> None:
    async with Harness(POLICY, score=0.85) as h:
        await h.utterance("Can you tell me about the?")
        await h.audio(1200)
        assert not h.of(EndOfTurnFrame)
        await h.audio(200)
        (end,) = h.of(EndOfTurnFrame)
        assert end.reason == "long silence after an unfinished turn"


async def test_a_question_the_model_thinks_unfinished_still_waits() -> None:
    async with Harness(POLICY, score=0.3) as h:
        await h.utterance("Can you tell me about the history of?")
        await h.audio(1200)
        assert not h.of(EndOfTurnFrame)
        await h.audio(200)
        (end,) = h.of(EndOfTurnFrame)
        assert end.reason == "long silence after an unfinished turn"


async def test_a_turn_that_stops_on_a_hanging_word_waits_whatever_the_model_says() -> None:
    async with Harness(POLICY, score=0.99) as h:
        await h.utterance("I would like to order a")
        await h.audio(1000)
        assert not h.of(EndOfTurnFrame)
        await h.audio(400)
        (end,) = h.of(EndOfTurnFrame)
        assert end.reason == "long silence after unfinished words"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("I would like to order a", True),
        ("The meeting is at", True),
        ("Turn the lights on.", False),
        ("Who is it for?", False),
        ("I know that.", False),
        ("So what I was thinking is that we could", True),
        ("Can you tell me about the...", True),
        ("Book a table for two.", False),
        ("What is it?", False),
        ("", False),
    ],
)
def test_which_transcripts_hang(text: str, expected: bool) -> None:
    assert hangs(text) is expected


def test_a_persona_sets_its_own_patience_and_otherwise_gets_the_settings() -> None:
    settings = Settings.model_validate(
        {"turns": {"endpoint_silence_ms": 700, "min_interruption_ms": 400}}
    )
    default = TurnPolicy.of(settings, persona())
    assert (default.endpoint_silence_ms, default.min_interruption_ms) == (700, 400)
    patient = TurnPolicy.of(settings, persona(endpoint_silence_ms=2000, min_interruption_ms=0))
    assert (patient.endpoint_silence_ms, patient.min_interruption_ms) == (2000, 0)
    assert patient.unfinished_silence_ms == 2000  # never shorter than the finished-turn wait
    assert patient.pause_ms == settings.vad.stop_ms


async def test_speech_that_outlasts_the_reply_becomes_a_turn_even_a_short_yes() -> None:
    async with Harness(POLICY, score=0.97) as h:
        await h.bot(True)
        await h.send(SpeechOnsetFrame())
        await h.audio(120)
        await h.send(UserStartedSpeakingFrame())
        await h.bot(False)  # the question ended while they were answering it
        await h.audio(200)
        await h.send(UserStoppedSpeakingFrame(), TranscriptionFrame(text="Yes."))
        await h.audio(500)
        assert [t.text for t in h.of(UserTurnFrame)] == ["Yes."]
        assert [e.turn for e in h.of(EndOfTurnFrame)] == [1]
        assert not h.of(InterruptionFrame)


async def test_a_stop_without_a_start_is_ignored() -> None:
    async with Harness(POLICY) as h:
        await h.send(UserStoppedSpeakingFrame())
        await h.utterance("Hello.")
        await h.audio(400)
        assert [e.reason for e in h.of(EndOfTurnFrame)] == ["silence"]


CLIENT = replace(POLICY, auto_end=False, auto_reply=False, barge_in=False)
"""A realtime client that decides its turns and asks for its replies."""


async def test_a_committed_turn_ends_with_its_transcript_and_a_reply_asked_meanwhile_follows() -> (
    None
):
    async with Harness(POLICY, score=0.97) as h:
        await h.send(TurnPolicyFrame(policy=CLIENT))  # as a realtime client's session.update
        assert h.stage.policy is CLIENT and h.of(TurnPolicyFrame)  # applied, and passed on
        await h.send(SpeechOnsetFrame())
        await h.audio(120)
        await h.send(UserStartedSpeakingFrame())
        await h.audio(480)
        await h.send(UserStoppedSpeakingFrame(), TranscriptionFrame(text="Book a table."))
        await h.audio(2000)
        assert not h.of(EndOfTurnFrame) and not h.of(UserTurnFrame)
        await h.speak_over_the_reply(600)  # barge_in off: a turn of its own, no duck
        await h.send(UserStoppedSpeakingFrame(), CommitTurnFrame(), ResponseRequestFrame())
        assert not h.of(EndOfTurnFrame) and not h.of(ResponseRequestFrame)  # transcript due
        await h.send(TranscriptionFrame(text="For two."))
        (turn,) = h.of(UserTurnFrame)
        assert (turn.text, turn.turn, turn.respond) == ("Book a table. For two.", 1, False)
        assert [e.reason for e in h.of(EndOfTurnFrame)] == ["committed"]
        assert len(h.of(ResponseRequestFrame)) == 1
        assert not h.of(DuckOutputFrame) and not h.of(InterruptionFrame)
        assert "turn_model" not in h.kinds()


async def test_a_discarded_turn_drops_the_reply_asked_for_its_commit() -> None:
    async with Harness(CLIENT) as h:
        await h.send(SpeechOnsetFrame())
        await h.audio(120)
        await h.send(UserStartedSpeakingFrame())
        await h.audio(480)
        await h.send(UserStoppedSpeakingFrame(), CommitTurnFrame(), ResponseRequestFrame())
        await h.send(DiscardTurnFrame(), TranscriptionFrame(text="Never mind."))
        assert "turn_discarded" in h.kinds()
        await h.send(CommitTurnFrame())  # nothing to commit, no request held for it
        assert not h.of(ResponseRequestFrame) and not h.of(UserTurnFrame)
        await h.send(ResponseRequestFrame())  # asked with no commit waiting: it passes
        assert len(h.of(ResponseRequestFrame)) == 1


async def test_the_end_of_input_waits_for_the_last_transcript() -> None:
    async with Harness(POLICY) as h:
        await h.send(SpeechOnsetFrame())
        await h.audio(120)
        await h.send(UserStartedSpeakingFrame())
        await h.audio(480)
        await h.send(UserStoppedSpeakingFrame())
        end = EndFrame()
        h.run.send(end)  # not `h.send`: the stage holds it, and what is queued behind it
        await until(lambda: h.stage.handling is end)  # no frame marks that it has taken it
        await h.run.through(Probe())  # what it decided on taking it has come out
        assert not h.of(EndOfTurnFrame)  # its transcript is still due
        await h.send(TranscriptionFrame(text="Goodbye."))
        assert [e.reason for e in h.of(EndOfTurnFrame)] == ["input ended"]
        assert [t.text for t in h.of(UserTurnFrame)] == ["Goodbye."]
        assert isinstance(h.out[-1], EndFrame)
