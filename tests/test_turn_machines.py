"""The turn-taking machines on their own, without asyncio: positions on the audio clock, the VAD's
decisions, transcripts and turn model scores in, decisions out.

`TurnTaker` is fed as `TurnStage` feeds it (tests/test_turns.py drives the stage end to end);
a few tests drive the `Endpointer` and the `BargeInJudge` alone.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, TypeVar

import numpy as np
import pytest

from tests.fakes import make_event
from voice_agent.turns import (
    BargeInJudge,
    Endpointer,
    Hearing,
    RecentAudio,
    TurnPolicy,
    TurnTaker,
)
from voice_agent.turns.decisions import (
    AskForWords,
    Decision,
    DropRequests,
    Duck,
    Emit,
    EndTurn,
    Interrupt,
    ReleaseRequests,
    ScoreTurn,
    SendTurn,
)


def emit(kind: str, **data: Any) -> Emit:
    """The `Emit` of the event `kind` with its fields (equal to any made at another time)."""
    return Emit(make_event(kind, **data))


RATE = 16000
MS = RATE // 1000
"""Samples per millisecond."""
POLICY = TurnPolicy(endpoint_silence_ms=500, unfinished_silence_ms=1500, pause_ms=160)
D = TypeVar("D")


class Talk:
    """A `TurnTaker` fed by hand; every decision it made, in order, is in `log`."""

    def __init__(self, policy: TurnPolicy = POLICY, turn_model: bool = True) -> None:
        self.taker = TurnTaker(policy, turn_model, RATE)
        self.log: list[Decision] = []

    def feed(self, decisions: list[Decision]) -> list[Decision]:
        self.log += decisions
        return decisions

    def audio(self, ms: int, chunk: int = 10 * MS) -> list[Decision]:
        """`ms` of audio (silence or speech: the machine hears only how much), in chunks."""
        out: list[Decision] = []
        for _ in range(ms * MS // chunk):
            out += self.taker.audio(chunk)
        return self.feed(out)

    def samples_until(self, kind: type[Decision], most: int = 3 * RATE) -> int:
        """Feed one sample at a time until a decision of `kind`: how many it took."""
        for n in range(1, most + 1):
            if any(isinstance(d, kind) for d in self.feed(self.taker.audio(1))):
                return n
        raise AssertionError(f"no {kind.__name__} in {most} samples")

    def onset(self) -> list[Decision]:
        return self.feed(self.taker.onset())

    def false_onset(self) -> list[Decision]:
        return self.feed(self.taker.false_onset())

    def start(self) -> list[Decision]:
        return self.feed(self.taker.speech_started())

    def pause(self, silence_ms: int = 0) -> list[Decision]:
        return self.feed(self.taker.paused(silence_ms))

    def final(self, text: str) -> list[Decision]:
        return self.feed(self.taker.transcript(text))

    def partial(self, text: str) -> list[Decision]:
        return self.feed(self.taker.transcript(text, final=False))

    def score(self, probability: float) -> list[Decision]:
        """The turn model answers the last pause it was asked about."""
        (*_, ask) = self.of(ScoreTurn)
        return self.feed(self.taker.scored(ask.pause, probability))

    def bot(self, speaking: bool, interruption_pending: bool = False) -> list[Decision]:
        if speaking:
            return self.feed(self.taker.bot_started(interruption_pending))
        return self.feed(self.taker.bot_stopped())

    def speak(self, ms: int) -> list[Decision]:
        """Speech starts (onset, then the VAD's start 120 ms later) and goes on for `ms`."""
        mark = len(self.log)
        self.onset()
        self.audio(120)
        self.start()
        self.audio(ms - 120)
        return self.log[mark:]

    def utterance(self, text: str, ms: int = 600, score: float | None = None) -> list[Decision]:
        """Speech for `ms`, a pause, its final transcript, and the turn model's score."""
        mark = len(self.log)
        self.speak(ms)
        self.pause()
        self.final(text)
        if score is not None and any(isinstance(d, ScoreTurn) for d in self.log[mark:]):
            self.score(score)
        return self.log[mark:]

    def of(self, kind: type[D], log: list[Decision] | None = None) -> list[D]:
        return [d for d in (self.log if log is None else log) if isinstance(d, kind)]

    def kinds(self, log: list[Decision] | None = None) -> list[str]:
        return [e.event.type for e in self.of(Emit, log)]

    def event(self, kind: str) -> dict[str, object]:
        (*_, last) = (e.event.data for e in self.of(Emit) if e.event.type == kind)
        return last


# --- the end of a turn -----------------------------------------------------------------------


@pytest.mark.parametrize("chunk", [1, 7, 20 * MS, 340 * MS])
def test_a_finished_turn_ends_after_the_short_silence_counted_in_samples(chunk: int) -> None:
    t = Talk()
    t.utterance("What is the weather in Paris?", score=0.97)
    assert not t.of(EndTurn)
    # the VAD reports the pause 160 ms into the silence: 340 ms (5440 samples) to go
    fed = 0
    while not t.of(EndTurn) and fed < RATE:
        t.feed(t.taker.audio(chunk))
        fed += chunk
    assert fed == -(-5440 // chunk) * chunk  # at the first chunk that reaches it, not later
    (end,) = t.of(EndTurn)
    assert (end.turn, end.reason) == (1, "finished turn")
    assert t.event("end_of_turn") == {
        "turn": 1,
        "reason": "finished turn",
        "probability": 0.97,
        "text": "What is the weather in Paris?",
    }


def test_the_silence_the_vad_reports_counts_and_never_less_than_its_stop_ms() -> None:
    t = Talk()
    t.speak(600)
    t.pause(silence_ms=200)  # 200 ms already silent: 300 ms to go
    t.final("Hello there.")
    t.score(0.97)
    assert t.samples_until(EndTurn) == 300 * MS


def test_an_unfinished_turn_waits_the_long_silence() -> None:
    t = Talk()
    t.utterance("My number is four one five", score=0.4)
    assert t.event("turn_model") == {"probability": 0.4, "finished": False}
    assert t.samples_until(EndTurn) == (1500 - 160) * MS
    assert t.of(EndTurn)[0].reason == "long silence after an unfinished turn"


def test_a_turn_that_stops_on_a_hanging_word_waits_whatever_the_model_says() -> None:
    t = Talk()
    t.utterance("I would like to order a", score=0.99)
    assert t.event("turn_model")["finished"] is True
    assert t.samples_until(EndTurn) == (1500 - 160) * MS
    assert t.of(EndTurn)[0].reason == "long silence after unfinished words"


@pytest.mark.parametrize(
    ("score", "silence_ms", "reason"),
    [
        (0.85, 500, "finished question"),  # below the threshold, above QUESTION_FLOOR
        (0.45, 1500, "long silence after an unfinished turn"),  # below QUESTION_FLOOR
        (0.97, 500, "finished turn"),
    ],
)
def test_a_whole_question_ends_after_the_short_silence_if_the_model_half_believes_it(
    score: float, silence_ms: int, reason: str
) -> None:
    t = Talk()
    t.utterance("What should I pack for a weekend hike?", score=score)
    assert t.samples_until(EndTurn) == (silence_ms - 160) * MS
    assert t.of(EndTurn)[0].reason == reason


def test_a_question_mark_after_a_hanging_word_is_no_whole_question() -> None:
    t = Talk()
    t.utterance("Can you tell me about the?", score=0.85)
    assert t.samples_until(EndTurn) == (1500 - 160) * MS


def test_a_turn_model_that_has_not_answered_leaves_the_long_silence_to_end_the_turn() -> None:
    t = Talk()
    out = t.utterance("Hello.")  # no score comes
    assert ScoreTurn(1) in out
    assert t.samples_until(EndTurn) == (1500 - 160) * MS
    assert t.of(EndTurn)[0].reason == "silence (turn model late)"
    assert t.event("end_of_turn")["probability"] is None
    assert t.score(0.99) == []  # too late: the turn is over


def test_without_a_turn_model_the_short_silence_ends_the_turn() -> None:
    t = Talk(turn_model=False)
    t.utterance("Hello.")
    assert not t.of(ScoreTurn)
    assert t.samples_until(EndTurn) == (500 - 160) * MS
    assert t.of(EndTurn)[0].reason == "silence"


def test_a_score_for_an_earlier_pause_is_moot() -> None:
    t = Talk()
    t.utterance("Book a table", score=None)
    t.audio(100)
    t.utterance("for two.", score=None)
    assert [s.pause for s in t.of(ScoreTurn)] == [1, 2]
    assert t.feed(t.taker.scored(1, 0.99)) == []
    assert t.feed(t.taker.scored(2, 0.99)) == [emit("turn_model", probability=0.99, finished=True)]


def test_a_sound_that_begins_before_the_endpoint_holds_it_until_the_vad_decides() -> None:
    t = Talk()
    t.utterance("Book a table.", score=0.97)
    t.audio(300)
    t.onset()
    t.audio(100)  # 560 ms of silence, but something is starting
    assert not t.of(EndTurn)
    out = t.false_onset()  # it was nothing: the turn is over
    assert [d for d in out if isinstance(d, EndTurn)] == [EndTurn(1, "finished turn")]


def test_the_end_of_input_ends_the_open_turn() -> None:
    t = Talk()
    t.utterance("Goodbye.", score=0.2)
    out = t.feed(t.taker.input_ended())
    assert out[-2:] == [
        EndTurn(1, "input ended"),
        emit("end_of_turn", turn=1, reason="input ended", probability=0.2, text="Goodbye."),
    ]
    assert t.feed(t.taker.input_ended()) == []  # nothing is open any more


def test_a_stop_without_a_start_is_ignored() -> None:
    t = Talk(turn_model=False)
    assert t.pause() == []
    assert t.taker.finals_due == 0  # no transcript to wait for
    t.utterance("Hello.")
    assert t.samples_until(EndTurn) == (500 - 160) * MS


# --- preemptive replies, resuming and reopening ----------------------------------------------


def test_the_turn_is_sent_at_the_pause_and_ended_later() -> None:
    t = Talk()
    out = t.utterance("What is the weather in Paris?")
    assert out[-2:] == [
        SendTurn("What is the weather in Paris?", turn=1, replaces=0, respond=True),
        emit(
            "user_turn_sent",
            turn=1,
            how="preemptive",
            replaces=0,
            text="What is the weather in Paris?",
        ),
    ]
    assert t.kinds()[0] == "turn_started" and t.taker.turn_open
    t.score(0.97)
    t.audio(340)
    assert len(t.of(SendTurn)) == 1  # the same text is not sent again at the end
    assert not t.taker.turn_open


def test_going_on_after_a_pause_cancels_the_early_reply_and_sends_the_whole_turn() -> None:
    t = Talk()
    t.utterance("I'd like to book a table.", score=0.97)
    t.audio(200)
    t.onset()
    t.audio(120)
    assert t.start() == [
        emit("turn_resumed", turn=1),
        emit("preemption_cancelled", turn=1),
        Interrupt("user resumed"),
    ]
    t.audio(480)
    t.pause()
    t.final("For two people, at eight.")
    t.score(0.97)
    t.audio(340)
    assert t.of(SendTurn) == [
        SendTurn("I'd like to book a table.", 1, 0),
        SendTurn("I'd like to book a table. For two people, at eight.", 2, 1),
    ]
    assert t.of(EndTurn) == [EndTurn(2, "finished turn")]


def test_a_pause_without_words_resends_the_turn_whose_reply_was_cancelled() -> None:
    t = Talk()
    t.utterance("Tell me a joke.", score=0.97)
    t.audio(100)
    t.utterance("", score=0.97)  # a breath, a click: no words
    t.audio(400)
    assert [(s.text, s.turn, s.replaces) for s in t.of(SendTurn)] == [
        ("Tell me a joke.", 1, 0),
        ("Tell me a joke.", 2, 1),
    ]


def test_a_resumed_turn_whose_text_was_not_sent_yet_interrupts_nothing() -> None:
    t = Talk()
    t.speak(600)
    t.pause()
    t.audio(100)  # the final transcript is late: nothing sent
    t.onset()
    assert t.start() == [emit("turn_resumed", turn=1)]


@pytest.mark.parametrize(("gap_ms", "reopens"), [(1480, True), (1500, False)])
def test_speech_within_the_long_silence_after_the_end_of_turn_reopens_it(
    gap_ms: int, reopens: bool
) -> None:
    t = Talk()
    t.utterance("Call my sister.", score=0.97)
    t.audio(340)
    assert t.of(EndTurn) == [EndTurn(1, "finished turn")]
    t.audio(gap_ms - 120)
    t.onset()
    t.audio(120)  # the speech starts `gap_ms` after the end of turn
    out = t.start()
    if reopens:
        assert out == [Interrupt("user resumed"), emit("turn_reopened", turn=1)]
    else:
        assert out == [emit("turn_started", turn=2)]
    t.audio(480)
    t.pause()
    t.final("On her mobile.")
    last = t.of(SendTurn)[-1]
    if reopens:
        assert (last.text, last.turn, last.replaces) == ("Call my sister. On her mobile.", 2, 1)
    else:
        assert (last.text, last.turn, last.replaces) == ("On her mobile.", 2, 0)


def test_once_the_reply_is_heard_speech_no_longer_reopens_the_turn() -> None:
    t = Talk()
    t.utterance("Call my sister.", score=0.97)
    t.audio(340)
    t.bot(True)
    out = t.speak(200)  # over the reply: a barge-in candidate
    assert Interrupt("user resumed") not in out
    assert "barge_in_candidate" in t.kinds(out)
    t.pause()
    t.final("Mm.")
    t.bot(False)  # a short reply, over within the long silence
    assert t.speak(200) == [emit("turn_started", turn=2)]  # a new turn, not the old one


def test_a_reply_that_starts_while_the_user_speaks_in_an_open_turn_is_interrupted() -> None:
    t = Talk()
    t.utterance("Tell me", score=0.97)
    t.speak(200)
    assert t.bot(True) == [Interrupt("user is speaking")]
    t.bot(False)
    assert t.bot(True, interruption_pending=True) == []  # one is already on its way


def test_preemptive_reply_off_sends_the_turn_at_its_end() -> None:
    t = Talk(replace(POLICY, preemptive_reply=False))
    t.utterance("Hello.", score=0.97)
    assert not t.of(SendTurn)
    out = t.audio(340)
    assert [type(d) for d in out] == [SendTurn, Emit, EndTurn, Emit]
    assert t.event("user_turn_sent")["how"] == "at end of turn"


# --- barge-in --------------------------------------------------------------------------------


def test_speech_over_the_reply_ducks_it_at_the_onset() -> None:
    t = Talk()
    t.bot(True)
    assert t.onset() == [Duck(24.0), emit("duck", db=24.0, why="speech onset")]
    t.audio(120)
    assert t.start() == [emit("barge_in_candidate")]  # already ducked
    assert not t.taker.turn_open


def test_a_click_over_the_reply_ducks_it_for_an_instant_only() -> None:
    t = Talk()
    t.bot(True)
    t.onset()
    t.audio(40)
    assert t.false_onset() == [Duck(0.0), emit("unduck", db=0.0, why="false onset")]


@pytest.mark.parametrize("min_ms", [150, 300])
def test_a_brisk_persona_yields_to_any_speech_that_lasts_its_minimum(min_ms: int) -> None:
    t = Talk(TurnPolicy(min_interruption_ms=min_ms, backchannels_interrupt=True))
    t.bot(True)
    t.onset()
    t.audio(120)
    t.start()
    assert t.samples_until(Interrupt) == (min_ms - 120) * MS
    assert t.log[-3:] == [
        Interrupt("barge-in"),
        emit("interruption_confirmed", by="duration", speech_ms=min_ms, text=""),
        emit("turn_started", turn=1),
    ]
    assert t.taker.turn_open and not t.of(AskForWords)
    assert not t.taker.judge.ducked  # the interruption resets playback's level


def test_a_word_over_the_reply_interrupts_once_the_speech_outlasts_a_backchannel() -> None:
    t = Talk()
    t.bot(True)
    t.speak(220)
    assert t.partial("Stop") == []  # 220 ms: it may still be a backchannel
    assert t.samples_until(AskForWords) == 80 * MS  # the minimum: ask the ASR for words
    assert t.samples_until(Interrupt) == 400 * MS  # 700 ms: longer than any backchannel
    assert t.event("interruption_confirmed") == {"by": "words", "speech_ms": 700, "text": "Stop"}
    assert len(t.of(AskForWords)) == 1


def test_a_backchannel_partial_confirms_nothing_unless_backchannels_interrupt() -> None:
    polite, brisk = Talk(), Talk(replace(POLICY, backchannels_interrupt=True))
    for t in (polite, brisk):
        t.bot(True)
        t.speak(130)
    assert polite.partial("Uh-huh.") == []
    polite.audio(700)
    assert not polite.of(Interrupt)
    out = brisk.partial("Uh-huh.")  # at once, whatever the speech's length
    assert out[:2] == [
        Interrupt("barge-in"),
        emit("interruption_confirmed", by="words", speech_ms=130, text="Uh-huh."),
    ]


def test_words_in_the_final_transcript_confirm_the_barge_in_and_make_the_turn() -> None:
    t = Talk()
    t.bot(True)
    t.speak(250)
    t.pause()
    out = t.final("Stop, please.")
    assert out == [
        Interrupt("barge-in"),
        emit("interruption_confirmed", by="words", speech_ms=0, text="Stop, please."),
        emit("turn_started", turn=1),
        ScoreTurn(1),  # already paused: the silence counts
        SendTurn("Stop, please.", 1, 0),
        emit("user_turn_sent", turn=1, how="preemptive", replaces=0, text="Stop, please."),
    ]
    t.bot(False)
    t.score(0.97)
    t.audio(400)
    assert t.of(EndTurn) == [EndTurn(1, "finished turn")]


def test_a_short_interruption_whose_final_is_empty_goes_by_its_partial() -> None:
    t = Talk()
    t.bot(True)
    t.speak(420)
    t.partial("Wait, stop.")
    assert not t.of(Interrupt)
    t.pause()
    t.final("")
    assert t.of(Interrupt) == [Interrupt("barge-in")]
    assert t.event("interruption_confirmed")["text"] == "Wait, stop."


def test_a_backchannel_is_rejected_at_the_pause_and_the_voice_comes_back() -> None:
    t = Talk()
    t.bot(True)
    t.speak(500)
    assert t.of(AskForWords)  # long enough to ask the ASR for words
    t.partial("in a manner.")  # Whisper's partial of a short "mm-hmm": too short to count
    t.pause()
    assert t.final("Mm.") == [
        emit("interruption_rejected", text="Mm."),
        Duck(0.0),
        emit("unduck", db=0.0, why="not an interruption"),
    ]
    t.audio(1000)
    assert not t.of(Interrupt) and not t.of(SendTurn) and not t.of(EndTurn)
    assert not t.taker.turn_open


def test_a_backchannel_followed_at_once_by_real_words_still_interrupts() -> None:
    t = Talk()
    t.bot(True)
    t.speak(320)
    t.pause()
    t.onset()
    t.audio(120)
    t.start()
    assert t.final("Yeah.") == []  # they go on: the next stretch is the candidate
    t.audio(200)
    t.pause()
    t.final("But what about Rome?")
    assert t.of(Interrupt) == [Interrupt("barge-in")]
    assert [s.text for s in t.of(SendTurn)] == ["But what about Rome?"]


def test_speech_that_outlasts_the_reply_becomes_a_turn_even_a_short_yes() -> None:
    t = Talk()
    t.bot(True)
    t.speak(120)
    assert t.bot(False) == [emit("turn_started", turn=1)]  # the question ended under them
    t.audio(200)
    t.pause()
    t.final("Yes.")
    t.score(0.97)
    t.audio(400)
    assert [s.text for s in t.of(SendTurn)] == ["Yes."]
    assert t.of(EndTurn) == [EndTurn(1, "finished turn")]
    assert not t.of(Interrupt)


def test_an_interruption_for_a_resumed_turn_resets_the_duck() -> None:
    t = Talk()
    t.utterance("Tell me a joke.", score=0.97)
    t.bot(True)  # an old reply starts playing
    t.onset()  # ducked
    t.audio(120)
    t.start()  # the open turn resumes: its reply is interrupted, playback's level reset
    assert t.of(Interrupt) == [Interrupt("user resumed")]
    assert not t.taker.judge.ducked


# --- turns the client decides ----------------------------------------------------------------

CLIENT = replace(POLICY, auto_end=False, auto_reply=False, barge_in=False)


def test_without_auto_end_silence_never_ends_the_turn_and_a_commit_does() -> None:
    t = Talk(replace(POLICY, auto_end=False))
    t.speak(600)
    t.pause()
    assert t.feed(t.taker.commit()) == []  # its transcript is not in yet
    assert t.taker.commit_pending
    out = t.final("Book a table.")
    assert out == [
        SendTurn("Book a table.", 1, 0),
        emit("user_turn_sent", turn=1, how="preemptive", replaces=0, text="Book a table."),
        EndTurn(1, "committed"),
        emit("end_of_turn", turn=1, reason="committed", probability=None, text="Book a table."),
        ReleaseRequests(),
    ]
    assert not t.of(ScoreTurn)
    assert not t.taker.commit_pending


def test_without_auto_end_a_turn_waits_for_its_commit() -> None:
    t = Talk(CLIENT)
    t.utterance("Book a table.")
    t.audio(5000)
    assert not t.of(EndTurn) and not t.of(ScoreTurn) and not t.of(SendTurn)  # no auto_reply
    out = t.feed(t.taker.commit())
    assert out[0] == SendTurn("Book a table.", 1, 0, respond=False)
    assert out[2] == EndTurn(1, "committed")


def test_a_commit_with_nothing_said_only_releases_the_requests() -> None:
    t = Talk(CLIENT)
    assert t.feed(t.taker.commit()) == [ReleaseRequests()]


def test_a_discarded_turn_and_its_late_transcript_are_forgotten() -> None:
    t = Talk(CLIENT)
    t.speak(600)
    t.pause()
    t.feed(t.taker.commit())
    assert t.feed(t.taker.discard()) == [DropRequests(), emit("turn_discarded", turn=1)]
    assert not t.taker.turn_open and not t.taker.commit_pending
    t.speak(600)  # the next turn starts before the discarded speech's transcript comes
    assert t.final("Never mind.") == []
    t.pause()
    t.final("Book a table.")
    t.feed(t.taker.commit())
    assert t.of(SendTurn) == [SendTurn("Book a table.", 2, 0, respond=False)]


def test_without_barge_in_speech_over_the_reply_is_a_turn_of_its_own() -> None:
    t = Talk(CLIENT)
    t.bot(True)
    assert t.onset() == []  # no duck
    t.audio(120)
    assert t.start() == [emit("turn_started", turn=1)]
    t.audio(2000)
    assert t.bot(False) == [] and t.bot(True) == []  # nothing interrupts the reply
    assert not t.of(Interrupt) and not t.of(Duck) and not t.of(AskForWords)


def test_a_new_policy_takes_effect_at_the_next_input() -> None:
    t = Talk()
    t.taker.policy = CLIENT
    assert t.taker.endpointer.policy is CLIENT and t.taker.judge.policy is CLIENT
    t.utterance("Hello.")
    t.audio(3000)
    assert not t.of(ScoreTurn) and not t.of(EndTurn)


# --- the machines alone ----------------------------------------------------------------------


def test_the_endpointer_alone_reads_the_clock_it_is_given() -> None:
    hearing = Hearing(rate=RATE)
    e = Endpointer(POLICY, hearing, turn_model=False)
    hearing.speaking = True
    assert e.speech_started() == [emit("turn_started", turn=1)]
    hearing.heard, hearing.speaking = 10 * RATE, False
    e.paused(0)
    assert e.transcript_in()
    assert [type(d) for d in e.final("Hello.")] == [SendTurn, Emit]
    hearing.heard += (500 - 160) * MS - 1
    assert e.check() == []
    hearing.heard += 1
    assert EndTurn(1, "silence") in e.check()


def test_the_judge_alone_leaves_transcripts_without_a_candidate_to_the_turn() -> None:
    hearing = Hearing(rate=RATE, bot_speaking=True)
    judge = BargeInJudge(POLICY, hearing)
    assert judge.final("Hello.") is None
    hearing.onset_at, hearing.speaking = 0, True
    assert not judge.speech_started().turn and judge.judging
    hearing.heard = 300 * MS
    assert judge.audio().decisions == [AskForWords()]
    verdict = judge.final("Stop.")
    assert verdict is not None and verdict.turn and not judge.judging


def test_recent_audio_keeps_the_last_seconds_in_whole_chunks() -> None:
    recent = RecentAudio(RATE, seconds=1)
    assert len(recent.audio()) == 0
    for i in range(80):  # 1.6 s of 20 ms chunks
        recent.add(np.full(320, i, np.int16))
    audio = recent.audio()
    assert len(audio) == len(recent) == RATE
    assert audio[0] == 30 and audio[-1] == 79
