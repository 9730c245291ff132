"""The barge-in judge: whether speech over the assistant's reply takes the floor.

Speech onset while the assistant speaks ducks its voice at once (`Duck`). A persona whose
backchannels interrupt yields once the speech has lasted its `min_interruption_ms` or the ASR
yields a word; otherwise it takes a word that is not a backchannel ("uh-huh", "yeah",
"right"; `lexicon.takes_the_floor`), asked of the ASR once the minimum has passed
(`AskForWords`), and from a partial transcript only once the speech has outlasted a backchannel
(`backchannel_max_ms`: Whisper's partial of a short "mm-hmm" can be words; the final is not
fooled so easily).

Confirmed: the pipeline is interrupted (`Interrupt`: playback reports what was heard, the
history keeps only that) and the speech becomes the user's turn. Not confirmed by the time the
speech pauses (a cough, an "uh-huh"): the voice comes back up and the reply goes on, nothing
lost. Speech that outlasts the reply (a quick "yes" to its question) is a turn. With the
policy's `barge_in` off the judge is never asked: the reply plays out, and speech over it is a
turn of its own.

`BargeInJudge` is a synchronous state machine, like `audio/vad/activity.py`'s `VoiceActivity`.
It does not open the user's turn itself: a `Verdict` whose `turn` is set says the speech is
the user's turn now, and `TurnTaker` hands it to the `Endpointer`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from voice_agent.events import (
    BargeInCandidate,
    Ducked,
    InterruptionConfirmed,
    InterruptionRejected,
    Unducked,
)
from voice_agent.turns.decisions import AskForWords, Decision, Duck, Emit, Interrupt
from voice_agent.turns.hearing import Hearing
from voice_agent.turns.lexicon import takes_the_floor, words
from voice_agent.turns.policy import TurnPolicy


@dataclass(slots=True)
class Verdict:
    """What the judge decided on one input."""

    decisions: list[Decision] = field(default_factory=list)
    turn: bool = False
    """The speech is the user's turn now (a barge-in confirmed, or the reply ended under it)."""


class BargeInJudge:
    """Tells a barge-in from a backchannel or a cough (see the module docstring).

    Reads the `Hearing` that `TurnTaker` keeps (the clock, where the sound began, whether the
    user and the assistant speak). A *candidate* is speech that started over the reply; it is
    judged until it is confirmed, rejected, or outlasts the reply.
    """

    def __init__(self, policy: TurnPolicy, hearing: Hearing) -> None:
        self.policy = policy
        self.hearing = hearing
        self._candidate = False
        self._asked = False
        """The ASR has been asked for the candidate's words."""
        self._early_words = ""
        """A partial with words that take the floor, heard before the speech outlasted a
        backchannel: it confirms the barge-in once the speech does."""
        self._ducked = False

    @property
    def judging(self) -> bool:
        """A barge-in candidate is being judged."""
        return self._candidate

    @property
    def ducked(self) -> bool:
        """The assistant's voice is down (as far as this judge has turned it down)."""
        return self._ducked

    # --- inputs ------------------------------------------------------------------------------

    def onset(self) -> list[Decision]:
        """A sound that may be speech has begun: over the reply, duck at once."""
        out: list[Decision] = []
        if self.hearing.bot_speaking and self.policy.barge_in:
            self._duck(True, "speech onset", out)
        return out

    def false_onset(self) -> list[Decision]:
        """The sound was not speech: the voice comes back up (unless a candidate holds it)."""
        out: list[Decision] = []
        if self._ducked and not self._candidate:
            self._duck(False, "false onset", out)
        return out

    def speech_started(self) -> Verdict:
        """Speech has started over the reply (and barge-in is on): a candidate."""
        out: list[Decision] = []
        self._candidate, self._asked, self._early_words = True, False, ""
        if not self._ducked:
            self._duck(True, "speech start", out)
        out.append(Emit(BargeInCandidate()))
        return self._check(out)

    def audio(self) -> Verdict:
        """The clock has moved: a candidate that has lasted long enough may be confirmed."""
        if self._candidate and self.hearing.speaking:
            return self._check([])
        return Verdict()

    def partial(self, text: str) -> Verdict:
        """A partial transcript: words that take the floor confirm the candidate once the
        speech has outlasted a backchannel (at once if backchannels interrupt)."""
        if self._candidate and takes_the_floor(text, self.policy.backchannels_interrupt):
            self._early_words = text
            return self._check([])
        return Verdict()

    def final(self, text: str) -> Verdict | None:
        """A final transcript. None: there is no candidate, the transcript is not the judge's.
        Otherwise the verdict: confirmed (`turn`), or not (the transcript is used up): the
        user has started again (that stretch is the candidate now), or the candidate is
        rejected and the voice comes back up."""
        if not self._candidate:
            return None
        out: list[Decision] = []
        if takes_the_floor(text, self.policy.backchannels_interrupt):
            return self._confirm("words", text, out)
        if self._early_words and not words(text):
            # the final heard nothing (Whisper's guards), a partial heard words: go by those
            return self._confirm("words", self._early_words, out)
        if self.hearing.speaking:  # they have started again: that stretch is the candidate now
            return Verdict(out)
        self._candidate = False
        out.append(Emit(InterruptionRejected(text=text)))
        if self._ducked:
            self._duck(False, "not an interruption", out)
        return Verdict(out)

    def bot_stopped(self) -> Verdict:
        """The reply has ended (playback restores the next reply's level itself). A candidate
        still going on outlasted it: it is a turn."""
        self._ducked = False
        if self._candidate:
            self._candidate = False
            return Verdict(turn=True)
        return Verdict()

    def reply_interrupted(self) -> None:
        """Someone else interrupted the reply: the interruption resets playback's level."""
        self._ducked = False

    # --- decisions ---------------------------------------------------------------------------

    def _check(self, out: list[Decision]) -> Verdict:
        h, policy = self.hearing, self.policy
        heard = h.speech_samples
        if self._early_words and (
            policy.backchannels_interrupt or heard >= h.samples(policy.backchannel_max_ms)
        ):
            return self._confirm("words", self._early_words, out)
        if heard < h.samples(policy.min_interruption_ms):
            return Verdict(out)
        if policy.backchannels_interrupt:
            return self._confirm("duration", "", out)
        if not self._asked:  # long enough: does it have words that take the floor?
            self._asked = True
            out.append(AskForWords())
        return Verdict(out)

    def _confirm(self, by: str, text: str, out: list[Decision]) -> Verdict:
        speech_ms = self.hearing.ms(self.hearing.speech_samples)
        self._candidate = False
        self._ducked = False  # the interruption resets playback's level
        out.append(Interrupt("barge-in"))
        out.append(Emit(InterruptionConfirmed(by=by, speech_ms=speech_ms, text=text)))
        return Verdict(out, turn=True)

    def _duck(self, on: bool, why: str, out: list[Decision]) -> None:
        self._ducked = on
        db = self.policy.duck_db if on else 0.0
        out.append(Duck(db))
        out.append(Emit((Ducked if on else Unducked)(db=db, why=why)))
