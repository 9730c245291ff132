"""The local transport's echo reference: what the speaker played, carried with the microphone.

`LocalTransport.frames()` yields `MicFrame`s: `InputAudioFrame`s that also carry what the
speaker played during the same PortAudio callback. `SpeakerEchoCancelStage` hands that to
`EchoCanceller.far_end` (which is not thread-safe) right before it cancels the frame's echo, so
the far end and the microphone reach AEC3 in lockstep however late, or in whatever bursts, the
loop gets to them. (Fed as the blocks arrive, a burst would put far audio ahead of the
microphone audio it goes with: harmless while the canceller pairs them in order, but at a resync
it would pair the microphone with audio played after it was captured.) The played block leaves
the speaker a little after the microphone block of the same callback was captured (the stream's
input plus output latency: with `latency="low"`, some tens of ms), so the echo always comes
after its reference, well inside the 0-500 ms in which AEC3 finds it. A frame after lost audio
(an input overflow, or blocks dropped from the queue) is marked `gap`, and the stage resyncs the
canceller there.
"""

from __future__ import annotations

from dataclasses import dataclass

from voice_agent.audio.echo import EchoCancelStage
from voice_agent.frames import PCM, Direction, Frame, InputAudioFrame


@dataclass(slots=True, kw_only=True)
class MicFrame(InputAudioFrame):
    """Microphone audio, with what the speaker played during the same callback(s)."""

    played: PCM
    played_rate: int
    gap: bool = False
    """Microphone audio was lost just before this frame (an overflow, or dropped blocks)."""


class SpeakerEchoCancelStage(EchoCancelStage):
    """`EchoCancelStage` for `LocalTransport`: each `MicFrame`'s played audio goes to the
    canceller's far end right before the frame is cancelled (see the module docstring)."""

    async def process(self, frame: Frame, direction: Direction) -> None:
        if isinstance(frame, MicFrame):
            if frame.gap:
                self.canceller.resync()
            self.canceller.far_end(frame.played, frame.played_rate)
            frame = InputAudioFrame(
                pcm=frame.pcm,
                sample_rate=frame.sample_rate,
                id=frame.id,
                created_ns=frame.created_ns,
            )
        await super().process(frame, direction)
