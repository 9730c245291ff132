"""Frames: what flows through a pipeline.

Three kinds, which decide how a frame travels (see `voice_agent.pipeline`):

- `SystemFrame`: jumps every queue and survives an interruption (start, cancel, interruption,
  the user's audio, speech onset/start/stop and transcripts, turn decisions, errors, playback
  reports). The user's input is a system frame on purpose: it must stay in order (audio with
  speech start/stop, one final transcript per stretch of speech), and an interruption must never
  drop it, since it is the barge-in itself. Metrics are not frames: stages `emit` events
  straight to the session (see `Stage.emit`), so they never wait in a queue.
- `DataFrame`: the user's turn for the LLM, its text, synthesized speech, and the start/stop
  markers of a reply; an interruption drops those still queued or in flight (a reply's markers
  die with it).
- `ControlFrame`: kept in order with the data, and kept through an interruption (end of stream).
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:  # what some frames carry; frames depend on none of these modules
    from voice_agent.history import Role

PCM = npt.NDArray[np.int16]
"""Mono 16-bit PCM samples."""

_ids = itertools.count(1)


class Direction(Enum):
    DOWNSTREAM = "downstream"
    """From the transport's input towards its output."""
    UPSTREAM = "upstream"
    """Back towards the input: reports, errors, requests."""


@dataclass(slots=True, kw_only=True)
class Frame:
    """Base of all frames. `created_ns` is `time.monotonic_ns()` at creation."""

    id: int = field(default_factory=lambda: next(_ids))
    created_ns: int = field(default_factory=time.monotonic_ns)

    @property
    def name(self) -> str:
        return f"{type(self).__name__}#{self.id}"


@dataclass(slots=True, kw_only=True)
class SystemFrame(Frame):
    """Jumps queues; never dropped by an interruption."""


@dataclass(slots=True, kw_only=True)
class DataFrame(Frame):
    """Content; dropped by an interruption while queued or in flight."""


@dataclass(slots=True, kw_only=True)
class ControlFrame(Frame):
    """Ordered with data frames, but kept through an interruption."""


# --- system frames ---------------------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class StartFrame(SystemFrame):
    """First frame of a pipeline; carries the pipeline's audio rate."""

    sample_rate: int = 16000


@dataclass(slots=True, kw_only=True)
class CancelFrame(SystemFrame):
    """Stop now, dropping everything (the session is going away)."""

    reason: str = ""


@dataclass(slots=True, kw_only=True)
class InterruptionRequestFrame(SystemFrame):
    """Sent upstream by whoever decides the user has barged in; the pipeline's head answers by
    sending an `InterruptionFrame` downstream to every stage."""

    reason: str = ""


@dataclass(slots=True, kw_only=True)
class InterruptionFrame(SystemFrame):
    """The assistant has been interrupted: drop queued data, stop the reply."""

    reason: str = ""


@dataclass(slots=True, kw_only=True)
class InputAudioFrame(SystemFrame):
    """Microphone audio at the pipeline's rate, mono int16."""

    pcm: PCM
    sample_rate: int
    vad_pcm: PCM | None = None
    """The same audio with its noise suppressed, for the VAD alone (`audio/noise.py`); None:
    the VAD hears `pcm`."""

    @property
    def duration_ms(self) -> float:
        return 1000.0 * len(self.pcm) / self.sample_rate


@dataclass(slots=True, kw_only=True)
class SpeechOnsetFrame(SystemFrame):
    """The VAD heard the first sign of speech (not yet confirmed): time to duck the output."""


@dataclass(slots=True, kw_only=True)
class FalseOnsetFrame(SystemFrame):
    """The sound after a `SpeechOnsetFrame` ended before it counted as speech."""


@dataclass(slots=True, kw_only=True)
class UserStartedSpeakingFrame(SystemFrame):
    """Speech confirmed (it lasted the VAD's `start_ms`); `onset_ns` is when it began."""

    onset_ns: int = 0


@dataclass(slots=True, kw_only=True)
class UserStoppedSpeakingFrame(SystemFrame):
    """A pause: silence has lasted the VAD's `stop_ms` (the turn may or may not be over);
    `speech_end_ns` is when the speech stopped."""

    speech_end_ns: int = 0
    silence_ms: int = 0
    """Silence since the speech stopped, up to the end of the audio before this frame (at
    least `stop_ms`; 0 if unknown)."""


@dataclass(slots=True, kw_only=True)
class TranscriptionFrame(SystemFrame):
    """What the user said in one stretch of speech (between a start and a pause). Partial
    transcripts (`final=False`) come while they speak, the final one after the pause (its text
    may be ""). User input, like their audio: an interruption never drops it."""

    text: str
    final: bool = True


@dataclass(slots=True, kw_only=True)
class TranscriptRequestFrame(SystemFrame):
    """To the ASR: decode the speech so far now. The turn logic sends it upstream when a
    barge-in needs its words; the VAD downstream when the speech goes quiet, so the decode is
    done by the time the pause is confirmed."""


@dataclass(slots=True, kw_only=True)
class EndOfTurnFrame(SystemFrame):
    """The user's turn `turn` is over: its reply may play. `reason` says how it was decided."""

    turn: int
    reason: str = ""


@dataclass(slots=True, kw_only=True)
class CommitTurnFrame(SystemFrame):
    """End the user's open turn now, once its transcripts are in (a client that decides turns
    itself: the realtime API's `input_audio_buffer.commit`)."""


@dataclass(slots=True, kw_only=True)
class DiscardTurnFrame(SystemFrame):
    """Forget the user's open turn: what they said so far is not a turn (the realtime API's
    `input_audio_buffer.clear`)."""


@dataclass(slots=True, kw_only=True)
class DuckOutputFrame(SystemFrame):
    """Lower the assistant's voice by `db` from now on (0: back to full level)."""

    db: float


@dataclass(slots=True, kw_only=True)
class ErrorFrame(SystemFrame):
    """Something failed; `fatal` ends the session, otherwise only the current turn."""

    message: str
    source: str = ""
    fatal: bool = False
    code: str = ""
    """What kind of failure, for clients: `busy` (the engines are full), `timeout` (an engine
    call ran too long), `engine` (it failed); "" lets the session choose."""


@dataclass(slots=True, kw_only=True)
class BotStartedSpeakingFrame(SystemFrame):
    """Sent upstream by the output side when the first frame of a reply goes out."""


@dataclass(slots=True, kw_only=True)
class BotStoppedSpeakingFrame(SystemFrame):
    """Sent upstream by the output side when a reply has been played out (or cut)."""


@dataclass(slots=True, kw_only=True)
class PlaybackInterruptedFrame(SystemFrame):
    """Sent upstream by the output side on every interruption: what the user really heard of the
    reply in progress ("" if none of it was played)."""

    played_ms: int
    heard_text: str


# --- system frames: what a client changes during the session (the realtime API) ------------
# The stage that keeps the state applies the frame, then passes it on like any other.


@dataclass(slots=True, kw_only=True)
class SpokenRepliesFrame(SystemFrame):
    """Speak the replies (True), or give them as text only (False: the TTS stage reports their
    chunks and synthesizes nothing)."""

    spoken: bool


@dataclass(slots=True, kw_only=True)
class SpeechDetectionFrame(SystemFrame):
    """Turn the VAD on or off (off: the client marks the speech), deciding at `threshold`."""

    enabled: bool
    threshold: float


@dataclass(slots=True, kw_only=True)
class HistoryEditFrame(SystemFrame):
    """An edit of the conversation the LLM reads next, applied by the LLM stage, which keeps
    the history. An edit of a message that is gone does nothing."""


@dataclass(slots=True, kw_only=True)
class HistoryAddFrame(HistoryEditFrame):
    """Add a message of id `message_id`: last, or just after the message of id `after` ("":
    first; one that is gone meanwhile: last)."""

    role: Role
    text: str
    message_id: str
    after: str | None = None


@dataclass(slots=True, kw_only=True)
class HistoryRemoveFrame(HistoryEditFrame):
    """Forget the message of id `message_id`."""

    message_id: str


@dataclass(slots=True, kw_only=True)
class HistoryTruncateFrame(HistoryEditFrame):
    """Keep only `heard` of the message of id `message_id` (remove it if that is "")."""

    message_id: str
    heard: str


# --- data frames -----------------------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class UserTurnFrame(DataFrame):
    """The text of the user's turn `turn`, for the LLM to answer. Sent as soon as the user
    pauses (a preemptive reply, whose audio waits for the `EndOfTurnFrame`); if they go on
    talking, a later frame `replaces` it."""

    text: str
    turn: int
    replaces: int = 0
    """An earlier turn this one continues (0: none): its messages give way to this one."""
    respond: bool = True
    """False: the turn joins the conversation, and the reply waits for a `ResponseRequestFrame`
    (a client that asks for replies itself)."""


@dataclass(slots=True, kw_only=True)
class ResponseRequestFrame(DataFrame):
    """Reply now, to the conversation as it stands (the realtime API's `response.create`)."""


@dataclass(slots=True, kw_only=True)
class SayFrame(DataFrame):
    """Say `text` now, as written, with no user turn to answer (the persona's greeting, an idle
    re-prompt, a goodbye). The reply stage speaks it as a reply: same voice, same markers,
    interruptible, kept in the history as an assistant message (what was heard, if cut)."""

    text: str
    why: str = ""
    """What it is for: `greeting`, `reprompt`, `goodbye`, `time_up`."""


@dataclass(slots=True, kw_only=True)
class LLMTextFrame(DataFrame):
    """A piece of the assistant's reply as the LLM streams it."""

    text: str


@dataclass(slots=True, kw_only=True)
class TTSAudioFrame(DataFrame):
    """Synthesized speech for one chunk of the reply, tagged with the text it carries."""

    pcm: PCM
    sample_rate: int
    text: str
    """The words spoken in this audio ("" for a continuation of the same chunk)."""

    @property
    def duration_ms(self) -> float:
        return 1000.0 * len(self.pcm) / self.sample_rate


@dataclass(slots=True, kw_only=True)
class LLMResponseStartFrame(DataFrame):
    """The LLM starts a reply."""


@dataclass(slots=True, kw_only=True)
class LLMResponseEndFrame(DataFrame):
    """The LLM has finished the reply."""


@dataclass(slots=True, kw_only=True)
class TTSStartedFrame(DataFrame):
    """Speech for a reply follows."""


@dataclass(slots=True, kw_only=True)
class TTSStoppedFrame(DataFrame):
    """The last speech of the reply has been sent."""


# --- control frames --------------------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class EndFrame(ControlFrame):
    """The input is over: stages finish what they hold, then the pipeline stops."""
