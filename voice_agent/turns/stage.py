"""`TurnStage`: turn-taking in the pipeline, between the ASR and the LLM.

The stage sees the VAD's decisions (speech onset, start, pause), the user's audio, the ASR's
transcripts, the client's commits and discards, and, coming back up from the output, whether
the assistant is speaking. It holds no turn-taking logic of its own: it turns each frame into
an input of the `TurnTaker` (`taker.py`), and each of the machine's decisions
(`decisions.py`) into a frame, an event or an interruption, in the order decided. The one
thing it does that the machine cannot is wait: the turn model runs in the executor
(`Priority.URGENT`), and its score comes back to the stage as a frame of its own, then to the
machine as an input.

Decisions sent downstream while an interruption this stage asked for is on its way follow it
(`Stage.request_interruption`): sent at once, they would reach the LLM first and be cut by it.

Every decision is an event (`Stage.emit`, monotonic ns) for the metrics timeline.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from voice_agent.events import TurnModelFailed
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
from voice_agent.pipeline import UP, Stage
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
from voice_agent.turns.model import RecentAudio, TurnModel
from voice_agent.turns.policy import TurnPolicy, TurnPolicyFrame
from voice_agent.turns.taker import TurnTaker


@dataclass(slots=True, kw_only=True)
class _TurnModelScore(SystemFrame):
    """The turn model's verdict on pause number `pause`, sent by the stage to itself."""

    pause: int
    probability: float


class TurnStage(Stage):
    """Decides when the user's turn ends and whether they are barging in (`voice_agent.turns`)."""

    def __init__(
        self,
        policy: TurnPolicy,
        executor: Runner,
        turn_model: TurnModel | None = None,
        sample_rate: int = 16000,
    ) -> None:
        super().__init__("turns")
        self.executor = executor
        self.rate = sample_rate
        self.taker = TurnTaker(policy, turn_model is not None, sample_rate)
        """The machine that decides; the stage only feeds it and carries out its decisions."""
        self._turn_model = turn_model
        self._recent = RecentAudio(sample_rate)
        self._finals_in = asyncio.Event()
        """Set while no final transcript is due: the end of input waits for them."""
        self._finals_in.set()
        self._scoring: asyncio.Task[None] | None = None
        self._requests: list[ResponseRequestFrame] = []
        """Requests for a reply that came while a commit waited: they follow the turn."""

    @property
    def policy(self) -> TurnPolicy:
        return self.taker.policy

    @policy.setter
    def policy(self, policy: TurnPolicy) -> None:
        self.taker.policy = policy

    @property
    def turn_model(self) -> TurnModel | None:
        return self._turn_model

    @property
    def turn_open(self) -> bool:
        """A user's turn is going on (started, not yet ended or discarded)."""
        return self.taker.turn_open

    # --- frames in ---------------------------------------------------------------------------

    async def process(self, frame: Frame, direction: Direction) -> None:
        taker = self.taker
        if direction is UP:
            if isinstance(frame, BotStartedSpeakingFrame):
                self._carry_out(taker.bot_started(self.interruption_pending))
            elif isinstance(frame, BotStoppedSpeakingFrame):
                self._carry_out(taker.bot_stopped())
            await self.push(frame, direction)
        elif isinstance(frame, InputAudioFrame):
            self._recent.add(frame.pcm)
            self._carry_out(taker.audio(len(frame.pcm)))
        elif isinstance(frame, SpeechOnsetFrame):
            self._carry_out(taker.onset())
        elif isinstance(frame, FalseOnsetFrame):
            self._carry_out(taker.false_onset())
        elif isinstance(frame, UserStartedSpeakingFrame):
            await self.push(frame, direction)
            self._carry_out(taker.speech_started())
        elif isinstance(frame, UserStoppedSpeakingFrame):
            await self.push(frame, direction)
            self._carry_out(taker.paused(frame.silence_ms))
        elif isinstance(frame, TranscriptionFrame):
            await self.push(frame, direction)
            self._carry_out(taker.transcript(frame.text, frame.final))
        elif isinstance(frame, _TurnModelScore):
            self._carry_out(taker.scored(frame.pause, frame.probability))
        elif isinstance(frame, CommitTurnFrame):
            self._carry_out(taker.commit())
        elif isinstance(frame, DiscardTurnFrame):
            self._carry_out(taker.discard())
        elif isinstance(frame, TurnPolicyFrame):
            self.policy = frame.policy
            await self.push(frame, direction)
        elif isinstance(frame, ResponseRequestFrame) and taker.commit_pending:
            self._requests.append(frame)
        elif isinstance(frame, EndFrame):
            await self._finals_in.wait()
            self._carry_out(taker.input_ended())
            await self.push(frame, direction)
        else:
            await self.push(frame, direction)

    # --- decisions out -----------------------------------------------------------------------

    def _carry_out(self, decisions: list[Decision]) -> None:
        for d in decisions:
            match d:
                case Emit(event):
                    self.emit(event)
                case SendTurn(text, turn, replaces, respond):
                    self.push_nowait(
                        UserTurnFrame(text=text, turn=turn, replaces=replaces, respond=respond)
                    )
                case EndTurn(turn, reason):
                    self.push_nowait(EndOfTurnFrame(turn=turn, reason=reason))
                case Duck(db):
                    self.push_nowait(DuckOutputFrame(db=db))
                case Interrupt(reason):
                    self.request_interruption(reason)
                case AskForWords():
                    self.push_nowait(TranscriptRequestFrame(), UP)
                case ScoreTurn(pause):
                    self._score_turn(pause)
                case ReleaseRequests():
                    requests, self._requests = self._requests, []
                    for request in requests:
                        self.push_nowait(request)
                case DropRequests():
                    self._requests = []
        if self.taker.finals_due:
            self._finals_in.clear()
        else:
            self._finals_in.set()

    def _score_turn(self, pause: int) -> None:
        """Score the last seconds of audio in the executor; an earlier pause's score is moot."""
        if self._turn_model is None:
            return
        audio = self._recent.audio()
        if self._scoring is not None:
            self._scoring.cancel()
        self._scoring = self.create_task(self._score(pause, audio), f"turn-model-{pause}")

    async def _score(self, pause: int, audio: PCM) -> None:
        assert self._turn_model is not None
        try:
            p = await self.executor.run(self._turn_model, audio, priority=Priority.URGENT)
        except Exception as exc:  # the silence rule still ends the turn
            self.emit(TurnModelFailed(error=f"{type(exc).__name__}: {exc}"))
            return
        self.queue_frame(_TurnModelScore(pause=pause, probability=p))
