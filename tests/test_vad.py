"""Voice activity on real speech (Piper's joe voice) with the real WebRTC gate and Silero model."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from tests.speech import silence_16k, speech_16k
from voice_agent.audio import vad
from voice_agent.audio.pcm import audible
from voice_agent.audio.vad import SileroVAD, VadEvent, VADStage, VoiceActivity, load_vad
from voice_agent.audio.vad import stage as vad_stage
from voice_agent.config import VadSettings
from voice_agent.frames import (
    PCM,
    EndFrame,
    FalseOnsetFrame,
    Frame,
    InputAudioFrame,
    SpeechOnsetFrame,
    StartFrame,
    TranscriptRequestFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from voice_agent.modelfiles import ModelError, ModelStore
from voice_agent.pipeline import Pipeline

pytestmark = pytest.mark.slow

RATE = 16000
MS = RATE // 1000
QUESTION = "Could you tell me the weather in Paris tomorrow?"
FOLLOW_UP = "And what about London?"
SETTINGS = VadSettings()


@pytest.fixture(scope="module")
def silero(store: ModelStore) -> SileroVAD:
    return SileroVAD(store.path(vad.MODEL_ID))


def trimmed(text: str) -> PCM:
    """Speech without the leading and trailing silence Piper adds."""
    pcm = speech_16k(text)
    first, end = audible(pcm)
    return pcm[first:end]


def run(
    silero: SileroVAD, pcm: PCM, chunk: int = 512, settings: VadSettings = SETTINGS
) -> list[VadEvent]:
    activity = VoiceActivity(silero, settings)
    events: list[VadEvent] = []
    for i in range(0, len(pcm), chunk):
        events += activity.feed(pcm[i : i + chunk])
    assert activity.samples == len(pcm)
    return events


def kinds(events: list[VadEvent]) -> list[str]:
    """The kinds of the events, without the "quiet" hints (tested on their own)."""
    return [e.kind for e in events if e.kind != "quiet"]


def kinds_with_quiet(events: list[VadEvent]) -> list[str]:
    return [e.kind for e in events]


def test_speech_going_quiet_is_reported_once_before_each_pause(silero: SileroVAD) -> None:
    audio = np.concatenate([silence_16k(1), speech_16k(QUESTION), silence_16k(1)])
    events = run(silero, audio)
    stops = [e for e in events if e.kind == "stopped"]
    quiets = [e for e in events if e.kind == "quiet"]
    assert stops and quiets
    for stop in stops:  # 64 ms into the silence that became the pause: one quiet, then stopped
        before = [q for q in quiets if q.at_sample <= stop.at_sample]
        assert before and stop.speech_end_sample is not None
        assert before[-1].at_sample == stop.speech_end_sample + 2 * 512


def test_a_sentence_starts_and_stops_once_near_its_real_edges(silero: SileroVAD) -> None:
    audio = np.concatenate([silence_16k(1), speech_16k(QUESTION), silence_16k(1)])
    begin, end = audible(audio)
    events = run(silero, audio)
    assert kinds(events) == ["onset", "started", "stopped"]
    onset, started, stopped = [e for e in events if e.kind != "quiet"]
    assert started.onset_sample is not None and stopped.speech_end_sample is not None
    assert abs(started.onset_sample - begin) <= 100 * MS
    assert onset.at_sample <= started.at_sample
    assert started.at_sample - started.onset_sample >= SETTINGS.start_ms * MS
    assert abs(stopped.speech_end_sample - end) <= 150 * MS
    # stopped once the silence lasted stop_ms, rounded up to a whole 32 ms window
    silence = stopped.at_sample - stopped.speech_end_sample
    assert SETTINGS.stop_ms * MS <= silence < SETTINGS.stop_ms * MS + vad.WINDOW


@pytest.mark.parametrize(("gap_s", "pairs"), [(0.6, 2), (0.1, 1)])
def test_a_gap_longer_than_stop_ms_splits_speech_and_a_shorter_one_does_not(
    silero: SileroVAD, gap_s: float, pairs: int
) -> None:
    first, second = trimmed(QUESTION), trimmed(FOLLOW_UP)
    audio = np.concatenate([silence_16k(1), first, silence_16k(gap_s), second, silence_16k(1)])
    events = run(silero, audio)
    assert kinds(events) == ["onset", "started", "stopped"] * pairs
    started = [e.onset_sample for e in events if e.kind == "started"]
    stopped = [e.speech_end_sample for e in events if e.kind == "stopped"]
    assert started[0] is not None and abs(started[0] - RATE) <= 100 * MS
    assert stopped[-1] is not None and abs(stopped[-1] - (len(audio) - RATE)) <= 150 * MS
    if pairs == 2:
        second_begins = RATE + len(first) + round(gap_s * RATE)
        assert started[1] is not None and abs(started[1] - second_begins) <= 100 * MS


def test_silence_and_low_noise_are_not_speech(silero: SileroVAD) -> None:
    assert run(silero, silence_16k(3)) == []
    rng = np.random.default_rng(7)
    for dbfs in (-50, -40):
        noise = rng.normal(0.0, 32768 * 10 ** (dbfs / 20), 3 * RATE).astype(np.int16)
        assert run(silero, noise) == [], f"{dbfs} dBFS white noise"


def test_short_sounds_never_count_as_speech(silero: SileroVAD) -> None:
    rng = np.random.default_rng(3)
    pad = silence_16k(0.5)
    burst = (rng.normal(0.0, 8000.0, 60 * MS)).astype(np.int16)
    assert kinds(run(silero, np.concatenate([pad, burst, pad]))) in ([], ["onset", "false_onset"])
    # 80 ms slices of a word: Silero hears some of them as speech, never long enough
    speech = speech_16k(QUESTION)
    outcomes = [
        kinds(run(silero, np.concatenate([pad, speech[at : at + 80 * MS], pad])))
        for at in range(2000, len(speech) - 3000, 1000)
    ]
    assert all(o in ([], ["onset", "false_onset"]) for o in outcomes), outcomes
    assert ["onset", "false_onset"] in outcomes


def false_onset_audio(silero: SileroVAD) -> tuple[PCM, list[VadEvent]]:
    """The first 80 ms slice of a sentence that makes an onset, padded with silence."""
    pad, speech = silence_16k(0.5), speech_16k(QUESTION)
    for at in range(2000, len(speech) - 3000, 1000):
        audio = np.concatenate([pad, speech[at : at + 80 * MS], pad])
        if events := run(silero, audio):
            return audio, events
    pytest.fail("no slice made an onset")


def test_false_onset_comes_after_two_non_speech_windows(silero: SileroVAD) -> None:
    _, events = false_onset_audio(silero)
    onset, false_onset = events
    # the onset window, at most one more speech window, then two that are not speech
    assert false_onset.at_sample - onset.at_sample in (2 * vad.WINDOW, 3 * vad.WINDOW)


def test_events_do_not_depend_on_how_the_audio_is_chunked(silero: SileroVAD) -> None:
    pad = silence_16k(0.5)
    click = np.random.default_rng(1).normal(0.0, 8000.0, 60 * MS).astype(np.int16)
    audio = np.concatenate(
        [pad, trimmed(QUESTION), silence_16k(0.1), trimmed(FOLLOW_UP), pad, click, pad]
    )
    for settings in (SETTINGS, VadSettings(gate_frame_ms=10, gate_aggressiveness=3)):
        reference = run(silero, audio, 512, settings)
        assert "started" in kinds(reference)
        for chunk in (160, 320, 1000, 4096):
            assert run(silero, audio, chunk, settings) == reference, chunk


def test_feed_rejects_audio_that_is_not_int16(silero: SileroVAD) -> None:
    activity = VoiceActivity(silero, SETTINGS)
    with pytest.raises(ValueError, match="int16"):
        activity.feed(np.zeros(512, np.float32))
    assert not activity.speaking and activity.samples == 0


async def test_the_stage_passes_audio_on_and_follows_it_with_speech_frames(
    silero: SileroVAD, monkeypatch: pytest.MonkeyPatch
) -> None:
    audio = np.concatenate([silence_16k(1), speech_16k(QUESTION), silence_16k(1)])
    everything = run(silero, audio)
    expected = [e for e in everything if e.kind != "quiet"]
    activity = VoiceActivity(silero, SETTINGS)
    # the clock of a live microphone: now is when the last sample fed was captured
    t0 = 10**12
    clock = SimpleNamespace(monotonic_ns=lambda: t0 + activity.samples * 10**9 // RATE)
    monkeypatch.setattr(vad_stage, "time", clock)
    out: list[Frame] = []
    events: list[tuple[str, dict[str, Any]]] = []
    pipeline = Pipeline(
        [VADStage(activity)],
        on_downstream=out.append,
        events=lambda event: events.append((event.type, event.data)),
    )
    await pipeline.start()
    frames = [
        InputAudioFrame(pcm=audio[i : i + 320], sample_rate=RATE) for i in range(0, len(audio), 320)
    ]
    for frame in frames:
        pipeline.queue(frame)
    pipeline.queue(EndFrame())
    await asyncio.wait_for(pipeline.wait_ended(), 5)
    await pipeline.stop()

    assert isinstance(out[0], StartFrame) and isinstance(out[-1], EndFrame)
    passed = [f for f in out if isinstance(f, InputAudioFrame)]
    assert len(passed) == len(frames)
    assert all(a is b for a, b in zip(passed, frames, strict=True))  # every one, in order
    requests = [f for f in out if isinstance(f, TranscriptRequestFrame)]
    assert len(requests) == kinds_with_quiet(everything).count("quiet") >= 1
    assert out.index(requests[-1]) < next(
        i for i, f in enumerate(out) if isinstance(f, UserStoppedSpeakingFrame)
    )
    speech = [
        f
        for f in out
        if not isinstance(f, InputAudioFrame | StartFrame | EndFrame | TranscriptRequestFrame)
    ]
    assert [type(f) for f in speech] == [
        SpeechOnsetFrame,
        UserStartedSpeakingFrame,
        UserStoppedSpeakingFrame,
    ]
    # each follows the audio frame that completed its window
    for said, event in zip(speech, expected, strict=True):
        before = out[: next(i for i, f in enumerate(out) if f is said)]
        heard = sum(len(f.pcm) for f in before if isinstance(f, InputAudioFrame))
        assert event.at_sample <= heard < event.at_sample + 320
    started, stopped = speech[1], speech[2]
    assert isinstance(started, UserStartedSpeakingFrame)
    assert isinstance(stopped, UserStoppedSpeakingFrame)
    assert expected[1].onset_sample is not None and expected[2].speech_end_sample is not None
    assert started.onset_ns == t0 + expected[1].onset_sample * 10**9 // RATE
    assert stopped.speech_end_ns == t0 + expected[2].speech_end_sample * 10**9 // RATE
    assert [name for name, _ in events] == [
        "vad_onset",
        "user_started_speaking",
        "user_stopped_speaking",
    ]
    assert 0 < events[1][1]["onset_ms_ago"] < 200
    assert events[2][1]["silence_ms"] >= SETTINGS.stop_ms


async def test_the_stage_reports_a_false_onset(silero: SileroVAD) -> None:
    audio, _ = false_onset_audio(silero)
    out: list[Frame] = []
    events: list[str] = []
    pipeline = Pipeline(
        [VADStage(VoiceActivity(silero, SETTINGS))],
        on_downstream=out.append,
        events=lambda event: events.append(event.type),
    )
    await pipeline.start()
    for i in range(0, len(audio), 480):
        pipeline.queue(InputAudioFrame(pcm=audio[i : i + 480], sample_rate=RATE))
    pipeline.queue(EndFrame())
    await asyncio.wait_for(pipeline.wait_ended(), 5)
    await pipeline.stop()
    assert [type(f) for f in out if isinstance(f, SpeechOnsetFrame | FalseOnsetFrame)] == [
        SpeechOnsetFrame,
        FalseOnsetFrame,
    ]
    assert events == ["vad_onset", "vad_false_onset"]
    assert sum(len(f.pcm) for f in out if isinstance(f, InputAudioFrame)) == len(audio)


def test_load_vad_uses_the_catalog_model(store: ModelStore) -> None:
    activity = load_vad(SETTINGS, store)
    assert activity.feed(silence_16k(0.1)) == [] and activity.samples == 1600


def test_a_truncated_or_missing_model_names_the_package_to_reinstall(
    store: ModelStore, tmp_path: Path
) -> None:
    bad = tmp_path / "silero_vad.onnx"
    shutil.copyfile(store.path(vad.MODEL_ID), bad)
    with bad.open("r+b") as f:
        f.truncate(bad.stat().st_size // 2)
    hint = "reinstall with: pip install --force-reinstall --no-deps pipecat-ai==1.14.0"
    with pytest.raises(ModelError, match=r"silero-vad: cannot load .*silero_vad\.onnx") as exc:
        SileroVAD(bad)
    assert hint in str(exc.value)
    with pytest.raises(ModelError, match="is missing") as exc:
        SileroVAD(tmp_path / "gone.onnx")
    assert hint in str(exc.value)
    with pytest.raises(ModelError, match="is not a Silero VAD v5 model") as exc:
        SileroVAD(store.path("smart-turn-v3.2"))
    assert hint in str(exc.value)


def test_load_vad_refuses_a_corrupt_installed_model(
    store: ModelStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A damaged pipecat-ai install: the store's checksum catches it before onnxruntime."""
    site = tmp_path / "site"
    model = site / "pipecat" / "audio" / "vad" / "data" / "silero_vad.onnx"
    model.parent.mkdir(parents=True)
    model.write_bytes(store.path(vad.MODEL_ID).read_bytes()[:100_000])
    dist = site / "pipecat_ai-1.14.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: pipecat-ai\nVersion: 1.14.0\n")
    monkeypatch.syspath_prepend(str(site))
    damaged = ModelStore(cache_dir=tmp_path / "cache", progress=None)
    with pytest.raises(
        ModelError,
        match=r"silero-vad: pipecat/audio/vad/data/silero_vad\.onnx is corrupt .*"
        r"pip install --force-reinstall --no-deps pipecat-ai==1\.14\.0",
    ):
        load_vad(SETTINGS, damaged)


async def test_input_that_ends_mid_speech_closes_the_stretch_before_the_end(
    silero: SileroVAD,
) -> None:
    audio = np.concatenate([silence_16k(0.5), speech_16k(QUESTION)[:16000]])  # cut off
    out: list[Frame] = []
    pipeline = Pipeline([VADStage(VoiceActivity(silero, SETTINGS))], on_downstream=out.append)
    await pipeline.start()
    for i in range(0, len(audio), 320):
        pipeline.queue(InputAudioFrame(pcm=audio[i : i + 320], sample_rate=RATE))
    pipeline.queue(EndFrame())
    await asyncio.wait_for(pipeline.wait_ended(), 5)
    await pipeline.stop()
    speech = [
        type(f) for f in out if isinstance(f, UserStartedSpeakingFrame | UserStoppedSpeakingFrame)
    ]
    assert speech == [UserStartedSpeakingFrame, UserStoppedSpeakingFrame]
    assert isinstance(out[-2], UserStoppedSpeakingFrame) and isinstance(out[-1], EndFrame)


def test_sessions_share_the_loaded_model_but_not_their_streams(
    silero: SileroVAD, store: ModelStore
) -> None:
    one_model = vad.vad_factory(SETTINGS, store)
    a, b = one_model(), one_model()
    speech = np.concatenate([silence_16k(0.5), speech_16k(QUESTION), silence_16k(0.5)])
    quiet = silence_16k(len(speech) / RATE)
    got_a: list[VadEvent] = []
    got_b: list[VadEvent] = []
    for i in range(0, len(speech), 320):  # interleaved, as two sessions would run
        got_a += a.feed(speech[i : i + 320])
        got_b += b.feed(quiet[i : i + 320])
    assert got_a == run(silero.fresh(), speech, chunk=320)
    assert got_b == []
