"""Turn-taking: when the user's turn ends, replying early, and telling a barge-in from a cough.

`TurnStage` sits between the ASR and the LLM. It sees the VAD's decisions (speech onset, start,
pause), the user's audio, the ASR's transcripts, and, coming back up from the output, whether
the assistant is speaking. It decides:

- **End of turn.** At a pause (the VAD's `stop_ms` of silence) the Smart Turn model scores the
  last 8 s of audio. A turn that sounds finished ends once the silence has lasted the persona's
  `endpoint_silence_ms`; one that sounds unfinished ("my number is four one five...") waits
  `unfinished_silence_ms`, and so does one whose transcript stops on a word no sentence ends on
  ("I'd like to order a"): the model hears intonation, and a voice can say a fragment as if it
  were finished. Silence is counted in audio samples, not on a wall clock, so a
  decision depends only on the audio (transports deliver audio continuously, silence included).
- **Preemptive reply.** At the pause, as soon as the ASR's final transcript is in, the turn's
  text goes to the LLM (`UserTurnFrame`): the reply is generated and synthesized while the
  endpoint is still being decided, and playback holds its audio until `EndOfTurnFrame`. If the
  user goes on talking, the reply is interrupted and a later `UserTurnFrame` with the whole turn
  `replaces` it (the LLM stage drops the earlier one from the history). Speech that starts
  after the end of turn, before the reply is heard and within `unfinished_silence_ms`, also
  reopens the turn.
- **Barge-in.** Speech onset while the assistant speaks ducks its voice at once
  (`DuckOutputFrame`). A persona whose backchannels interrupt yields once the speech has lasted
  its `min_interruption_ms` or the ASR yields a word; otherwise it takes a word that is not a
  backchannel ("uh-huh", "yeah", "right"), asked of the ASR once the minimum has passed, and
  from a partial transcript only once the speech has outlasted a backchannel
  (`backchannel_max_ms`: Whisper's partial of a short "mm-hmm" can be words; the final is not
  fooled so easily).
  Confirmed: the pipeline is interrupted (playback reports what was heard, the history keeps
  only that) and the speech becomes the user's turn. Not confirmed by the time the speech pauses
  (a cough, an "uh-huh"): the voice comes back up and the reply goes on, nothing lost. Speech
  that outlasts the reply (a quick "yes" to its question) is a turn.

- **Client-decided turns** (the realtime API, `voice_agent/realtime/`). With the policy's
  `auto_end` off, a turn ends only when a `CommitTurnFrame` comes (once its transcripts are
  in), and a `DiscardTurnFrame` forgets it; with `auto_reply` off, an ended turn joins the
  conversation unanswered until a `ResponseRequestFrame` (held until a pending commit is done);
  with `barge_in` off, speech over a reply never interrupts it and is a turn of its own.

Decisions sent downstream while an interruption this stage asked for is on its way follow it
(`Stage.request_interruption`): sent at once, they would reach the LLM first and be cut by it.

Every decision is an event (`Stage.emit`, monotonic ns) for the metrics timeline.
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from voice_agent.config import Settings
from voice_agent.executor import Priority, Runner
from voice_agent.frames import (
    PCM,
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
    ResponseRequestFrame,
    SpeechOnsetFrame,
    SystemFrame,
    TranscriptionFrame,
    TranscriptRequestFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
    UserTurnFrame,
)
from voice_agent.persona import Persona
from voice_agent.pipeline import UP, Stage

TURN_MODEL_WINDOW_S = 8
"""Audio the turn model looks at: the last 8 s."""

BACKCHANNELS = frozenset(
    {
        *("uh", "huh", "uh-huh", "mm", "mhm", "mm-hmm", "hmm", "hm", "um", "oh", "ah", "aha"),
        *("yeah", "yes", "yep", "yup", "ya", "right", "okay", "ok", "sure", "alright"),
        *("i", "see", "got", "it", "cool", "nice", "wow", "really"),
    }
)
"""Words that, on their own, keep the listener listening rather than take the floor."""

_NON_SPEECH = re.compile(r"\[[^\]]*\]|\([^)]*\)|\*[^*]*\*")
"""What Whisper writes for sounds: [cough], (laughs), *sigh*."""


def words(text: str) -> list[str]:
    """The spoken words of a transcript, lower case, without punctuation or sound labels."""
    text = _NON_SPEECH.sub(" ", text.lower())
    return [w for w in (t.strip(".,!?;:\"'…-") for t in text.split()) if w]


HANGING = frozenset(
    {
        *("a", "an", "the", "my", "your", "his", "her", "our", "their", "its"),
        *("to", "of", "for", "at", "with", "from", "about", "by", "into", "than"),
        *("and", "or", "but", "because", "if", "when", "while", "although", "unless"),
        *("is", "are", "was", "were", "am", "be", "could", "would", "should", "can", "will"),
        *("um", "uh", "er"),
    }
)
"""Words a finished statement does not end on: a turn whose transcript ends on one (and not
on a question or exclamation mark: "Who is it for?") waits the longer silence whatever the
turn model says, for the model hears intonation, not grammar. Particles that end commands
("turn it on", "log in") are left out."""


def hangs(text: str) -> bool:
    """Whether a transcript stops on a word that needs more after it ("...order a")."""
    ws = words(text)
    return bool(ws) and ws[-1] in HANGING and not text.rstrip().endswith(("?", "!"))


QUESTION_FLOOR = 0.5
"""A turn the ASR wrote as a question ("...weekend hike?") is finished when the turn model gives
it at least this. Whisper puts the question mark on a whole question only, and the model,
which hears intonation, scores some finished questions well below its threshold once they have
been through a codec (WebRTC's Opus: 0.85 for "What should I pack for a weekend hike?")."""


def asks(text: str) -> bool:
    """Whether a transcript is a whole question: it ends with a question mark, and not on a
    word that needs more after it (Whisper wrote "Can you tell me about the?" once)."""
    ws = words(text)
    return text.rstrip().endswith("?") and bool(ws) and ws[-1] not in HANGING


def takes_the_floor(text: str, backchannels_interrupt: bool) -> bool:
    """Whether a transcript heard while the assistant speaks is an interruption."""
    ws = words(text)
    if backchannels_interrupt:
        return bool(ws)
    return any(w not in BACKCHANNELS for w in ws)


@dataclass(frozen=True, slots=True)
class TurnPolicy:
    """The numbers `TurnStage` decides with (settings, tightened by the persona)."""

    endpoint_silence_ms: int = 500
    unfinished_silence_ms: int = 1500
    smart_turn_threshold: float = 0.94
    preemptive_reply: bool = True
    min_interruption_ms: int = 300
    backchannel_max_ms: int = 700
    backchannels_interrupt: bool = False
    duck_db: float = 24.0
    pause_ms: int = 160
    """The VAD's `stop_ms`: silence that has already passed when a pause is reported."""
    auto_end: bool = True
    """The stage decides when a turn ends; False: the client does (`CommitTurnFrame`)."""
    auto_reply: bool = True
    """A turn that ends is answered; False: it joins the conversation, unanswered until the
    client asks (`ResponseRequestFrame`), and nothing is answered preemptively."""
    barge_in: bool = True
    """Speech over the assistant may interrupt it; False: the reply plays out, and the speech
    is a turn of its own."""

    @classmethod
    def of(cls, settings: Settings, persona: Persona) -> TurnPolicy:
        """The settings' policy, with what the persona's file sets taking precedence."""
        t, mine = persona.turn_taking, persona.turn_taking.model_fields_set
        endpoint = (
            t.endpoint_silence_ms
            if "endpoint_silence_ms" in mine
            else settings.turns.endpoint_silence_ms
        )
        return cls(
            endpoint_silence_ms=endpoint,
            unfinished_silence_ms=max(endpoint, settings.turns.unfinished_silence_ms),
            smart_turn_threshold=settings.turns.smart_turn_threshold,
            preemptive_reply=settings.turns.preemptive_reply,
            min_interruption_ms=(
                t.min_interruption_ms
                if "min_interruption_ms" in mine
                else settings.turns.min_interruption_ms
            ),
            backchannel_max_ms=settings.turns.backchannel_max_ms,
            backchannels_interrupt=t.backchannels_interrupt,
            duck_db=settings.turns.duck_db,
            pause_ms=settings.vad.stop_ms,
        )


@dataclass(slots=True, kw_only=True)
class _TurnModelScore(SystemFrame):
    """The turn model's verdict on pause number `pause`, sent by the stage to itself."""

    pause: int
    probability: float


@dataclass(slots=True)
class _Ended:
    """A turn that has ended but whose reply has not been heard yet: speech now reopens it."""

    turn: int
    segments: list[str]
    at: int
    """Where it ended, on the stage's clock."""


TurnModel = Callable[[PCM], float]
"""Audio of the last seconds -> probability that the turn is complete."""


class TurnStage(Stage):
    """Decides when the user's turn ends and whether they are barging in (module docstring)."""

    def __init__(
        self,
        policy: TurnPolicy,
        executor: Runner,
        turn_model: TurnModel | None = None,
        sample_rate: int = 16000,
    ) -> None:
        super().__init__("turns")
        self.policy = policy
        self.executor = executor
        self.turn_model = turn_model
        self.rate = sample_rate
        self._audio: deque[PCM] = deque()
        self._audio_len = 0
        self._heard = 0
        """Samples of audio so far: the stage's clock."""
        self._quiet_since = 0
        """Where (on that clock) the speech last stopped."""
        self._ids = 0
        self._turn = 0
        """The id of the current (or last) turn; a reopened or resumed turn gets a new one."""
        self._open = False
        self._segments: list[str] = []
        self._sent: tuple[int, str] | None = None
        """(id, text) of the UserTurnFrame sent for the open turn, if any."""
        self._finals_due = 0
        self._finals_in = asyncio.Event()
        self._finals_in.set()
        self._speaking = False
        self._onset_at: int | None = None
        """Where a sound that may be speech began (None: no such sound going on)."""
        self._endpointing = False
        """Paused in an open turn: the silence since `_quiet_since` is counting."""
        self._pause = 0
        self._endpoint_ms: int | None = None
        self._probability: float | None = None
        self._bot_speaking = False
        self._ducked = False
        self._barge = False
        self._requested_words = False
        self._early_words = ""
        """A partial with words that take the floor, heard before the speech outlasted a
        backchannel: it confirms the barge-in once the speech does."""
        self._ended: _Ended | None = None
        self._scoring: asyncio.Task[None] | None = None
        self._commit_due = False
        """The client has ended the turn: it ends once its transcripts are in."""
        self._skip_finals = 0
        """Transcripts still to come of speech the client has discarded."""
        self._requests: list[ResponseRequestFrame] = []
        """Requests for a reply that came while a commit waited: they follow the turn."""

    # --- frames ------------------------------------------------------------------------------

    async def process(self, frame: Frame, direction: Direction) -> None:
        if direction is UP:
            if isinstance(frame, BotStartedSpeakingFrame):
                self._bot_speaking = True
                self._ended = None  # the reply is being heard: speech now is a barge-in
                if (
                    self.policy.barge_in
                    and self._open
                    and self._speaking
                    and not self.interruption_pending
                ):
                    self._request_interruption("user is speaking")  # an old reply, over them
            elif isinstance(frame, BotStoppedSpeakingFrame):
                self._on_bot_stopped()
            await self.push(frame, direction)
        elif isinstance(frame, InputAudioFrame):
            self._on_audio(frame.pcm)
        elif isinstance(frame, SpeechOnsetFrame):
            self._onset_at = self._heard
            if self._bot_speaking and self.policy.barge_in:
                self._duck(True, "speech onset")
        elif isinstance(frame, FalseOnsetFrame):
            self._onset_at = None
            if self._ducked and not self._barge:
                self._duck(False, "false onset")
            self._maybe_end_turn()
        elif isinstance(frame, UserStartedSpeakingFrame):
            await self.push(frame, direction)
            self._on_start()
        elif isinstance(frame, UserStoppedSpeakingFrame):
            await self.push(frame, direction)
            self._on_pause(frame.silence_ms)
        elif isinstance(frame, TranscriptionFrame):
            await self.push(frame, direction)
            self._on_transcript(frame)
        elif isinstance(frame, _TurnModelScore):
            self._on_score(frame)
        elif isinstance(frame, CommitTurnFrame):
            self._commit_due = True
            self._commit()
        elif isinstance(frame, DiscardTurnFrame):
            self._discard()
        elif isinstance(frame, ResponseRequestFrame) and self._commit_due:
            self._requests.append(frame)
        elif isinstance(frame, EndFrame):
            await self._finals_in.wait()
            if self._open:
                self._end_turn("input ended")
            await self.push(frame, direction)
        else:
            await self.push(frame, direction)

    def _on_bot_stopped(self) -> None:
        self._bot_speaking = False
        self._ducked = False  # playback restores the level of the next reply itself
        if self._barge:  # the assistant finished while they spoke: that speech is a turn
            self._barge = False
            self._open_turn([])
            if not self._speaking:
                self._start_endpointing()

    def _on_audio(self, pcm: PCM) -> None:
        self._heard += len(pcm)
        self._audio.append(pcm)
        self._audio_len += len(pcm)
        keep = TURN_MODEL_WINDOW_S * self.rate
        while self._audio_len - len(self._audio[0]) >= keep:
            self._audio_len -= len(self._audio.popleft())
        if self._barge and self._speaking:
            self._check_barge_duration()
        if self._endpointing:
            self._maybe_end_turn()

    def _on_start(self) -> None:
        self._speaking = True
        self._endpointing = False
        if self._onset_at is None:  # an onset is always reported first; be safe anyway
            self._onset_at = self._heard
        if self._open:
            self.emit("turn_resumed", turn=self._turn)
            if self._sent is not None and self._sent[1]:
                self.emit("preemption_cancelled", turn=self._sent[0])
                self._request_interruption("user resumed")
                self._sent = (self._sent[0], "")  # its reply is gone: send the turn again
        elif self._bot_speaking and self.policy.barge_in:
            self._barge, self._requested_words, self._early_words = True, False, ""
            if not self._ducked:
                self._duck(True, "speech start")
            self.emit("barge_in_candidate")
            self._check_barge_duration()
        elif (
            self.policy.auto_end
            and self._ended is not None
            and self._heard - self._ended.at < self._ms(self.policy.unfinished_silence_ms)
        ):
            ended, self._ended = self._ended, None
            self._request_interruption("user resumed")
            self._open_turn(ended.segments, sent=ended.turn)
            self.emit("turn_reopened", turn=ended.turn)
        else:
            self._open_turn([])

    def _on_pause(self, silence_ms: int) -> None:
        if not self._speaking:  # a stop without a start: no stretch, no transcript to wait for
            return
        self._speaking = False
        self._onset_at = None
        self._quiet_since = self._heard - self._ms(max(silence_ms, self.policy.pause_ms))
        self._finals_due += 1
        self._finals_in.clear()
        if self._open:
            self._start_endpointing()

    def _start_endpointing(self) -> None:
        """The user has paused: count the silence, and ask the turn model how it sounded."""
        if not self.policy.auto_end:
            return
        self._endpointing = True
        self._pause += 1
        self._endpoint_ms, self._probability = None, None
        if self.turn_model is None:
            self._endpoint_ms = self.policy.endpoint_silence_ms
        else:
            audio = np.concatenate(list(self._audio)) if self._audio else np.zeros(0, np.int16)
            if self._scoring is not None:  # an earlier pause's verdict is moot now
                self._scoring.cancel()
            self._scoring = self.create_task(
                self._score(self._pause, audio), f"turn-model-{self._pause}"
            )

    def _on_transcript(self, frame: TranscriptionFrame) -> None:
        if not frame.final:
            if self._barge and takes_the_floor(frame.text, self.policy.backchannels_interrupt):
                self._early_words = frame.text
                self._check_barge_duration()
            return
        self._finals_due = max(0, self._finals_due - 1)
        if self._finals_due == 0:
            self._finals_in.set()
        if self._skip_finals:
            self._skip_finals -= 1
        else:
            self._on_final(frame)
        self._commit()

    def _on_final(self, frame: TranscriptionFrame) -> None:
        if self._barge:
            if takes_the_floor(frame.text, self.policy.backchannels_interrupt):
                self._confirm_barge("words", frame.text)
            elif self._early_words and not words(frame.text):
                # the final heard nothing (Whisper's guards), a partial heard words: go by those
                self._confirm_barge("words", self._early_words)
            elif self._speaking:  # they have started again: that stretch is the candidate now
                return
            else:
                self._barge = False
                self.emit("interruption_rejected", text=frame.text)
                if self._ducked:
                    self._duck(False, "not an interruption")
                return
        if not self._open:
            return
        if frame.text:
            self._segments.append(frame.text)
        if not self._speaking and self._finals_due == 0:
            if self.policy.preemptive_reply and self.policy.auto_reply:
                self._send("preemptive")
            self._maybe_end_turn()

    def _commit(self) -> None:
        """End the turn the client has committed, once its last transcript is in."""
        if not self._commit_due or self._finals_due:
            return
        self._commit_due = False
        if self._open:
            self._end_turn("committed")
        requests, self._requests = self._requests, []
        for request in requests:
            self.push_nowait(request)

    def _discard(self) -> None:
        """Forget the open turn and the transcripts its speech has still to yield."""
        self._skip_finals = self._finals_due
        self._commit_due, self._requests = False, []
        if self._open:
            self.emit("turn_discarded", turn=self._turn)
        self._open, self._segments, self._sent, self._endpointing = False, [], None, False

    def _on_score(self, frame: _TurnModelScore) -> None:
        if frame.pause != self._pause or not self._open or self._speaking:
            return
        finished = frame.probability >= self.policy.smart_turn_threshold
        self._probability = frame.probability
        self._endpoint_ms = (
            self.policy.endpoint_silence_ms if finished else self.policy.unfinished_silence_ms
        )
        self.emit("turn_model", probability=round(frame.probability, 3), finished=finished)
        self._maybe_end_turn()

    # --- decisions ---------------------------------------------------------------------------

    def _open_turn(self, segments: list[str], sent: int = 0) -> None:
        """A new turn; or, with `sent`, the turn of that id reopened (its next send gets a new
        id that replaces it)."""
        self._open, self._segments = True, list(segments)
        self._sent = (sent, "") if sent else None
        if sent:
            self._turn = sent
        else:
            self._ids += 1
            self._turn = self._ids
            self.emit("turn_started", turn=self._turn)

    def _send(self, how: str) -> None:
        """Give the LLM the turn's text (again, if it changed: the new one replaces the old)."""
        text = " ".join(self._segments).strip()
        if not text or (self._sent is not None and self._sent[1] == text):
            return
        replaces = 0
        if self._sent is not None:
            replaces = self._sent[0]
            self._ids += 1
            self._turn = self._ids
        self._sent = (self._turn, text)
        respond = self.policy.auto_reply
        self.push_nowait(
            UserTurnFrame(text=text, turn=self._turn, replaces=replaces, respond=respond)
        )
        self.emit("user_turn_sent", turn=self._turn, how=how, replaces=replaces, text=text)

    def _maybe_end_turn(self) -> None:
        if not self._open or self._speaking or not self._endpointing or self._finals_due:
            return
        if self._onset_at is not None:  # a sound has begun: wait for the VAD's verdict
            return
        silence_ms = 1000 * (self._heard - self._quiet_since) // self.rate
        if self._endpoint_ms is None:  # the turn model has not answered yet
            if silence_ms >= self.policy.unfinished_silence_ms:
                self._end_turn("silence (turn model late)")
            return
        text = " ".join(self._segments)
        endpoint_ms, hanging = self._endpoint_ms, hangs(text)
        question = (
            asks(text) and self._probability is not None and self._probability >= QUESTION_FLOOR
        )
        if hanging:
            endpoint_ms = max(endpoint_ms, self.policy.unfinished_silence_ms)
        elif question:
            endpoint_ms = min(endpoint_ms, self.policy.endpoint_silence_ms)
        if silence_ms >= endpoint_ms:
            if hanging:
                reason = "long silence after unfinished words"
            elif self._probability is None:
                reason = "silence"
            elif self._probability < self.policy.smart_turn_threshold and question:
                reason = "finished question"
            elif endpoint_ms == self.policy.endpoint_silence_ms:
                reason = "finished turn"
            else:
                reason = "long silence after an unfinished turn"
            self._end_turn(reason)

    def _end_turn(self, reason: str) -> None:
        self._send("at end of turn")
        text = " ".join(self._segments).strip()
        self._open, self._endpointing = False, False
        self.push_nowait(EndOfTurnFrame(turn=self._turn, reason=reason))
        self.emit(
            "end_of_turn",
            turn=self._turn,
            reason=reason,
            probability=None if self._probability is None else round(self._probability, 3),
            text=text,
        )
        self._ended = _Ended(self._turn, self._segments, self._heard) if text else None
        self._sent = None

    def _check_barge_duration(self) -> None:
        heard = self._speech_samples()
        if self._early_words and (
            self.policy.backchannels_interrupt or heard >= self._ms(self.policy.backchannel_max_ms)
        ):
            self._confirm_barge("words", self._early_words)
            return
        if heard < self._ms(self.policy.min_interruption_ms):
            return
        if self.policy.backchannels_interrupt:
            self._confirm_barge("duration", "")
        elif not self._requested_words:  # long enough: does it have words that take the floor?
            self._requested_words = True
            self.push_nowait(TranscriptRequestFrame(), UP)

    def _confirm_barge(self, by: str, text: str) -> None:
        heard_ms = 1000 * self._speech_samples() // self.rate
        self._barge = False
        self._request_interruption("barge-in")
        self.emit("interruption_confirmed", by=by, speech_ms=heard_ms, text=text)
        self._open_turn([])
        if not self._speaking:  # confirmed by the pause's final transcript: already paused
            self._start_endpointing()

    def _request_interruption(self, reason: str) -> None:
        self._ducked = False  # the interruption resets playback's level
        self.request_interruption(reason)

    def _duck(self, on: bool, why: str) -> None:
        self._ducked = on
        db = self.policy.duck_db if on else 0.0
        self.push_nowait(DuckOutputFrame(db=db))
        self.emit("duck" if on else "unduck", db=db, why=why)

    async def _score(self, pause: int, audio: PCM) -> None:
        assert self.turn_model is not None
        try:
            p = await self.executor.run(self.turn_model, audio, priority=Priority.URGENT)
        except Exception as exc:  # the silence rule still ends the turn
            self.emit("turn_model_failed", error=f"{type(exc).__name__}: {exc}")
            return
        self.queue_frame(_TurnModelScore(pause=pause, probability=p))

    def _speech_samples(self) -> int:
        """How long the sound going on has lasted (0 if none)."""
        return 0 if self._onset_at is None else self._heard - self._onset_at

    def _ms(self, ms: int) -> int:
        return self.rate * ms // 1000
