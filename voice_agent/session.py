"""One conversation: a transport, a pipeline, a persona, and the events they produce.

    async with Session(settings, persona, transport, engines) as session:
        await session.run()

`run` returns when the peer has gone and the reply in progress has played out, when a fatal
error occurs, or when `close` is called. A hosted session (every one but the Realtime API's,
which its client drives) also speaks the persona's greeting when it starts, re-prompts a
caller who goes quiet and ends itself by the persona's idle policy (`turns/idle.py`); any
session ends at its time limit (`server.max_session_s`, or the persona's lower one).
Leaving the `async with` block stops every stage, cancels every task the session started and
closes the transport, however the session ended.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Sequence
from types import TracebackType

from voice_agent.audio.noise import noise_stage
from voice_agent.audio.playback import PlaybackStage
from voice_agent.audio.vad import VADStage
from voice_agent.backbone.backbone import Backbone, Conversation
from voice_agent.backbone.stages import ASRStage
from voice_agent.config import Settings
from voice_agent.engines import Engines
from voice_agent.eventbus import EventBus, Subscription
from voice_agent.events import ClientMessage, Error, Event, SessionEnded, SessionStarted
from voice_agent.frames import Direction, EndFrame, ErrorFrame, Frame, SayFrame
from voice_agent.history import History
from voice_agent.persona import Persona
from voice_agent.pipeline import DOWN, Pipeline, Stage
from voice_agent.protocol import WireEvents
from voice_agent.tasks import TaskOwner
from voice_agent.timeline import TurnTimeline
from voice_agent.transports.base import Transport
from voice_agent.turns import TurnPolicy, TurnStage
from voice_agent.turns.idle import IdleClock, IdleWatch, Say

log = logging.getLogger(__name__)
_session_ids = itertools.count(1)

PREROLL_MARGIN_MS = 200
"""Audio the ASR gets from before the VAD's speech onset, beyond `start_ms`: the onset is found
a window late, and soft first sounds are below the VAD's threshold."""


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
        backbone: Backbone | None = None,
        hosted: bool = True,
    ) -> None:
        """`hosted`: the session greets, re-prompts and ends itself by the persona's idle policy
        (False: its client drives it, as a Realtime API client does)."""
        super().__init__(session_id or f"s{next(_session_ids)}")
        self.settings = settings
        self.persona = persona
        self.transport = transport
        self.engines = engines
        self.history = History()
        self.bus: EventBus[Event] = EventBus()
        self._wire = WireEvents()
        self.timeline = TurnTimeline(self.name)
        """Where each turn's time went: `turn_metrics` and `turn_record` events."""
        self._input_stages = list(input_stages)
        self._done = asyncio.Event()
        self._closed = False
        self._forwarder: asyncio.Task[None] | None = None
        self.lane = engines.executor.lane(self.name)
        """This session's queue for engine calls: sessions are served in turn, not first come."""
        s, vad = self.settings, engines.vad
        self._vad = VADStage(vad(), s.audio.sample_rate) if vad is not None else None
        self.noise = (
            noise_stage(
                persona.noise_suppression or s.audio.noise_suppression,
                s.audio.noise_suppression_asr,
                s.audio.sample_rate,
            )
            if self._vad is not None
            else None
        )
        """Noise suppression before the VAD (after the input stages: echo cancellation)."""
        self._turns = TurnStage(
            TurnPolicy.of(s, persona),
            self.lane,
            engines.turn_model if s.turns.smart_turn else None,
            s.audio.sample_rate,
        )
        preroll_ms = s.vad.start_ms + PREROLL_MARGIN_MS
        self.backbone = backbone or engines.local_backbone(s)
        """What answers the turns: the local LLM and TTS, or a remote realtime service."""
        parts = self.backbone.stages(
            Conversation(self.name, self.lane, self.history, persona, preroll_ms)
        )
        stages: list[Stage] = [
            *self._input_stages,
            *([self.noise] if self.noise is not None else []),
            *([self._vad] if self._vad is not None else []),
            *parts.listen,
            ASRStage(
                engines.asr,
                self.lane,
                s.engines.asr.partial_interval_ms,
                preroll_ms=preroll_ms,
                max_stretch_ms=round(1000 * s.audio.max_turn_s),
            ),
            self._turns,
            *parts.reply,
            PlaybackStage(self.transport.sink, s.audio.output_frame_ms),
        ]
        self.pipeline = Pipeline(stages, on_upstream=self._upstream, events=self._event)
        self.end_reason = ""
        """Why the session ended itself (`idle`, `max_duration`), else ""."""
        self._hosted = hosted
        limits = [x for x in (s.server.max_session_s, persona.time_limit.max_s) if x is not None]
        speaks = self.backbone.speaks_fixed_text
        self._idle = IdleWatch(
            IdleClock(
                persona.idle if hosted else None,
                min(limits, default=None),
                time.monotonic(),
                time_up=persona.time_limit.goodbye if hosted else "",
                speaks=speaks,
            ),
            self._say,
            self.close,
        )

    # --- what a client may change during the session (the realtime API's session.update) ---

    def change(self, frame: Frame, direction: Direction = DOWN) -> None:
        """Send a client's change (a setting or an edit of the history, as a frame: see
        docs/architecture.md) into the pipeline, whose stage that keeps the state applies it.
        An edit that must follow what playback reports goes `UP`, in at the output end, behind
        that report."""
        self.pipeline.queue(frame, direction)

    @property
    def id(self) -> str:
        return self.name

    def events(self) -> Subscription[Event]:
        """A bounded subscription to this session's events (ends when the session does)."""
        return self.bus.subscribe()

    def _event(self, event: Event) -> None:
        self._idle.feed(event)
        self._publish(event)
        for derived in self.timeline.feed(event):
            self._publish(derived)

    def _publish(self, event: Event) -> None:
        """Publish one event and, beside it, the client messages it makes (translated here,
        once, for every consumer)."""
        self.bus.publish(event)
        for message in self._wire.translate(event):
            self.bus.publish(ClientMessage(message=message, t_ns=event.t_ns))

    def _upstream(self, frame: Frame) -> None:
        if isinstance(frame, ErrorFrame):
            code = frame.code or None
            self._publish(
                Error(message=frame.message, source=frame.source, fatal=frame.fatal, code=code)
            )
            if frame.fatal:
                self._done.set()

    async def __aenter__(self) -> Session:
        self._publish(SessionStarted(session=self.id, persona=self.persona.id))
        try:
            await self.pipeline.start(self.settings.audio.sample_rate)
        except BaseException:
            await self.aclose()  # `async with` never calls __aexit__ when __aenter__ fails
            raise
        self.create_task(self._read_input(), "input")
        self._forwarder = self.create_task(self._forward_events(self.bus.subscribe()), "events")
        greeting = self.persona.greeting.strip()
        if self._hosted and greeting and self._idle.clock.speaks:
            self._idle.clock.greeting(time.monotonic())
            self.pipeline.queue(SayFrame(text=greeting, why="greeting"))
        self._idle.start()
        return self

    def _say(self, say: Say) -> None:
        """Say fixed text now (the idle clock's re-prompt or last words); cut what plays first
        when asked."""
        if say.cut:
            self.pipeline.interrupt(say.why)
        self.pipeline.queue(SayFrame(text=say.text, why=say.why))

    async def _read_input(self) -> None:
        try:
            async for frame in self.transport.frames():
                self.pipeline.queue(frame)
        except Exception as exc:
            log.warning("session %s: transport input failed: %s", self.id, exc)
            self.fail(getattr(exc, "code", None) or "internal", str(exc))  # (ProtocolError's)
            return
        self.pipeline.queue(EndFrame())

    async def _forward_events(self, sub: Subscription[Event]) -> None:
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

    def close(self, reason: str = "") -> None:
        """Ask `run` to return now (from any task of this loop); `reason`, when the session
        ends itself (`idle`, `max_duration`), goes to the client in `session_ended`."""
        self.end_reason = self.end_reason or reason
        self._done.set()

    def fail(self, code: str, message: str, source: str = "transport") -> None:
        """End the session with a fatal `error` event its client is told of."""
        self._publish(Error(message=message, source=source, fatal=True, code=code))
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
            await self._idle.cancel_tasks()
            await self.pipeline.stop()
            await self.backbone.aclose()
        finally:
            self._publish(SessionEnded(session=self.id, reason=self.end_reason))
            self.bus.close()
            if self._forwarder is not None:  # let the last events (session_ended) reach the peer
                await asyncio.wait({self._forwarder}, timeout=1.0)
            await self.cancel_tasks()
            self.lane.close()
            await self.transport.close()
