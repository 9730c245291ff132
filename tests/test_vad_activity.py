"""The voice activity state machine and its stage, without models: a scripted gate and Silero.

Every 512-sample window of the audio built here holds one value, and the scripted Silero scores
a window at that value / 1000, so a test writes the speech probability of each window; the gate
hears speech in any frame that is not all zeros. (tests/test_vad.py runs the real models.)
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.stagerun import StageRun
from voice_agent.audio.vad import VadEvent, VADStage, VoiceActivity, activity
from voice_agent.config import VadSettings
from voice_agent.frames import (
    PCM,
    InputAudioFrame,
    SpeechDetectionFrame,
    SpeechOnsetFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)

W = 512
SPEECH, NOISE, SILENCE = 0.9, 0.4, 0.0


class ScriptedSilero:
    """Stands in for `SileroVAD`: a window's probability is its first sample / 1000."""

    def __init__(self) -> None:
        self.scored = 0
        self.skipped = 0

    def reset(self) -> None:
        pass

    def prob(self, window: PCM) -> float:
        self.scored += 1
        return int(window[0]) / 1000

    def skip(self, window: PCM) -> None:
        self.skipped += 1


class AnySoundGate:
    """Stands in for `WebRtcGate`: a frame is speech unless it is all zeros."""

    def __init__(self, aggressiveness: int, frame_ms: int) -> None:
        self.frame = 16 * frame_ms

    def is_speech(self, frame: PCM) -> bool:
        return bool(frame.any())


@pytest.fixture(autouse=True)
def scripted_gate(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(activity, "WebRtcGate", AnySoundGate)


def windows(*probs: float) -> PCM:
    """One 512-sample window per probability."""
    return np.concatenate([np.full(W, round(p * 1000), np.int16) for p in probs])


def voice(silero: ScriptedSilero | None = None) -> VoiceActivity:
    """Default settings: started after 120 ms (4 windows), stopped after 160 ms (5 windows)."""
    return VoiceActivity(silero or ScriptedSilero(), VadSettings())  # type: ignore[arg-type]


def test_speech_starts_after_start_ms_and_stops_after_stop_ms_at_exact_samples() -> None:
    v = voice()
    events = v.feed(windows(SILENCE, SILENCE, *[SPEECH] * 6, *[SILENCE] * 6))
    assert events == [
        VadEvent("onset", 3 * W),
        VadEvent("started", 6 * W, onset_sample=2 * W),  # the 4th speech window: 128 >= 120 ms
        VadEvent("quiet", 10 * W),  # two windows into the silence
        VadEvent("stopped", 13 * W, speech_end_sample=8 * W),  # five windows (160 ms) into it
    ]
    assert not v.speaking and v.samples == 14 * W


def test_an_onset_is_false_after_two_non_speech_windows_in_a_row() -> None:
    v = voice()
    # a single gap does not end the onset; two in a row do
    events = v.feed(windows(SILENCE, SPEECH, SILENCE, SPEECH, SILENCE, SILENCE, SILENCE))
    assert events == [VadEvent("onset", 2 * W), VadEvent("false_onset", 6 * W)]
    assert not v.speaking


def test_a_pause_shorter_than_stop_ms_carries_on_speaking() -> None:
    v = voice()
    events = v.feed(windows(*[SPEECH] * 4, *[SILENCE] * 4, *[SPEECH] * 2))
    assert [e.kind for e in events] == ["onset", "started", "quiet"]
    assert v.speaking
    events = v.feed(windows(*[SILENCE] * 5))
    assert events[-1] == VadEvent("stopped", 15 * W, speech_end_sample=10 * W)


def test_a_window_needs_the_threshold_and_the_gate_to_be_speech() -> None:
    silero = ScriptedSilero()
    v = voice(silero)
    assert v.feed(windows(*[NOISE] * 8)) == []  # scored below 0.5
    assert silero.scored == 8
    v.threshold = 0.3
    assert [e.kind for e in v.feed(windows(*[NOISE] * 4))] == ["onset", "started"]
    quiet = voice(silero := ScriptedSilero())
    assert quiet.feed(windows(*[SILENCE] * 8)) == []
    assert (silero.scored, silero.skipped) == (0, 8)  # the gate heard nothing: never scored


def test_events_and_positions_do_not_depend_on_chunking() -> None:
    audio = windows(SILENCE, *[SPEECH] * 5, SILENCE, SPEECH, SILENCE, SILENCE, *[SILENCE] * 5)
    whole = voice().feed(audio)
    assert [e.kind for e in whole] == ["onset", "started", "quiet", "stopped"]
    for chunk in (1, 100, 511, 513, 1500):
        v = voice()
        events = [e for i in range(0, len(audio), chunk) for e in v.feed(audio[i : i + chunk])]
        assert events == whole, chunk


def frame(pcm: PCM) -> InputAudioFrame:
    return InputAudioFrame(pcm=pcm, sample_rate=16000)


async def test_turning_detection_off_mid_speech_closes_the_stretch_and_mutes_events() -> None:
    v = voice()
    stage = VADStage(v)
    audio = [frame(windows(SILENCE, *[SPEECH] * 4)), frame(windows(*[SILENCE] * 6, *[SPEECH] * 5))]
    async with StageRun(stage) as run:
        await run.through(audio[0])
        await run.through(SpeechDetectionFrame(enabled=False, threshold=0.7))
        await run.through(audio[1])  # a stop and new speech, neither reported
        await run.end()
    speech = (SpeechOnsetFrame, UserStartedSpeakingFrame, UserStoppedSpeakingFrame)
    assert [type(f) for f in run.down if isinstance(f, speech)] == list(speech)
    assert run.event_names == ["vad_onset", "user_started_speaking", "user_stopped_speaking"]
    assert run.of(InputAudioFrame) == audio
    assert not stage.enabled and v.threshold == 0.7
    assert v.speaking  # it kept following the audio while off


async def test_a_speech_detection_frame_sets_the_threshold() -> None:
    async with StageRun(VADStage(voice())) as run:
        await run.through(SpeechDetectionFrame(enabled=True, threshold=0.95))
        await run.through(frame(windows(*[SPEECH] * 6, *[SILENCE] * 2)))
        assert run.of(SpeechOnsetFrame) == []
        await run.through(frame(windows(0.99)))
        assert len(run.of(SpeechOnsetFrame)) == 1
        await run.end()
