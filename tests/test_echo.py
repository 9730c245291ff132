"""Echo cancellation (WebRTC AEC3) in a simulated room, with real speech.

The assistant's voice is played; the microphone hears it 40 ms later (the speaker's buffer and
the air), through a short reverb, 8 dB down, over a low noise floor. Frames go in time order, as
a speaker callback and a microphone callback would interleave them: for each 20 ms, first
`far_end(what was played)`, then `process(what the microphone heard)`.

Figures measured when these tests were written are in the comments next to each floor.
"""

from __future__ import annotations

import functools

import numpy as np
import numpy.typing as npt
import pytest

from tests.speech import silence_16k, speech_16k
from tests.stagerun import StageRun
from voice_agent.audio.echo import EchoCanceller, EchoCancelStage
from voice_agent.audio.pcm import resample
from voice_agent.frames import (
    PCM,
    EndFrame,
    Frame,
    InputAudioFrame,
    LLMTextFrame,
    StartFrame,
    SystemFrame,
    TranscriptionFrame,
    UserStartedSpeakingFrame,
)

pytest.importorskip("pywebrtc_audio")

RATE = 16000
ASSISTANT = (
    "Here is a fairly long answer about the weather, which keeps going for a while so that "
    "the echo canceller can converge."
)
USER = "I want to stop you right there."
AEC_LATENCY = 128
"""AEC3 delays its output by 128 samples (8 ms), whatever the frame size."""

Signal = npt.NDArray[np.float64]


@functools.cache
def assistant() -> PCM:
    """About 6 s of the assistant talking, at 16 kHz."""
    return speech_16k(ASSISTANT)


def room(played: PCM, *, delay_ms: float = 40, gain_db: float = -8, seed: int = 1) -> Signal:
    """What the microphone hears of `played` (16 kHz): late, reverberant, attenuated."""
    rng = np.random.default_rng(seed)
    delay = round(RATE * delay_ms / 1000)
    tail = np.arange(1, 401)  # 25 ms of decaying reflections
    ir = np.zeros(delay + 1 + len(tail))
    ir[delay] = 1.0
    ir[delay + 1 :] = 0.3 * rng.standard_normal(len(tail)) * np.exp(-tail / 80)
    echo: Signal = np.convolve(played.astype(np.float64), ir)[: len(played)]
    return echo * 10 ** (gain_db / 20)


def microphone(*sources: Signal, seed: int = 0) -> PCM:
    """The sum of `sources` plus a low noise floor (about -60 dBFS), as int16."""
    total = np.sum(sources, axis=0)
    total += np.random.default_rng(seed).standard_normal(len(total)) * 30
    pcm: PCM = np.clip(total, -32768, 32767).astype(np.int16)
    return pcm


def run(
    aec: EchoCanceller,
    mic: PCM,
    played: PCM | None,
    far_rate: int = RATE,
    frame: int = 320,
) -> PCM:
    """Interleave the far end (`played`, at `far_rate`) and the microphone in frames of `frame`
    samples at 16 kHz; returns the concatenated output."""
    far_frame = frame * far_rate // RATE
    out = []
    for k, i in enumerate(range(0, len(mic), frame)):
        if played is not None:
            chunk = played[k * far_frame : (k + 1) * far_frame]
            if len(chunk):
                aec.far_end(chunk, far_rate)
        out.append(aec.process(mic[i : i + frame]))
    return np.concatenate(out)


def energy(x: npt.NDArray[np.generic]) -> float:
    return float(np.mean(np.square(x.astype(np.float64)))) + 1e-9


def db(a: float, b: float) -> float:
    return float(10 * np.log10(a / b))


def best_correlation(clean: Signal, out: PCM, max_lag: int = 320) -> tuple[float, int]:
    """Highest normalized correlation of `clean` with `out` delayed by 0..max_lag samples."""
    o = out.astype(np.float64)
    best = (-1.0, 0)
    for lag in range(max_lag + 1):
        seg = o[lag : lag + len(clean)]
        if len(seg) < len(clean):
            break
        c = float(np.dot(clean, seg) / np.sqrt(np.dot(clean, clean) * np.dot(seg, seg) + 1e-9))
        best = max(best, (c, lag))
    return best


# --- echo return loss enhancement --------------------------------------------------------


@pytest.mark.parametrize(
    ("far_rate", "frame"),
    [(16000, 320), (24000, 320), (16000, 480), (48000, 480)],
)
def test_the_echo_is_cancelled_once_converged(far_rate: int, frame: int) -> None:
    voice = assistant()
    played = resample(voice, RATE, far_rate)
    heard = resample(played, far_rate, RATE)[: len(voice)]  # what the speaker put in the air
    mic = microphone(room(heard))
    aec = EchoCanceller()
    out = run(aec, mic, played, far_rate, frame)
    assert abs(len(out) - len(mic)) < 160
    n = len(out)
    erle = db(energy(mic[RATE:n]), energy(out[RATE:n]))
    # measured: 30.9 dB after the first second, in all four cases
    assert erle > 25, f"ERLE {erle:.1f} dB"
    # the running figures a metrics consumer reads agree (they include the first second)
    assert aec.stats.far_active_frames > 0.8 * aec.stats.frames  # measured 508 of 604
    assert aec.stats.erle_db > 25, aec.stats  # measured 32.2 dB


# --- double talk -------------------------------------------------------------------------


def test_the_user_talking_over_the_echo_survives() -> None:
    voice = assistant()
    echo = room(voice)
    user = speech_16k(USER).astype(np.float64) * 0.5  # as loud as the echo at the microphone
    start = 2 * RATE
    near = np.zeros(len(voice))
    near[start : start + len(user)] = user
    span = slice(start, start + len(user))
    # measured: the user 0.9 dB above the echo over their span
    assert abs(db(energy(user), energy(echo[span]))) < 3
    mic = microphone(echo, near)
    out = run(EchoCanceller(), mic, voice)

    corr, lag = best_correlation(user, out[start:])
    raw, _ = best_correlation(user, mic[start:])
    kept = db(energy(out[start + lag : start + lag + len(user)]), energy(user))
    # measured: correlation 0.80 (0.74 in the raw microphone), at lag 128 (AEC3's latency);
    # the user's energy comes out 2.6 dB down. (With the user 6 dB louder: 0.86, raw 0.91,
    # 1.6 dB down: AEC3's suppressor bends the near speech a little while the far end plays.)
    assert corr > 0.7, f"correlation {corr:.3f} (raw {raw:.3f})"
    assert lag == AEC_LATENCY
    assert abs(kept) < 6, f"user's speech {kept:.1f} dB"
    # and the echo alone, before the user speaks, is cancelled (measured 29.5 dB)
    assert db(energy(mic[RATE:start]), energy(out[RATE:start])) > 20


def test_without_far_end_audio_speech_passes_unchanged() -> None:
    user = np.concatenate([silence_16k(0.5), speech_16k(USER), silence_16k(0.5)])
    out = run(EchoCanceller(), user, None)
    assert len(out) == len(user) // 160 * 160  # the last partial 10 ms waits
    # measured: -0.03 dB, correlation 0.945 at lag 128
    assert abs(db(energy(out), energy(user))) < 3
    corr, lag = best_correlation(user.astype(np.float64)[: len(user) - 320], out)
    assert corr > 0.9 and lag == AEC_LATENCY


# --- frame sizes and buffering -----------------------------------------------------------


def test_ragged_frames_come_out_in_whole_10ms_frames() -> None:
    aec = EchoCanceller()
    mic = speech_16k(USER)
    sizes = [100, 320, 7, 480, 333, 160, 1]
    outs: list[PCM] = []
    fed = 0
    for i, size in enumerate(sizes * 40):
        chunk = mic[fed : fed + size]
        fed += len(chunk)
        if i % 2:
            aec.far_end(np.zeros(size * 3 // 2, np.int16), 24000)
        out = aec.process(chunk)
        assert len(out) % 160 == 0
        outs.append(out)
        produced = sum(len(o) for o in outs)
        assert 0 <= fed - produced < 160  # at most one partial frame waits
    assert len(aec.process(np.zeros(0, np.int16))) == 0


def test_far_end_audio_without_a_microphone_stays_bounded_and_realigns() -> None:
    # 16 s of the assistant talking; the microphone delivers nothing for the first 10 s
    voice = np.concatenate([assistant()] * 3)[: 16 * RATE]
    played = resample(voice, RATE, 24000)
    mic = microphone(room(voice))
    aec = EchoCanceller()
    gap = 10 * RATE
    for i in range(0, gap * 3 // 2, 480):  # 20 ms at 24 kHz
        aec.far_end(played[i : i + 480], 24000)
        assert aec.far_buffered_ms <= 1000
    assert aec.far_buffered_ms == 1000
    assert aec.stats.far_dropped == gap - RATE
    # the microphone comes back: what it hears is what is playing now, not a second-old backlog
    out = run(aec, mic[gap:], played[gap * 3 // 2 :], 24000)
    assert aec.far_buffered_ms <= 20
    erle = db(energy(mic[gap + RATE :]), energy(out[RATE:]))
    # measured 32.9 dB (0.7 dB if the second-old backlog were paired with it)
    assert erle > 25, f"ERLE {erle:.1f} dB after the microphone came back"


def test_audio_played_before_the_microphone_starts_or_across_a_lost_gap_is_not_paired() -> None:
    # a far end that leads the echo cannot be cancelled (it is not causal): a 300 ms head start
    # left paired in order gives 0.9 dB; the first microphone audio is paired with the newest
    voice = np.concatenate([assistant()] * 2)[: 9 * RATE]
    mic = microphone(room(voice))
    aec = EchoCanceller()
    head = round(0.3 * RATE)
    aec.far_end(voice[:head], RATE)
    out = run(aec, mic[head : 4 * RATE], voice[head : 4 * RATE])
    erle = db(energy(mic[head + RATE : 4 * RATE]), energy(out[RATE:]))
    assert erle > 25, f"ERLE {erle:.1f} dB"  # measured 31.1 dB
    # the microphone loses 500 ms while audio plays; the transport says so when it is back
    lost = 4 * RATE + RATE // 2
    aec.far_end(voice[4 * RATE : lost], RATE)
    aec.resync()
    out = run(aec, mic[lost:], voice[lost:])
    erle = db(energy(mic[lost + RATE // 2 :]), energy(out[RATE // 2 :]))
    assert erle > 25, f"ERLE {erle:.1f} dB"  # measured 33.2 dB (1.3 dB without the resync)


def test_far_end_at_an_odd_rate_adds_up_without_drift() -> None:
    aec = EchoCanceller()
    rng = np.random.default_rng(3)
    total = 0
    for _ in range(200):
        n = int(rng.integers(1, 900))
        aec.far_end(np.zeros(n, np.int16), 22050)
        total += n
    # 22.05 kHz resamples in whole 441-sample blocks (320 at 16 kHz); the tail waits
    kept = round(aec.far_buffered_ms * RATE / 1000) + aec.stats.far_dropped
    assert kept == total // 441 * 320


# --- the stage -----------------------------------------------------------------------------


async def test_stage_cancels_audio_frames_and_passes_the_rest_in_order() -> None:
    voice = assistant()[: 2 * RATE]
    mic = microphone(room(voice))
    twin = EchoCanceller()
    aec = EchoCanceller()
    stage = EchoCancelStage(aec)
    sent: list[Frame] = []
    expected: list[PCM] = []
    async with StageRun(stage) as run:
        for k, i in enumerate(range(0, len(mic), 320)):
            aec.far_end(voice[i : i + 320], RATE)
            twin.far_end(voice[i : i + 320], RATE)
            frames: list[Frame] = [InputAudioFrame(pcm=mic[i : i + 320], sample_rate=RATE)]
            expected.append(twin.process(mic[i : i + 320]))
            if k % 25 == 0:
                frames.append(
                    UserStartedSpeakingFrame() if k % 50 else TranscriptionFrame(text=f"t{k}")
                )
            sent += frames
            await run.through(*frames)  # before the next far_end
        tiny = InputAudioFrame(pcm=mic[:100], sample_rate=RATE)  # under 10 ms: nothing comes out
        run.send(tiny, LLMTextFrame(text="data"))
        await run.end()

    out = run.down
    assert isinstance(out[0], StartFrame)
    system = [f for f in out[1:] if isinstance(f, SystemFrame)]
    assert [f.id for f in system] == [f.id for f in sent]  # in order, tiny frame dropped
    assert [type(f) for f in out if not isinstance(f, SystemFrame)] == [LLMTextFrame, EndFrame]
    audio_in = [f for f in sent if isinstance(f, InputAudioFrame)]
    audio_out = [f for f in system if isinstance(f, InputAudioFrame)]
    for a, b, want in zip(audio_in, audio_out, expected, strict=True):
        assert b is not a and b.created_ns == a.created_ns and b.sample_rate == RATE
        assert np.array_equal(b.pcm, want)  # the canceller's output, frame for frame
    cancelled = np.concatenate([f.pcm for f in audio_out])
    assert db(energy(mic[RATE:]), energy(cancelled[RATE:])) > 20  # measured 29.5 dB
    assert stage.stats.erle_db > 15  # measured 31.9 dB (the first second included)
