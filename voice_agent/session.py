"""One conversation: a transport, a pipeline, a persona, and the events they produce.

    async with Session(settings, persona, transport, engines) as session:
        await session.run()

`run` returns when the peer has gone and the reply in progress has played out, when a fatal
error occurs, or when `close` is called. Leaving the `async with` block stops every stage,
cancels every task the session started and closes the transport, however the session ended.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from voice_agent.audio.playback import PlaybackStage
from voice_agent.audio.vad import VADStage, VoiceActivity
from voice_agent.backbone.base import ASREngine, GenerationParams, LLMEngine, TTSEngine
from voice_agent.backbone.realtime_client import RemoteRealtime
from voice_agent.backbone.realtime_stages import RemoteAudioStage, RemoteReplyStage
from voice_agent.backbone.stages import ASRStage, LLMStage, TTSStage
from voice_agent.backbone.text import normalize_for_speech
from voice_agent.config import Settings
from voice_agent.events import Event, EventBus, Subscription
from voice_agent.executor import EngineExecutor
from voice_agent.frames import Direction, EndFrame, ErrorFrame, Frame, TurnPolicyFrame
from voice_agent.history import History
from voice_agent.persona import Persona
from voice_agent.pipeline import DOWN, Pipeline, Stage
from voice_agent.tasks import TaskOwner
from voice_agent.timeline import TurnTimeline
from voice_agent.transports.base import Transport
from voice_agent.turns import TurnModel, TurnPolicy, TurnStage

log = logging.getLogger(__name__)
_session_ids = itertools.count(1)

PREROLL_MARGIN_MS = 200
"""Audio the ASR gets from before the VAD's speech onset, beyond `start_ms`: the onset is found
a window late, and soft first sounds are below the VAD's threshold."""


@dataclass(slots=True)
class Engines:
    """The engines sessions share, and the pool they run in."""

    asr: ASREngine
    llm: LLMEngine | None
    """None when a remote realtime service is the backbone (it thinks and speaks)."""
    tts: Mapping[str, TTSEngine]
    """By engine name ("piper", "kokoro"): a persona's voice picks one."""
    executor: EngineExecutor
    vad: Callable[[], VoiceActivity] | None = None
    """A fresh voice activity detector for each session; None when the transport reports speech
    start and stop itself."""
    turn_model: TurnModel | None = None
    """The end-of-turn model (Smart Turn); None ends turns on silence alone."""

    def close(self) -> None:
        """Release the engines' threads and models (at shutdown; sessions must have ended)."""
        for engine in (self.asr, self.llm, *self.tts.values()):  # (None has no close)
            close = getattr(engine, "close", None)
            if close is not None:
                close()
        self.executor.shutdown()

    def health(self) -> dict[str, Any]:
        """The state of engines that run apart and can fail on their own (the LLM server)."""
        health = getattr(self.llm, "health", None)
        return {"llm": health()} if health is not None else {}

    def tts_for(self, persona: Persona) -> TTSEngine:
        engine = self.tts.get(persona.voice.engine)
        if engine is None:
            raise ValueError(
                f"persona {persona.id} speaks with {persona.voice.engine}, which is not loaded "
                f"(loaded: {', '.join(self.tts) or 'none'}); "
                f"install it with: pip install 'voice-agent[{persona.voice.engine}]'"
            )
        return engine


class Session(TaskOwner):
    """A conversation through one transport (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        persona: Persona,
        transport: Transport,
        engines: Engines,
        *,
        input_stages: Sequence[Stage] = (),
        session_id: str | None = None,
        remote: RemoteRealtime | None = None,
    ) -> None:
        super().__init__(session_id or f"s{next(_session_ids)}")
        self.settings = settings
        self.persona = persona
        self.transport = transport
        self.engines = engines
        self.history = History()
        self.bus = EventBus()
        self.timeline = TurnTimeline(self.name)
        """Where each turn's time went: `turn_metrics` and `turn_record` events."""
        self._input_stages = list(input_stages)
        self._done = asyncio.Event()
        self._closed = False
        self._forwarder: asyncio.Task[None] | None = None
        self.lane = engines.executor.lane(self.name)
        """This session's queue for engine calls: sessions are served in turn, not first come."""
        s, e = self.settings, self.engines
        llm = s.engines.llm
        params = GenerationParams(
            llm.max_tokens, llm.temperature, llm.top_p, llm.repeat_penalty, conversation=self.name
        )
        self._vad = VADStage(e.vad(), s.audio.sample_rate) if e.vad is not None else None
        self._turns = TurnStage(
            TurnPolicy.of(s, persona),
            self.lane,
            e.turn_model if s.turns.smart_turn else None,
            s.audio.sample_rate,
        )
        preroll_ms = s.vad.start_ms + PREROLL_MARGIN_MS
        self._llm: LLMStage | None = None
        self._tts: TTSStage | None = None
        backbone: list[Stage]
        if remote is not None:  # the remote service hears the turns and speaks the replies
            backbone = [RemoteReplyStage(remote, s.engines.realtime.timeout_s)]
        elif e.llm is None:
            raise ValueError("no LLM is loaded, and no realtime backbone is given")
        else:
            self._llm = LLMStage(
                e.llm, self.lane, persona, params, llm.context_tokens, self.history
            )
            self._tts = TTSStage(
                e.tts_for(persona),
                self.lane,
                persona,
                s.engines.tts.first_clause_max_chars,
                normalize_for_speech,
            )
            backbone = [self._llm, self._tts]
        stages: list[Stage] = [
            *self._input_stages,
            *([self._vad] if self._vad is not None else []),
            *([RemoteAudioStage(remote, preroll_ms)] if remote is not None else []),
            ASRStage(
                e.asr,
                self.lane,
                s.engines.asr.partial_interval_ms,
                preroll_ms=preroll_ms,
                max_stretch_ms=round(1000 * s.audio.max_turn_s),
            ),
            self._turns,
            *backbone,
            PlaybackStage(self.transport.sink, s.audio.output_frame_ms),
        ]
        self.pipeline = Pipeline(stages, on_upstream=self._upstream, events=self._event)

    # --- what a client may change during the session (the realtime API's session.update) ---

    def change(self, frame: Frame, direction: Direction = DOWN) -> None:
        """Send a client's change (a setting, an edit of the history: the frames of
        `voice_agent.frames` for them) into the pipeline, whose stage that keeps the state
        applies it. An edit that must follow what playback reports goes `UP`, in at the output
        end, behind that report."""
        if isinstance(frame, TurnPolicyFrame):  # until TurnStage applies the frame itself
            self._turns.policy = frame.policy
        self.pipeline.queue(frame, direction)

    def tts_for(self, persona: Persona) -> TTSEngine | None:
        """The engine that would speak as `persona`; None when the backbone speaks itself (a
        remote service). ValueError if that engine is not loaded."""
        return None if self._tts is None else self.engines.tts_for(persona)

    @property
    def id(self) -> str:
        return self.name

    def events(self) -> Subscription:
        """A bounded subscription to this session's events (ends when the session does)."""
        return self.bus.subscribe()

    def _event(self, kind: str, data: dict[str, Any], t_ns: int) -> None:
        self.bus.publish(Event(kind, data, t_ns))
        for derived, derived_data in self.timeline.feed(kind, data, t_ns):
            self.bus.publish(Event(derived, derived_data, t_ns))

    def _upstream(self, frame: Frame) -> None:
        if isinstance(frame, ErrorFrame):
            data = {"message": frame.message, "source": frame.source, "fatal": frame.fatal}
            self.bus.publish(Event("error", {**data, "code": frame.code or None}))
            if frame.fatal:
                self._done.set()

    async def __aenter__(self) -> Session:
        self.bus.publish(Event("session_started", {"session": self.id, "persona": self.persona.id}))
        try:
            await self.pipeline.start(self.settings.audio.sample_rate)
        except BaseException:
            await self.aclose()  # `async with` never calls __aexit__ when __aenter__ fails
            raise
        self.create_task(self._read_input(), "input")
        self._forwarder = self.create_task(self._forward_events(self.bus.subscribe()), "events")
        return self

    async def _read_input(self) -> None:
        try:
            async for frame in self.transport.frames():
                self.pipeline.queue(frame)
        except Exception as exc:
            log.warning("session %s: transport input failed: %s", self.id, exc)
            self.fail(getattr(exc, "code", None) or "internal", str(exc))  # (ProtocolError's)
            return
        self.pipeline.queue(EndFrame())

    async def _forward_events(self, sub: Subscription) -> None:
        async for event in sub:
            try:
                await self.transport.send_event(event)
            except Exception as exc:
                log.info("session %s: cannot deliver events any more: %s", self.id, exc)
                return

    async def run(self) -> None:
        """Until the conversation is over (see the module docstring)."""
        ended = self.create_task(self.pipeline.wait_ended(), "wait-ended")
        done = self.create_task(self._done.wait(), "wait-done")
        await asyncio.wait({ended, done}, return_when=asyncio.FIRST_COMPLETED)

    def close(self) -> None:
        """Ask `run` to return now (from any task of this loop)."""
        self._done.set()

    def fail(self, code: str, message: str, source: str = "transport") -> None:
        """End the session with a fatal `error` event its client is told of."""
        data = {"message": message, "source": source, "fatal": True, "code": code}
        self.bus.publish(Event("error", data))
        self._done.set()

    def finish(self) -> None:
        """End once the reply in progress has played out, taking no new turn (shutdown)."""
        self.pipeline.queue(EndFrame())

    async def __aexit__(
        self, et: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop the pipeline, cancel every task, close the transport. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            await self.pipeline.stop()
        finally:
            self.bus.publish(Event("session_ended", {"session": self.id}))
            self.bus.close()
            if self._forwarder is not None:  # let the last events (session_ended) reach the peer
                await asyncio.wait({self._forwarder}, timeout=1.0)
            await self.cancel_tasks()
            self.lane.close()
            await self.transport.close()
