"""`ASRStage`: each stretch of the user's speech to text, partials while it lasts, one final
at the pause, through the session's lane of the engine pool."""

from __future__ import annotations

from dataclasses import dataclass

from voice_agent.audio.pcm import Preroll
from voice_agent.backbone.base import ASREngine, ASRStream
from voice_agent.events import (
    AsrFinalStarted,
    AsrStretchCapped,
    Transcript,
)
from voice_agent.executor import Priority, Runner
from voice_agent.frames import (
    ControlFrame,
    DataFrame,
    Direction,
    Frame,
    InputAudioFrame,
    TranscriptionFrame,
    TranscriptRequestFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from voice_agent.pipeline import Stage


@dataclass(slots=True, kw_only=True)
class _Utterance(ControlFrame):
    """An utterance to finalize: ordered, and kept through an interruption."""

    stream: ASRStream


@dataclass(slots=True, kw_only=True)
class _Partial(DataFrame):
    """Time to re-decode the utterance so far (skipped if it has ended meanwhile)."""

    stream: ASRStream


class ASRStage(Stage):
    """Feeds the user's audio between speech start and pause to an ASR stream; sends partial
    transcripts while the user speaks and the final one at the pause.

    Audio and speech start/stop are system frames, handled in arrival order (`accept` is cheap);
    decoding runs in the process task through the executor, so it never holds up an
    interruption. A partial decode is due every `partial_interval_ms` of audio (0: never), or at
    once when a `TranscriptRequestFrame` arrives. The last `preroll_ms` of audio before
    the speech start goes into the stream too: the VAD confirms speech some time after it began.
    Every stretch of speech gets exactly one final `TranscriptionFrame` (perhaps ""), even when
    the decode fails, so the turn logic downstream can count on it. A stretch is heard up to
    `max_stretch_ms` (an endless one, noise the VAD takes for speech, must not grow the decode
    without bound): the audio past that is not transcribed."""

    def __init__(
        self,
        engine: ASREngine,
        executor: Runner,
        partial_interval_ms: int = 0,
        preroll_ms: int = 0,
        max_stretch_ms: int = 60_000,
    ) -> None:
        super().__init__("asr")
        self.max_stretch_samples = engine.sample_rate * max_stretch_ms // 1000
        self._stretch = 0
        self.engine = engine
        self.executor = executor
        self.partial_samples = engine.sample_rate * partial_interval_ms // 1000
        self._preroll = Preroll(engine.sample_rate * preroll_ms // 1000)
        self._stream: ASRStream | None = None
        self._since_partial = 0
        self._last_partial = ""
        self._partial_waiting = False

    async def on_interruption(self) -> None:
        self._partial_waiting = False  # a queued partial was dropped with the other data frames

    async def process(self, frame: Frame, direction: Direction) -> None:
        if isinstance(frame, InputAudioFrame):
            await self.push(frame, direction)
            if self._stream is None:
                self._preroll.keep(frame.pcm)
                return
            if self._stretch >= self.max_stretch_samples:
                return
            self._stretch += len(frame.pcm)
            if self._stretch >= self.max_stretch_samples:
                self.emit(AsrStretchCapped(ms=self._stretch * 1000 // self.engine.sample_rate))
            self._stream.accept(frame.pcm)
            self._since_partial += len(frame.pcm)
            if self.partial_samples and self._since_partial >= self.partial_samples:
                self._request_partial()
        elif isinstance(frame, TranscriptRequestFrame):
            if self._stream is not None:
                self._request_partial()
        elif isinstance(frame, UserStartedSpeakingFrame):
            await self.push(frame, direction)
            self._stream = self.engine.stream()
            self._stretch = 0
            for pcm in self._preroll.take():
                self._stream.accept(pcm)
            self._since_partial, self._last_partial, self._partial_waiting = 0, "", False
        elif isinstance(frame, UserStoppedSpeakingFrame):
            await self.push(frame, direction)
            if self._stream is not None:
                self.queue_frame(_Utterance(stream=self._stream))
                self._stream = None
            else:  # no stream (it failed to open): still one final for the stretch
                await self.push(TranscriptionFrame(text="", final=True))
        elif isinstance(frame, _Partial):
            self._partial_waiting = False
            if frame.stream is self._stream:
                partial = frame.stream.partial
                text = (await self.executor.run(partial, priority=Priority.BACKGROUND)).strip()
                if text and text != self._last_partial and frame.stream is self._stream:
                    self._last_partial = text
                    self.emit(Transcript(role="user", text=text, final=False))
                    await self.push(TranscriptionFrame(text=text, final=False))
        elif isinstance(frame, _Utterance):
            self.emit(AsrFinalStarted())
            text = ""
            try:
                final = frame.stream.finalize
                text = (await self.executor.run(final, priority=Priority.URGENT)).strip()
            finally:  # one final per utterance, whatever happens: the turn logic counts them
                self.emit(Transcript(role="user", text=text, final=True))
                await self.push(TranscriptionFrame(text=text, final=True))
        else:
            await self.push(frame, direction)

    def _request_partial(self) -> None:
        if self._stream is not None and not self._partial_waiting:  # one at a time
            self._since_partial, self._partial_waiting = 0, True
            self.queue_frame(_Partial(stream=self._stream))
