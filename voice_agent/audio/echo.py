"""Acoustic echo cancellation for the local microphone: WebRTC AEC3 (pywebrtc-audio).

With a speaker and a microphone in the same room the assistant hears its own voice; unless it
is cancelled, the VAD takes that echo for the user barging in. `EchoCanceller` removes it from
the microphone audio, given the *far end*: what the output side has just played.

pywebrtc-audio 0.2.0 (an optional dependency: the `local` and `dev` extras), as found by
introspection: `EchoCanceller(sample_rate=16000, num_channels=1, stream_delay_ms=0)` takes only
16, 32 or 48 kHz; `process(near, far)` takes two non-empty arrays of the same length and the
same dtype (int16 or float32, anything else is a ValueError; `far` is mandatory) and returns
`near` cleaned, same dtype and length. It cuts them into 10 ms frames itself and, for each,
analyzes the far frame then cleans the near one, so one call over many frames gives exactly
the output of one call per frame; a ragged tail is zero-padded, which would feed AEC3 a
made-up frame, so this module only ever hands it whole 10 ms frames. A high-pass filter is
always applied to the near signal. The GIL is released while it works.

How audio is paired: `far_end` appends what was played (resampled to the canceller's rate) to
a queue; `process` pairs each 10 ms microphone frame with the oldest 10 ms waiting there, or
with silence when nothing waits (nothing was played). AEC3 finds the echo path delay itself
(the `stream_delay_ms` hint made no measurable difference), but only while the far audio
paired with a microphone frame was played *before* the echo in it: measured on real speech,
an echo 0 to 500 ms behind its reference is cancelled (about 33 dB), one 700 ms behind or more
is not, nor is one 20 ms ahead of it (0 to 3 dB: far audio paired with microphone audio
captured before it was played). So far audio must be recorded as it is played, never ahead,
and far audio that waited while the microphone was not delivering must not be paired in order
with what the microphone hears next (a 100 ms head start left in the queue: 0.4 dB). Hence:

- the queue holds at most `max_far_ms` (1 s), the oldest dropped: memory stays bounded when
  the microphone stops while audio plays;
- on the first microphone audio, after an overflow (the microphone had stopped) and after
  `resync()`, the microphone audio is paired with the newest far audio, the rest dropped;
- otherwise the queue is kept in order, so jitter between the two sides (microphone audio
  that comes late, in a burst) keeps its alignment. A microphone that *loses* audio for less
  than `max_far_ms` while audio plays leaves the far end ahead of the echo for as long as the
  far end keeps playing: whoever restarts it should call `resync()`.

Measured on the simulated room of tests/test_echo.py (6 s of Piper speech as the assistant's
voice, echo 40 ms late with a 25 ms reverb tail, 8 dB down, noise at -60 dBFS), in 20 or
30 ms frames:

- ERLE after the first second: 30.9 dB, the same for far ends at 16, 24 and 48 kHz and for
  320- or 480-sample microphone frames (32 dB in `EchoStats`, first second included: AEC3
  suppresses hard while it converges, within the first 0.5 s).
- double talk (the user, as loud as the echo, talks over it from t = 2 s): the user's speech
  comes out with a correlation of 0.80 with the clean speech (0.74 in the raw microphone) and
  2.6 dB down; with the user 6 dB louder than the echo, 0.86 (raw 0.91) and 1.6 dB down.
- no far end: speech passes unchanged in level (-0.03 dB), delayed by 128 samples (8 ms, AEC3's
  own latency, whatever the frame size; correlation 0.945 at that lag).
- cost: 8.5 ms of CPU per second of microphone audio in 20 ms frames (about 170 us a frame, 7.2
  of it in AEC3), plus 2 ms per second for a 24 kHz far end (resampling): about 1% of a core.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from voice_agent.audio.mic_stage import MicAudioStage
from voice_agent.audio.pcm import WholeFrames, resample
from voice_agent.frames import PCM, InputAudioFrame

if TYPE_CHECKING:
    import pywebrtc_audio


RATES = (16000, 32000, 48000)
"""The rates AEC3 takes (the pipeline's microphone rate is 16 kHz)."""

FAR_ACTIVE_POWER = (32768.0 * 10 ** (-60 / 20)) ** 2
"""A far-end frame louder than -60 dBFS counts as the assistant playing something."""


@dataclass(slots=True)
class EchoStats:
    """Running counts for a metrics consumer, over 10 ms frames since the canceller was made.

    The energies are sums of squared samples over the frames in which far-end audio was
    playing (double talk included), so `erle_db` is the echo return loss enhancement as a
    whole; it understates the canceller while the user talks over the assistant.
    """

    frames: int = 0
    """Microphone frames processed."""
    far_active_frames: int = 0
    """Of those, frames during which far-end audio louder than -60 dBFS was playing."""
    in_energy: float = 0.0
    """Sum of squares of the microphone audio over the far-active frames."""
    out_energy: float = 0.0
    """Sum of squares of the cancelled audio over the same frames."""
    far_dropped: int = 0
    """Far-end samples (at the canceller's rate) dropped as stale (see the module)."""

    @property
    def erle_db(self) -> float:
        """Input over output energy while the far end played, in dB (nan before any)."""
        if self.far_active_frames == 0:
            return math.nan
        if self.out_energy <= 0.0:
            return math.inf
        return 10.0 * math.log10(max(self.in_energy, 1e-12) / self.out_energy)


class EchoCanceller:
    """Removes the assistant's voice from the microphone audio of one session.

    Call `far_end` with each piece of audio as the speaker plays it, and `process` with each
    piece of microphone audio; in any interleaving, in time order. Not thread-safe: call both
    from the same thread (the event loop).

    `process` returns whatever whole 10 ms frames are ready: the microphone audio it was given,
    plus what was left over from the last call, rounded down to whole 10 ms frames. The
    rest (under 10 ms) waits for the next call. So 10 ms multiples (the usual 20 ms frames)
    come out at once and the same length; other sizes come out up to 10 ms late, possibly empty.
    The output also carries AEC3's own latency of 8 ms.
    """

    def __init__(
        self, sample_rate: int = 16000, stream_delay_ms: int = 0, *, max_far_ms: int = 1000
    ) -> None:
        if sample_rate not in RATES:
            raise ValueError(f"AEC3 works at {RATES} Hz, not {sample_rate}")
        import pywebrtc_audio

        self.sample_rate = sample_rate
        self.frame = sample_rate // 100
        """AEC3 works on 10 ms frames: 160 samples at 16 kHz."""
        self.max_far = max(self.frame, sample_rate * max_far_ms // 1000)
        """The most far-end audio kept waiting for the microphone, in samples."""
        self._aec: pywebrtc_audio.EchoCanceller = pywebrtc_audio.EchoCanceller(
            sample_rate, 1, stream_delay_ms
        )
        self._near = WholeFrames(self.frame)
        self._far = np.zeros(0, np.int16)
        self._resync = True
        self._far_rate = sample_rate
        self._far_pending = np.zeros(0, np.int16)
        self.stats = EchoStats()

    @property
    def far_buffered_ms(self) -> float:
        """Far-end audio waiting for microphone audio to pair with."""
        return 1000.0 * len(self._far) / self.sample_rate

    def far_end(self, pcm: PCM, sample_rate: int) -> None:
        """Record audio that has just been played (mono int16, at any rate).

        It is resampled to the canceller's rate in whole blocks of the fewest samples that give
        a whole number out (3 from 24 or 48 kHz, 441 from 22.05 or 44.1 kHz, to 16 kHz), so
        chunks of any size add up to exactly the right length, with no drift; a ragged tail
        waits for the next call. At most `max_far_ms` waits; past that the oldest is dropped
        (see the module).
        """
        if len(pcm) == 0:
            return
        if sample_rate != self._far_rate:
            self._far_rate, self._far_pending = sample_rate, np.zeros(0, np.int16)
        if sample_rate != self.sample_rate:
            block = sample_rate // math.gcd(sample_rate, self.sample_rate)
            pending = np.concatenate([self._far_pending, pcm]) if len(self._far_pending) else pcm
            whole = len(pending) - len(pending) % block
            self._far_pending = pending[whole:].copy()
            if whole == 0:
                return
            pcm = resample(pending[:whole], sample_rate, self.sample_rate)
        far = np.concatenate([self._far, pcm.astype(np.int16, copy=False)])
        excess = len(far) - self.max_far
        if excess > 0:
            far = far[excess:]
            self.stats.far_dropped += excess
            self._resync = True
        self._far = far

    def process(self, near: PCM) -> PCM:
        """Cancel the echo from microphone audio (mono int16 at the canceller's rate, any
        length): returns the whole 10 ms frames ready (see the class), possibly none."""
        mic = self._near.take(near)
        whole = len(mic)
        if whole == 0:
            return mic
        if self._resync:
            # What the microphone hears now is what is being played now, not a backlog.
            self.stats.far_dropped += max(0, len(self._far) - whole)
            self._far = self._far[-whole:]
            self._resync = False
        far = self._far[:whole]
        self._far = self._far[len(far) :]
        if len(far) < whole:
            far = np.concatenate([far, np.zeros(whole - len(far), np.int16)])
        out: PCM = self._aec.process(mic, far)
        self._count(mic, far, out)
        return out

    def reset(self) -> None:
        """Forget everything: waiting audio and what AEC3 has learnt of the room."""
        self._aec.reset()
        self._near.clear()
        self._far = np.zeros(0, np.int16)
        self._far_pending = np.zeros(0, np.int16)
        self._resync = True

    def resync(self) -> None:
        """Pair the next microphone audio with the newest far-end audio, dropping the older
        audio waiting: call it when the microphone restarts after audio was lost (see the
        module). Done by itself on the first microphone audio and after an overflow."""
        self._resync = True

    def _count(self, mic: PCM, far: PCM, out: PCM) -> None:
        def power(pcm: PCM) -> np.ndarray:
            x = pcm.astype(np.float64).reshape(-1, self.frame)
            return np.einsum("ij,ij->i", x, x)  # type: ignore[no-any-return]

        active = power(far) > FAR_ACTIVE_POWER * self.frame
        s = self.stats
        s.frames += len(active)
        n = int(active.sum())
        if n:
            s.far_active_frames += n
            s.in_energy += float(power(mic)[active].sum())
            s.out_energy += float(power(out)[active].sum())


class EchoCancelStage(MicAudioStage):
    """Cancels the assistant's echo from the microphone audio (`InputAudioFrame`s).

    Each audio frame goes on as a copy with its `pcm` replaced by the cancelled audio (same
    id, time and rate); a frame with nothing ready yet (under 10 ms of audio) is dropped. Audio
    at another rate than the canceller's passes through unchanged (with one warning).
    Everything else passes through untouched. The output side feeds `canceller.far_end`.
    Running figures are in `stats` (see `EchoStats`); nothing is emitted per frame.
    """

    worker, kept = "canceller", "echo"

    def __init__(self, canceller: EchoCanceller, name: str | None = None) -> None:
        super().__init__(name)
        self.canceller = canceller
        self.sample_rate = canceller.sample_rate

    @property
    def stats(self) -> EchoStats:
        return self.canceller.stats

    def clean(self, frame: InputAudioFrame) -> InputAudioFrame | None:
        pcm = self.canceller.process(frame.pcm)
        return dataclasses.replace(frame, pcm=pcm) if len(pcm) else None
