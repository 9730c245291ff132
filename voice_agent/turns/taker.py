"""Who holds the floor: the whole of turn-taking as one synchronous machine.

`TurnTaker` is what `TurnStage` feeds. It keeps the `Hearing` (the audio clock in samples,
where a sound began, whether the user and the assistant speak), routes each input to the two
machines that decide, and carries the hand-offs between them:

- the `Endpointer` (`endpointing.py`): the user's turn, when it ends, and its text sent early;
- the `BargeInJudge` (`barge_in.py`): speech over the assistant's reply.

Speech that starts while a turn is open resumes it; speech over the reply (with `barge_in` on)
is the judge's; any other speech is the endpointer's (it reopens the turn just ended, or opens
one). When the judge finds that speech over the reply is the user's turn (a confirmed
barge-in, or the reply ended under it), the endpointer opens that turn. When the endpointer
interrupts the reply (the user resumed a turn already sent), the judge learns that playback's
level is reset.

Two machines and a router rather than one machine: the two decide different things from
different evidence (the silence after speech and the turn model; the length and the words of
speech over the reply), share only what is heard, and hand off at two points. One class for
both held some thirty fields and read each other's; here each machine's state is its own, each
can be tested alone, and the hand-offs are the few lines below.

Every input returns the decisions it leads to (`decisions.py`), in order, as plain records:
no asyncio, no frames, no executor, like `audio/vad/activity.py`'s `VoiceActivity`.
"""

from __future__ import annotations

from voice_agent.turns.barge_in import BargeInJudge, Verdict
from voice_agent.turns.decisions import Decision, Interrupt
from voice_agent.turns.endpointing import Endpointer
from voice_agent.turns.hearing import Hearing
from voice_agent.turns.policy import TurnPolicy


class TurnTaker:
    """Turn-taking as a synchronous state machine (see the module docstring)."""

    def __init__(
        self, policy: TurnPolicy, turn_model: bool = True, sample_rate: int = 16000
    ) -> None:
        self.hearing = Hearing(rate=sample_rate)
        self.endpointer = Endpointer(policy, self.hearing, turn_model)
        self.judge = BargeInJudge(policy, self.hearing)
        self._policy = policy

    @property
    def policy(self) -> TurnPolicy:
        return self._policy

    @policy.setter
    def policy(self, policy: TurnPolicy) -> None:
        """Decide with `policy` from the next input on."""
        self._policy = self.endpointer.policy = self.judge.policy = policy

    @property
    def turn_open(self) -> bool:
        """A user's turn is going on."""
        return self.endpointer.open

    @property
    def finals_due(self) -> int:
        """Pauses whose final transcript has not come yet."""
        return self.endpointer.finals_due

    @property
    def commit_pending(self) -> bool:
        """The client has committed the turn; it ends once its transcripts are in."""
        return self.endpointer.commit_pending

    # --- inputs ------------------------------------------------------------------------------

    def audio(self, samples: int) -> list[Decision]:
        """`samples` more samples of the user's audio have been heard."""
        self.hearing.heard += samples
        return self._judged(self.judge.audio()) + self.endpointer.check()

    def onset(self) -> list[Decision]:
        """The VAD hears a sound that may be speech."""
        self.hearing.onset_at = self.hearing.heard
        return self.judge.onset()

    def false_onset(self) -> list[Decision]:
        """The sound was not speech."""
        self.hearing.onset_at = None
        return self.judge.false_onset() + self.endpointer.check()

    def speech_started(self) -> list[Decision]:
        """The VAD has the user speaking."""
        h = self.hearing
        h.speaking = True
        if h.onset_at is None:  # an onset is always reported first; be safe anyway
            h.onset_at = h.heard
        if self.endpointer.open or not (h.bot_speaking and self._policy.barge_in):
            return self._interrupting(self.endpointer.speech_started())
        return self._judged(self.judge.speech_started())

    def paused(self, silence_ms: int = 0) -> list[Decision]:
        """The VAD has the user paused, `silence_ms` after the speech ended."""
        h = self.hearing
        if not h.speaking:  # a stop without a start: no stretch, no transcript to wait for
            return []
        h.speaking, h.onset_at = False, None
        return self.endpointer.paused(silence_ms)

    def transcript(self, text: str, final: bool = True) -> list[Decision]:
        """A transcript of the user's speech: partial (while they speak), or the final one of
        a stretch (one per pause)."""
        if not final:
            return self._judged(self.judge.partial(text))
        out: list[Decision] = []
        if self.endpointer.transcript_in():
            verdict = self.judge.final(text)
            if verdict is None:
                out += self.endpointer.final(text)
            elif verdict.turn:
                out += self._judged(verdict) + self.endpointer.final(text)
            else:
                out += verdict.decisions
        return out + self.endpointer.finish_commit()

    def scored(self, pause: int, probability: float) -> list[Decision]:
        """The turn model's score for pause number `pause` (asked for by `ScoreTurn`)."""
        return self.endpointer.scored(pause, probability)

    def bot_started(self, interruption_pending: bool = False) -> list[Decision]:
        """The assistant's reply is being heard (`interruption_pending`: an interruption asked
        for has not come through yet)."""
        self.hearing.bot_speaking = True
        return self._interrupting(self.endpointer.bot_started(interruption_pending))

    def bot_stopped(self) -> list[Decision]:
        """The assistant's reply has ended."""
        self.hearing.bot_speaking = False
        return self._judged(self.judge.bot_stopped())

    def commit(self) -> list[Decision]:
        """The client ends the turn."""
        return self.endpointer.commit()

    def discard(self) -> list[Decision]:
        """The client forgets the turn."""
        return self.endpointer.discard()

    def input_ended(self) -> list[Decision]:
        """The input is over, every transcript in."""
        return self.endpointer.input_ended()

    # --- hand-offs ---------------------------------------------------------------------------

    def _judged(self, verdict: Verdict) -> list[Decision]:
        """The judge's decisions; and if the speech is the user's turn now, the turn's."""
        if verdict.turn:
            return verdict.decisions + self.endpointer.open_turn()
        return verdict.decisions

    def _interrupting(self, decisions: list[Decision]) -> list[Decision]:
        """The endpointer's decisions; an interruption among them resets the judge's duck."""
        if any(isinstance(d, Interrupt) for d in decisions):
            self.judge.reply_interrupted()
        return decisions
