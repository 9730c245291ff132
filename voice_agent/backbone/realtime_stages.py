"""A remote OpenAI-Realtime-compatible model as the session's speech backbone.

In this mode the remote replaces the LLM and TTS stages; our VAD, ASR, turn-taking and playback
stay in charge:

    input -> VAD -> RemoteAudioStage -> ASR -> TurnStage -> RemoteReplyStage -> Playback

- `RemoteAudioStage` streams each stretch of the user's speech (with a preroll from before the
  VAD confirmed it) into the remote's input buffer, resampled 16 -> 24 kHz by one stream.
- `RemoteReplyStage` answers a `UserTurnFrame`: it commits the buffered audio, asks for a
  response and streams it in its process task as `TTSAudioFrame`s (24 kHz) carrying the
  transcript, so an interruption cancels it between two events; it then cancels the remote
  response and truncates (or deletes) the assistant item at what playback says was heard. It
  owns the connection: its `cleanup` closes it, and a connection lost ends the session.
- `RemoteBackbone` opens the connection a session's settings and persona ask for, and gives
  the session these two stages.
"""

from __future__ import annotations

import base64
import logging
import os
from dataclasses import dataclass

import numpy as np

from voice_agent.audio.pcm import Preroll
from voice_agent.backbone.backbone import BackboneStages, Conversation
from voice_agent.backbone.realtime_client import (
    AUDIO_DELTA,
    INPUT_RATE,
    REMOTE_RATE,
    TRANSCRIPT_DELTA,
    RemoteConnectionLost,
    RemoteRealtime,
    RemoteRealtimeError,
    RemoteResponse,
)
from voice_agent.config import Settings
from voice_agent.events import (
    FirstClause,
    HistoryTruncated,
    LlmDone,
    LlmFirstToken,
    LlmStarted,
    TtsChunk,
    TtsFirstChunk,
)
from voice_agent.frames import (
    PCM,
    BotStoppedSpeakingFrame,
    Direction,
    DiscardTurnFrame,
    ErrorFrame,
    Frame,
    InputAudioFrame,
    LLMResponseEndFrame,
    LLMResponseStartFrame,
    PlaybackInterruptedFrame,
    ResponseRequestFrame,
    TTSAudioFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
    UserTurnFrame,
)
from voice_agent.history import system_prompt
from voice_agent.persona import Persona
from voice_agent.pipeline import UP, Stage

log = logging.getLogger(__name__)


class RemoteBackbone:
    """A remote service as one session's backbone: its connection, opened for that session.

    It does not speak fixed text (`SayFrame`: a greeting, a re-prompt): the Realtime API has no
    way to have a remote say given words in its voice (a `response.create` whose instructions
    ask for them gets the model's own words, or none), so the session does not ask it to."""

    speaks_fixed_text = False

    def __init__(self, conn: RemoteRealtime, timeout_s: float) -> None:
        self.conn = conn
        self.timeout_s = timeout_s

    @classmethod
    async def connect(cls, settings: Settings, persona: Persona) -> RemoteBackbone:
        """The remote `engines.realtime` names, set up to speak as `persona` (its prompt and
        manners; its voice unless `engines.realtime.voice` names one of the remote's).
        `RemoteRealtimeError` says why not."""
        cfg = settings.engines.realtime
        if cfg.url is None:
            raise RemoteRealtimeError(
                "engines.backbone is realtime but engines.realtime.url is not set "
                "(VOICE_AGENT_ENGINES__REALTIME__URL=wss://.../v1/realtime)"
            )
        conn = await RemoteRealtime.connect(
            cfg.url,
            api_key=os.environ.get(cfg.api_key_env) or None,
            model=cfg.model,
            instructions=system_prompt(persona),
            voice=cfg.voice,
            timeout_s=cfg.timeout_s,
        )
        return cls(conn, cfg.timeout_s)

    def stages(self, conversation: Conversation) -> BackboneStages:
        return BackboneStages(
            listen=[RemoteAudioStage(self.conn, conversation.preroll_ms)],
            reply=[RemoteReplyStage(self.conn, self.timeout_s)],
        )

    def tts_for(self, persona: Persona) -> None:
        """None: the remote speaks."""
        return None

    async def aclose(self) -> None:
        """Close the connection (for a backbone whose stages never ran; safe to call twice)."""
        await self.conn.close()


class RemoteAudioStage(Stage):
    """Streams each stretch of the user's speech, with the `preroll_ms` before it, to the remote
    (goes right after the VAD). Passes every frame on; never raises into the pipeline."""

    def __init__(self, conn: RemoteRealtime, preroll_ms: int = 0) -> None:
        super().__init__("realtime-audio")
        self.conn = conn
        self._preroll = Preroll(INPUT_RATE * preroll_ms // 1000)
        self._speaking = False
        self._failing = False

    async def process(self, frame: Frame, direction: Direction) -> None:
        await self.push(frame, direction)
        if isinstance(frame, InputAudioFrame):
            if frame.sample_rate != INPUT_RATE:
                self._fail(f"input audio at {frame.sample_rate} Hz, not {INPUT_RATE}")
            elif self._speaking:
                await self._append(frame.pcm)
            else:
                self._preroll.keep(frame.pcm)
        elif isinstance(frame, UserStartedSpeakingFrame):
            self._speaking = True
            for pcm in self._preroll.take():
                await self._append(pcm)
        elif isinstance(frame, UserStoppedSpeakingFrame):
            self._speaking = False
        elif isinstance(frame, DiscardTurnFrame):
            try:
                await self.conn.clear()
            except RemoteRealtimeError as exc:
                self._fail(str(exc))

    async def _append(self, pcm: PCM) -> None:
        try:
            await self.conn.append(pcm)
            self._failing = False
        except RemoteRealtimeError as exc:
            self._fail(str(exc))

    def _fail(self, why: str) -> None:
        if not self._failing:  # once, until audio goes through again
            self._failing = True
            log.error("%s: the user's audio does not reach the remote: %s", self.name, why)


@dataclass(slots=True)
class _Reply:
    transcript: str = ""
    text: str = ""
    """Transcript since the last audio frame."""
    audio_frames: int = 0
    held: TTSAudioFrame | None = None
    """The last audio frame, held back so the text that follows the last audio can join it."""


class RemoteReplyStage(Stage):
    """Answers each user turn with the remote's spoken reply (goes where the LLM and TTS stages
    were). Owns `conn`: its cleanup closes it; the connection lost ends the session."""

    def __init__(self, conn: RemoteRealtime, timeout_s: float = 10.0) -> None:
        super().__init__("realtime")
        self.conn = conn
        self.timeout_s = timeout_s
        self._in_flight = False
        self._response: RemoteResponse | None = None
        self._item: str | None = None
        """The assistant item of the last reply, and how much audio it has (ms)."""
        self._item_ms = 0.0
        self._reply_open = False
        self._cut: tuple[str, float] | None = None
        """The item cut by the last interruption, for playback's report of what was heard."""

    async def setup(self) -> None:
        self.create_task(self._watch(), "watch")

    async def cleanup(self) -> None:
        await self.conn.close()

    async def _watch(self) -> None:
        await self.conn.closed.wait()
        if not self.conn.closing:
            message = self.conn.close_reason
            await self.push(ErrorFrame(message=message, source="realtime", fatal=True), UP)

    async def on_interruption(self) -> None:
        # The process task streaming a reply was cancelled before this.
        resp, self._response = self._response, None
        if self._in_flight:
            self._in_flight = False
            if resp is not None:
                self.conn.release(resp)
            await self._cancel(resp)
        self._cut = (self._item, self._item_ms) if self._reply_open and self._item else None
        self._reply_open = False

    async def process(self, frame: Frame, direction: Direction) -> None:
        if isinstance(frame, UserTurnFrame):
            await self.push(frame, direction)
            try:
                await self.conn.commit()
            except RemoteConnectionLost:
                return  # the watcher reports it
            if frame.respond:
                await self._respond()
        elif isinstance(frame, ResponseRequestFrame):
            await self._respond()
        elif isinstance(frame, PlaybackInterruptedFrame):
            if self._cut is not None:
                (item, audio_ms), self._cut = self._cut, None
                try:
                    if frame.played_ms > 0:
                        await self.conn.truncate(item, min(frame.played_ms, int(audio_ms)))
                    else:
                        await self.conn.delete(item)
                except RemoteRealtimeError as exc:
                    log.warning("%s: cannot truncate the reply: %s", self.name, exc)
                self.emit(HistoryTruncated(heard=frame.heard_text, played_ms=frame.played_ms))
            await self.push(frame, direction)
        elif isinstance(frame, BotStoppedSpeakingFrame):
            self._reply_open = False
            await self.push(frame, direction)
        else:
            await self.push(frame, direction)

    async def _cancel(self, resp: RemoteResponse | None) -> None:
        try:
            await self.conn.cancel_response(resp.id if resp is not None else None)
        except RemoteRealtimeError as exc:
            log.info("%s: cannot cancel the reply: %s", self.name, exc)

    async def _respond(self) -> None:
        self._in_flight, self._reply_open, self._item, self._item_ms = True, True, None, 0.0
        await self.push(LLMResponseStartFrame())
        await self.push(TTSStartedFrame())
        self.emit(LlmStarted())
        reply = _Reply()
        failure: RemoteRealtimeError | None = None
        try:
            self._response = await self.conn.create_response()
            await self._stream(self._response, reply)
        except RemoteConnectionLost as exc:
            log.warning("%s: %s", self.name, exc)  # the watcher ends the session
        except RemoteRealtimeError as exc:
            failure = exc
        finally:  # (an interruption, too: on_interruption cancels the remote response)
            self.emit(LlmDone(text=reply.transcript.strip()))
        resp, self._response, self._in_flight = self._response, None, False
        if resp is not None:
            self.conn.release(resp)
        if reply.held is not None:
            reply.held.text += reply.text
            await self.push(reply.held)
        elif reply.text.strip() and reply.audio_frames:  # words after the only audio frame
            empty = np.zeros(0, np.int16)
            await self.push(TTSAudioFrame(pcm=empty, sample_rate=REMOTE_RATE, text=reply.text))
        await self.push(LLMResponseEndFrame())
        await self.push(TTSStoppedFrame())
        if failure is not None:
            raise failure

    async def _stream(self, resp: RemoteResponse, reply: _Reply) -> None:
        answered = False
        while True:
            try:
                event = await resp.get(self.timeout_s)
            except TimeoutError:
                await self._cancel(resp)
                how = "stopped answering" if answered else "did not answer"
                raise RemoteRealtimeError(
                    f"the realtime remote {how} within {self.timeout_s:g} s"
                ) from None
            except RemoteConnectionLost:
                raise
            except RemoteRealtimeError:
                await self._cancel(resp)
                raise
            answered = True
            kind = event.get("type")
            if kind in TRANSCRIPT_DELTA:
                text = str(event.get("delta") or "")
                if text:
                    if not reply.transcript:
                        if not reply.audio_frames:
                            self.emit(LlmFirstToken())
                        self.emit(FirstClause(text=text))
                    self.emit(TtsChunk(text=text))
                    reply.transcript += text
                    reply.text += text
            elif kind in AUDIO_DELTA:
                raw = base64.b64decode(str(event.get("delta") or ""))
                pcm = np.frombuffer(raw[: len(raw) // 2 * 2], dtype="<i2").astype(np.int16)
                if not len(pcm):
                    continue
                self._item_ms += 1000 * len(pcm) / REMOTE_RATE
                frame = TTSAudioFrame(pcm=pcm, sample_rate=REMOTE_RATE, text=reply.text)
                reply.text = ""
                reply.audio_frames += 1
                if reply.audio_frames == 1:  # the first goes at once: it is the latency
                    if not reply.transcript:
                        self.emit(LlmFirstToken())
                    ms = round(1000 * len(pcm) / REMOTE_RATE)
                    self.emit(TtsFirstChunk(text=frame.text, ms=ms))
                    await self.push(frame)
                else:
                    if reply.held is not None:
                        await self.push(reply.held)
                    reply.held = frame
            elif kind == "response.output_item.added":
                item = event.get("item") or {}
                if self._item is None and item.get("role") == "assistant":
                    self._item = item.get("id")
            elif kind == "response.done":
                response = event.get("response") or {}
                if response.get("status") == "failed":
                    details = response.get("status_details") or {}
                    why = (details.get("error") or {}).get("message") or details.get("reason")
                    raise RemoteRealtimeError(f"the realtime remote's reply failed: {why}")
                return
