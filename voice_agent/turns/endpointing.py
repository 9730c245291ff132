"""The endpointer: when the user's turn ends, and giving the LLM its text before it has.

- **End of turn.** At a pause (the VAD's `stop_ms` of silence) the Smart Turn model scores the
  last 8 s of audio. A turn that sounds finished ends once the silence has lasted the persona's
  `endpoint_silence_ms`; one that sounds unfinished ("my number is four one five...") waits
  `unfinished_silence_ms`, and so does one whose transcript stops on a word no sentence ends on
  ("I'd like to order a"): the model hears intonation, and a voice can say a fragment as if it
  were finished. A turn the ASR wrote as a whole question ends after the short silence when the
  model gives it at least `QUESTION_FLOOR`. Without a turn model the short silence ends every
  turn; with one that has not answered, the long silence does ("turn model late"). Silence is
  counted in audio samples (`Hearing`), not on a wall clock, so a decision depends only on the
  audio. A sound that begins before the endpoint holds it until the VAD has decided whether it
  is speech.
- **Preemptive reply.** At the pause, as soon as the ASR's final transcript is in, the turn's
  text goes to the LLM (`SendTurn`, a `UserTurnFrame`): the reply is generated and synthesized
  while the endpoint is still being decided, and playback holds its audio until `EndTurn`. If
  the user goes on talking (the turn *resumes*), the reply is interrupted and a later send with
  the whole turn `replaces` it under a new id (the LLM stage drops the earlier one from the
  history). Speech that starts after the end of turn, before the reply is heard and within
  `unfinished_silence_ms`, also *reopens* the turn.
- **Client-decided turns** (the realtime API, `voice_agent/openai_realtime/`). With the policy's
  `auto_end` off, a turn ends only when the client commits it (`commit`, once its transcripts
  are in), and `discard` forgets it and the transcripts its speech has still to yield; with
  `auto_reply` off, an ended turn joins the conversation unanswered (`respond` False) until the
  client asks for a reply (held until a pending commit is done: `ReleaseRequests`), and nothing
  is sent preemptively.

`Endpointer` is a synchronous state machine, like `audio/vad/activity.py`'s `VoiceActivity`:
each input is a method that returns the decisions it leads to (`decisions.py`), in order. It
never waits: it asks for the turn model's score (`ScoreTurn`), the score comes back later as an
input (`scored`), and the silence keeps counting meanwhile.
"""

from __future__ import annotations

from dataclasses import dataclass

from voice_agent.events import (
    EndOfTurn,
    PreemptionCancelled,
    TurnDiscarded,
    TurnModelScore,
    TurnReopened,
    TurnResumed,
    TurnStarted,
    UserTurnSent,
)
from voice_agent.turns.decisions import (
    Decision,
    DropRequests,
    Emit,
    EndTurn,
    Interrupt,
    ReleaseRequests,
    ScoreTurn,
    SendTurn,
)
from voice_agent.turns.hearing import Hearing
from voice_agent.turns.lexicon import asks, hangs
from voice_agent.turns.policy import TurnPolicy

QUESTION_FLOOR = 0.5
"""A turn the ASR wrote as a question ("...weekend hike?") is finished when the turn model gives
it at least this. Whisper puts the question mark on a whole question only, and the model,
which hears intonation, scores some finished questions well below its threshold once they have
been through a codec (WebRTC's Opus: 0.85 for "What should I pack for a weekend hike?")."""


@dataclass(slots=True)
class _Ended:
    """A turn that has ended but whose reply has not been heard yet: speech now reopens it."""

    turn: int
    segments: list[str]
    at: int
    """Where it ended, on the audio clock."""


class Endpointer:
    """Decides when the user's turn ends (see the module docstring).

    Reads the `Hearing` that `TurnTaker` keeps (the clock, whether the user speaks), and is
    told the rest: pauses and resumptions, final transcripts, the turn model's scores, the
    client's commits. Speech over the reply is the `BargeInJudge`'s until it becomes a turn
    (`open_turn`).
    """

    def __init__(self, policy: TurnPolicy, hearing: Hearing, turn_model: bool = True) -> None:
        self.policy = policy
        self.hearing = hearing
        self.turn_model = turn_model
        """Whether a turn model scores each pause (`ScoreTurn`); without one, the finished-turn
        silence ends every turn."""
        self._ids = 0
        self._turn = 0
        """The id of the current (or last) turn; a reopened or resumed turn gets a new one."""
        self._open = False
        self._segments: list[str] = []
        self._sent: tuple[int, str] | None = None
        """(id, text) of the turn's text sent for the open turn, if any."""
        self._finals_due = 0
        """Pauses whose final transcript has not come yet."""
        self._quiet_since = 0
        """Where (on the clock) the speech last stopped."""
        self._endpointing = False
        """Paused in an open turn: the silence since `_quiet_since` is counting."""
        self._pause = 0
        self._endpoint_ms: int | None = None
        """The silence that ends the turn, once the turn model has said how it sounded."""
        self._probability: float | None = None
        self._ended: _Ended | None = None
        self._commit_due = False
        """The client has ended the turn: it ends once its transcripts are in."""
        self._skip_finals = 0
        """Transcripts still to come of speech the client has discarded."""

    # --- what it tells -----------------------------------------------------------------------

    @property
    def open(self) -> bool:
        """A user's turn is going on (not ended, not discarded)."""
        return self._open

    @property
    def turn(self) -> int:
        """The id of the current (or last) turn: what its frames and events carry."""
        return self._turn

    @property
    def text(self) -> str:
        """What the user has said in the open turn so far (final transcripts joined)."""
        return " ".join(self._segments).strip()

    @property
    def counting(self) -> bool:
        """Paused in an open turn: the silence is counting towards its end."""
        return self._endpointing

    @property
    def finals_due(self) -> int:
        """Pauses whose final transcript has not come yet."""
        return self._finals_due

    @property
    def commit_pending(self) -> bool:
        """The client has committed the turn; it ends once its transcripts are in."""
        return self._commit_due

    # --- inputs ------------------------------------------------------------------------------

    def bot_started(self, interruption_pending: bool) -> list[Decision]:
        """The assistant's reply is being heard: speech from now on is no longer the ended
        turn's. A reply that starts over a user speaking in an open turn (an old one) is
        interrupted, unless an interruption is already on its way."""
        self._ended = None
        if (
            self.policy.barge_in
            and self._open
            and self.hearing.speaking
            and not interruption_pending
        ):
            return [Interrupt("user is speaking")]
        return []

    def speech_started(self) -> list[Decision]:
        """The user has started speaking (and not over the reply, or barge-in is off): the
        open turn resumes, the turn that has just ended reopens, or a new turn opens."""
        out: list[Decision] = []
        self._endpointing = False
        h = self.hearing
        if self._open:
            out.append(Emit(TurnResumed(turn=self._turn)))
            if self._sent is not None and self._sent[1]:
                out.append(Emit(PreemptionCancelled(turn=self._sent[0])))
                out.append(Interrupt("user resumed"))
                self._sent = (self._sent[0], "")  # its reply is gone: send the turn again
        elif (
            self.policy.auto_end
            and self._ended is not None
            and h.heard - self._ended.at < h.samples(self.policy.unfinished_silence_ms)
        ):
            ended, self._ended = self._ended, None
            out.append(Interrupt("user resumed"))
            self._open_turn(ended.segments, out, sent=ended.turn)
            out.append(Emit(TurnReopened(turn=ended.turn)))
        else:
            self._open_turn([], out)
        return out

    def paused(self, silence_ms: int) -> list[Decision]:
        """The user has paused (the VAD said so `silence_ms` after the speech ended; at least
        the policy's `pause_ms`): its final transcript is due, and an open turn's silence
        starts counting."""
        h = self.hearing
        self._quiet_since = h.heard - h.samples(max(silence_ms, self.policy.pause_ms))
        self._finals_due += 1
        out: list[Decision] = []
        if self._open:
            self._start_endpointing(out)
        return out

    def open_turn(self) -> list[Decision]:
        """The speech going on (or just paused) is a new turn: a confirmed barge-in, or speech
        the reply ended under. Its silence counts at once if the user has paused."""
        out: list[Decision] = []
        self._open_turn([], out)
        if not self.hearing.speaking:  # confirmed by the pause's final transcript
            self._start_endpointing(out)
        return out

    def transcript_in(self) -> bool:
        """A final transcript has come: count it. False if it is of speech the client has
        discarded (it is to be ignored)."""
        self._finals_due = max(0, self._finals_due - 1)
        if self._skip_finals:
            self._skip_finals -= 1
            return False
        return True

    def final(self, text: str) -> list[Decision]:
        """A final transcript (counted by `transcript_in`) joins the open turn; once the
        user has paused and every transcript is in, the turn is sent preemptively and may
        end."""
        out: list[Decision] = []
        if not self._open:
            return out
        if text:
            self._segments.append(text)
        if not self.hearing.speaking and self._finals_due == 0:
            if self.policy.preemptive_reply and self.policy.auto_reply:
                self._send("preemptive", out)
            self._maybe_end_turn(out)
        return out

    def scored(self, pause: int, probability: float) -> list[Decision]:
        """The turn model's verdict on pause number `pause` (moot if the user has spoken
        since, or the turn is over)."""
        out: list[Decision] = []
        if pause != self._pause or not self._open or self.hearing.speaking:
            return out
        finished = probability >= self.policy.smart_turn_threshold
        self._probability = probability
        self._endpoint_ms = (
            self.policy.endpoint_silence_ms if finished else self.policy.unfinished_silence_ms
        )
        out.append(Emit(TurnModelScore(probability=round(probability, 3), finished=finished)))
        self._maybe_end_turn(out)
        return out

    def check(self) -> list[Decision]:
        """The clock has moved, or a sound turned out not to be speech: end the turn if its
        silence has lasted long enough."""
        out: list[Decision] = []
        self._maybe_end_turn(out)
        return out

    def commit(self) -> list[Decision]:
        """The client ends the turn: now, or once its transcripts are in."""
        self._commit_due = True
        return self.finish_commit()

    def finish_commit(self) -> list[Decision]:
        """End the turn the client has committed, if its last transcript is in."""
        out: list[Decision] = []
        if not self._commit_due or self._finals_due:
            return out
        self._commit_due = False
        if self._open:
            self._end_turn("committed", out)
        out.append(ReleaseRequests())
        return out

    def discard(self) -> list[Decision]:
        """The client forgets the open turn and the transcripts its speech has still to yield."""
        out: list[Decision] = [DropRequests()]
        self._skip_finals = self._finals_due
        self._commit_due = False
        if self._open:
            out.append(Emit(TurnDiscarded(turn=self._turn)))
        self._open, self._segments, self._sent, self._endpointing = False, [], None, False
        return out

    def input_ended(self) -> list[Decision]:
        """The input is over (every transcript in): an open turn ends."""
        out: list[Decision] = []
        if self._open:
            self._end_turn("input ended", out)
        return out

    # --- decisions ---------------------------------------------------------------------------

    def _open_turn(self, segments: list[str], out: list[Decision], sent: int = 0) -> None:
        """A new turn; or, with `sent`, the turn of that id reopened (its next send gets a new
        id that replaces it)."""
        self._open, self._segments = True, list(segments)
        self._sent = (sent, "") if sent else None
        if sent:
            self._turn = sent
        else:
            self._ids += 1
            self._turn = self._ids
            out.append(Emit(TurnStarted(turn=self._turn)))

    def _start_endpointing(self, out: list[Decision]) -> None:
        """The user has paused: count the silence, and ask the turn model how it sounded."""
        if not self.policy.auto_end:
            return
        self._endpointing = True
        self._pause += 1
        self._endpoint_ms, self._probability = None, None
        if not self.turn_model:
            self._endpoint_ms = self.policy.endpoint_silence_ms
        else:
            out.append(ScoreTurn(self._pause))

    def _send(self, how: str, out: list[Decision]) -> None:
        """Give the LLM the turn's text (again, if it changed: the new one replaces the old)."""
        text = self.text
        if not text or (self._sent is not None and self._sent[1] == text):
            return
        replaces = 0
        if self._sent is not None:
            replaces = self._sent[0]
            self._ids += 1
            self._turn = self._ids
        self._sent = (self._turn, text)
        out.append(SendTurn(text, self._turn, replaces, respond=self.policy.auto_reply))
        out.append(Emit(UserTurnSent(turn=self._turn, how=how, replaces=replaces, text=text)))

    def _maybe_end_turn(self, out: list[Decision]) -> None:
        h, policy = self.hearing, self.policy
        if not self._open or h.speaking or not self._endpointing or self._finals_due:
            return
        if h.onset_at is not None:  # a sound has begun: wait for the VAD's verdict
            return
        silence_ms = h.ms(h.heard - self._quiet_since)
        if self._endpoint_ms is None:  # the turn model has not answered yet
            if silence_ms >= policy.unfinished_silence_ms:
                self._end_turn("silence (turn model late)", out)
            return
        text = " ".join(self._segments)
        endpoint_ms, hanging = self._endpoint_ms, hangs(text)
        question = (
            asks(text) and self._probability is not None and self._probability >= QUESTION_FLOOR
        )
        if hanging:
            endpoint_ms = max(endpoint_ms, policy.unfinished_silence_ms)
        elif question:
            endpoint_ms = min(endpoint_ms, policy.endpoint_silence_ms)
        if silence_ms >= endpoint_ms:
            if hanging:
                reason = "long silence after unfinished words"
            elif self._probability is None:
                reason = "silence"
            elif self._probability < policy.smart_turn_threshold and question:
                reason = "finished question"
            elif endpoint_ms == policy.endpoint_silence_ms:
                reason = "finished turn"
            else:
                reason = "long silence after an unfinished turn"
            self._end_turn(reason, out)

    def _end_turn(self, reason: str, out: list[Decision]) -> None:
        self._send("at end of turn", out)
        text = self.text
        self._open, self._endpointing = False, False
        out.append(EndTurn(self._turn, reason))
        probability = None if self._probability is None else round(self._probability, 3)
        out.append(
            Emit(EndOfTurn(turn=self._turn, reason=reason, probability=probability, text=text))
        )
        self._ended = _Ended(self._turn, self._segments, self.hearing.heard) if text else None
        self._sent = None
