"""Session records, in parts: the transcript from a timeline of events, the stereo recording's
placement of audio on the session clock, the store (list, show, export, retention, bad ids)
and `voice-agent sessions`. The server's side (HTTP, a real recorded session) is in
test_records_server.py."""

from __future__ import annotations

import json
import os
import tarfile
import time
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.fakes import make_event
from voice_agent.cli import main
from voice_agent.records import RecordError, RecordStore
from voice_agent.records.audio import (
    ASSISTANT,
    CALLER,
    HOLD_MS,
    RecordingSink,
    StereoRecording,
    WavFile,
)
from voice_agent.records.clock import SessionClock
from voice_agent.records.store import AUDIO, TRANSCRIPT
from voice_agent.records.transcript import TranscriptLines

FRAME = 320  # 20 ms at 16 kHz


def lines_of(timeline: list[tuple[str, float, dict[str, Any]]]) -> list[dict[str, Any]]:
    clock = SessionClock(now=lambda: 0.0)  # the session began at monotonic 0
    transcript = TranscriptLines("rec", clock, audio=True)
    out = []
    for kind, t_ms, data in timeline:
        out += transcript.feed(make_event(kind, t_ms, **data))
    return out


# --- the transcript --------------------------------------------------------------------------


def test_a_timeline_becomes_turns_and_replies_generated_vs_heard() -> None:
    lines = lines_of(
        [
            ("session_started", 0, {"session": "s1", "persona": "concierge"}),
            ("user_started_speaking", 1200, {"onset_ms_ago": 150, "audio_ms": 1050}),
            ("turn_started", 1200, {"turn": 1}),
            ("user_stopped_speaking", 2500, {"speech_end_ms_ago": 160, "silence_ms": 160}),
            ("transcript", 2600, {"role": "user", "text": "What time is it?", "final": True}),
            ("user_message", 2610, {"turn": 1, "id": "m1", "text": "What time is it?"}),
            ("llm_started", 2620, {}),
            ("end_of_turn", 2900, {"turn": 1, "reason": "finished", "text": ""}),
            ("llm_done", 3000, {"text": "It is noon. Anything else?", "id": "m2"}),
            ("bot_started_speaking", 3100, {}),
            ("reply_text", 3400, {"text": "It "}),
            ("reply_text", 3500, {"text": "is noon. "}),
            ("reply_text", 3900, {"text": "Anything else? "}),
            ("bot_stopped_speaking", 4000, {"played_ms": 900}),
            # the second turn: its reply is cut by the user
            ("user_started_speaking", 5000, {"onset_ms_ago": 120}),
            ("turn_started", 5000, {"turn": 2}),
            ("user_stopped_speaking", 6000, {"speech_end_ms_ago": 160}),
            ("transcript", 6100, {"role": "user", "text": "Tell me a story.", "final": True}),
            ("user_message", 6110, {"turn": 2, "id": "m3", "text": "Tell me a story."}),
            ("end_of_turn", 6300, {"turn": 2, "reason": "finished", "text": "Tell me a story."}),
            ("llm_started", 6310, {}),
            ("bot_started_speaking", 6700, {}),
            ("reply_text", 6900, {"text": "Once "}),
            ("interruption_confirmed", 7000, {"by": "words", "speech_ms": 400, "text": "stop"}),
            ("playback_interrupted", 7010, {"played_ms": 310, "heard": "Once upon"}),
            ("llm_done", 7020, {"text": "Once upon a time there was a fox.", "id": "m4"}),
            ("error", 7100, {"message": "the LLM is slow", "code": "timeout", "source": "llm"}),
            ("session_ended", 8000, {"session": "s1"}),
        ]
    )
    kinds = [line["type"] for line in lines]
    assert kinds == [
        "session",
        "user_turn",
        "reply",
        "user_turn",
        "interruption",
        "reply",
        "error",
        "session_ended",
    ]
    session, turn1, reply1, turn2, cut, reply2, error, end = lines
    assert session["session"] == "s1" and session["persona"] == "concierge" and session["audio"]
    assert session["started_at"].endswith("Z")
    assert turn1 == {
        "type": "user_turn",
        "t_ms": 2900.0,
        "turn": 1,
        "start_ms": 1050.0,  # 150 ms before the event that confirmed the speech
        "end_ms": 2340.0,
        "text": "What time is it?",  # its final transcript (the end of turn had none)
        "reason": "finished",
    }
    assert reply1["turn"] == 1 and reply1["start_ms"] == 3100 and reply1["end_ms"] == 4000
    assert reply1["generated"] == reply1["heard"] == "It is noon. Anything else?"
    assert not reply1["interrupted"] and reply1["played_ms"] == 900
    assert turn2["start_ms"] == 4880 and turn2["end_ms"] == 5840
    assert cut["by"] == "words" and cut["text"] == "stop"
    assert reply2["turn"] == 2 and reply2["interrupted"] and reply2["played_ms"] == 310
    assert reply2["generated"] == "Once upon a time there was a fox."
    assert reply2["heard"] == "Once upon" and reply2["end_ms"] == 7010
    assert error["code"] == "timeout" and error["source"] == "llm" and not error["fatal"]
    assert end["duration_ms"] == 8000


def test_a_reply_never_heard_and_a_session_that_ends_mid_reply() -> None:
    lines = lines_of(
        [
            ("session_started", 0, {"session": "s2", "persona": "tutor"}),
            ("user_message", 100, {"turn": 1, "id": "m1", "text": "hi"}),
            ("llm_started", 110, {}),
            ("llm_done", 300, {"text": "Hello there.", "id": "m2"}),
            ("playback_interrupted", 400, {"played_ms": 0, "heard": ""}),  # held, then dropped
            ("turn_retracted", 410, {"turn": 1, "ids": ("m1", "m2")}),
            ("user_message", 900, {"turn": 1, "id": "m3", "text": "hi there"}),
            ("llm_started", 910, {}),
            ("llm_done", 1000, {"text": "Hi! How can I help?", "id": "m4"}),
            ("bot_started_speaking", 1100, {}),
            ("reply_text", 1300, {"text": "Hi! "}),
            ("session_ended", 1400, {"session": "s2"}),
        ]
    )
    unheard, retracted, last, end = lines[1:]
    assert unheard["type"] == "reply" and unheard["interrupted"]
    assert unheard["heard"] == "" and unheard["start_ms"] is None and unheard["end_ms"] is None
    assert retracted == {"type": "turn_retracted", "t_ms": 410.0, "turn": 1}
    assert last["type"] == "reply" and last["generated"] == "Hi! How can I help?"
    assert last["heard"] == "Hi!" and last["end_ms"] == 1400  # still playing when it ended
    assert end["type"] == "session_ended"


def test_fixed_words_are_replies_that_say_why_and_answer_no_turn() -> None:
    greeting = "Hi, I'm Ada. What can I do for you?"
    lines = lines_of(
        [
            ("session_started", 0, {"session": "s3", "persona": "concierge"}),
            ("assistant_said", 10, {"why": "greeting", "text": greeting, "id": "m1"}),
            ("bot_started_speaking", 50, {}),
            ("reply_text", 300, {"text": "Hi, I'm Ada. "}),
            ("user_started_speaking", 900, {"onset_ms_ago": 100}),
            ("playback_interrupted", 950, {"played_ms": 850, "heard": "Hi, I'm Ada."}),
            ("assistant_said", 20000, {"why": "reprompt", "text": "Are you still there?"}),
            ("bot_started_speaking", 20050, {}),
            ("reply_text", 20900, {"text": "Are you still there? "}),
            ("bot_stopped_speaking", 21000, {"played_ms": 950}),
            ("session_ended", 21500, {"session": "s3", "reason": "idle"}),
        ]
    )
    said = [line for line in lines if line["type"] == "reply"]
    assert [(r["said"], r["turn"], r["interrupted"]) for r in said] == [
        ("greeting", None, True),
        ("reprompt", None, False),
    ]
    assert said[0]["generated"] == greeting and said[0]["heard"] == "Hi, I'm Ada."
    assert said[1]["heard"] == "Are you still there?" and said[1]["start_ms"] == 20050
    assert lines[-1]["type"] == "session_ended" and lines[-1]["reason"] == "idle"


# --- the stereo recording --------------------------------------------------------------------


def tone(n: int, value: int) -> np.ndarray:
    return np.full(n, value, np.int16)


def test_the_callers_stream_stays_whole_through_jitter_and_keeps_its_gaps() -> None:
    rec = StereoRecording()
    late = [0, 0, 400, 0, 0, 0]  # one frame 25 ms late (a jitter): the next ones come on time
    for i, extra in enumerate(late):
        rec.caller(tone(FRAME, i + 1), 1000 + i * FRAME + extra)
    assert rec.end[CALLER] == 1000 + 6 * FRAME
    # the client stops sending for a second, then goes on: the silence stays where it was
    resume = 1000 + 6 * FRAME + 16000
    frames = HOLD_MS * 16 // FRAME + 2
    for i in range(frames):
        rec.caller(tone(FRAME, 50 + i), resume + i * FRAME + (300 if i % 2 else 0))
    stereo = rec.finish()
    left = stereo[:, CALLER]
    assert np.all(left[:1000] == 0)
    for i in range(6):
        assert np.all(left[1000 + i * FRAME : 1000 + (i + 1) * FRAME] == i + 1)
    assert np.all(left[1000 + 6 * FRAME : resume] == 0)
    for i in range(frames):
        assert np.all(left[resume + i * FRAME : resume + (i + 1) * FRAME] == 50 + i)
    assert np.all(stereo[:, ASSISTANT] == 0)


def test_a_stream_anchored_while_the_loop_stalled_moves_to_where_its_earliest_frame_says() -> None:
    rec = StereoRecording()
    held = HOLD_MS * 16 // FRAME + 1  # frames read 600 samples late while the loop was slow
    for i in range(20):
        rec.caller(tone(FRAME, i + 1), 5000 + i * FRAME + (600 if i < held else 0))
    left = rec.finish()[:, CALLER]
    for i in range(20):  # the whole stretch where its on-time frames put it
        assert np.all(left[5000 + i * FRAME : 5000 + (i + 1) * FRAME] == i + 1), i
    assert np.all(left[:5000] == 0) and len(left) == 5000 + 20 * FRAME


def test_what_a_client_sent_before_the_session_began_is_left_out() -> None:
    rec = StereoRecording()
    for i in range(3):  # frame i went out at (i - 2) frames: 0 and 1 before the clock's zero,
        rec.caller(tone(FRAME, i + 1), 10)  # all three read in a burst as the session began
    for i in range(3, 10):  # then read on time
        rec.caller(tone(FRAME, i + 1), (i - 2) * FRAME + 5)
    left = rec.finish()[:, CALLER]
    # sent before the session began: gone, but for as much as the burst was read late (10)
    assert np.count_nonzero(left == 1) == 0 and np.count_nonzero(left == 2) <= 10
    assert np.all(left[10 : 10 + FRAME] == 3)
    for i in range(3, 10):  # within the read delay of where each went out
        assert np.all(left[(i - 2) * FRAME + 10 : (i - 1) * FRAME] == i + 1), i


def test_the_assistant_is_placed_where_it_went_out_and_cut_where_it_was_cut() -> None:
    rec = StereoRecording()
    for i in range(5):
        rec.assistant(tone(FRAME, 7), 8000 + i * FRAME + (30 if i == 3 else 0))
    rec.assistant(tone(FRAME, 9), 20000)  # the next reply, after a silence
    rec.cut(20000 + 100)  # only its first 100 samples were heard
    first = rec.take(10000)
    assert len(first) == 10000 and rec.base == 10000
    right = first[:, ASSISTANT]
    assert np.all(right[:8000] == 0) and np.all(right[8000 : 8000 + 5 * FRAME] == 7)
    rest = rec.finish()[:, ASSISTANT]
    assert np.all(rest[: 10000 - 5 * FRAME] == 0)
    assert np.all(rest[10000:10100] == 9) and len(rest) == 10100


def test_what_is_held_is_bounded() -> None:
    rec = StereoRecording()
    rec.caller(tone(FRAME, 1), 0)
    rec.assistant(tone(FRAME, 1), 16000 * 31)  # beyond 30 s of what is not written yet
    rec.cut(16000 * 31)
    assert rec.dropped == FRAME and rec.end[ASSISTANT] == 0


class TappedSink:
    """A sink that says when a frame leaves (as the WebRTC track does)."""

    realtime = False
    sample_rate = 48000

    def __init__(self) -> None:
        self.on_sent: Any = None
        self.queue: list[np.ndarray] = []

    async def write(self, pcm: np.ndarray) -> None:
        self.queue.append(pcm)

    def buffered_ms(self) -> float:
        return 1000.0 * sum(len(p) for p in self.queue) / self.sample_rate

    def clear(self) -> None:
        self.queue.clear()

    def send_one(self) -> None:
        self.on_sent(self.queue.pop(0))


async def test_a_tapped_sink_records_only_what_left_it() -> None:
    now = [10.0]
    clock = SessionClock(now=lambda: now[0])
    rec = StereoRecording()
    sink = TappedSink()
    recording = RecordingSink(sink, rec, clock)
    for _ in range(3):
        await recording.write(tone(960, 1000))
    now[0] += 0.5
    sink.send_one()  # one frame out; the other two are dropped by an interruption
    recording.clear()
    right = rec.finish()[:, ASSISTANT]
    assert len(right) == 8000 + FRAME and np.all(right[8000:] != 0) and np.all(right[:8000] == 0)


def test_a_wav_file_keeps_what_was_written_before_a_crash(tmp_path: Path) -> None:
    wav = WavFile(tmp_path / "a.wav")
    wav.write(np.ones((1600, 2), np.int16))
    with wave.open(str(tmp_path / "a.wav")) as f:  # not closed: as a crash would leave it
        assert (f.getnchannels(), f.getframerate(), f.getnframes()) == (2, 16000, 1600)
    wav.close()


# --- the store -------------------------------------------------------------------------------


def make_record(store: RecordStore, lines: list[dict[str, Any]], audio: bool = True) -> str:
    record = store.new_id()
    folder = store.create(record)
    (folder / TRANSCRIPT).write_text("".join(json.dumps(x) + "\n" for x in lines))
    if audio:
        wav = WavFile(folder / AUDIO)
        wav.write(np.zeros((160, 2), np.int16))
        wav.close()
    return record


SESSION = [
    {"type": "session", "t_ms": 0, "session": "s1", "persona": "tutor",
     "started_at": "2026-12-03T10:00:00.000Z", "audio": True},
    {"type": "user_turn", "t_ms": 900, "turn": 1, "start_ms": 100, "end_ms": 800,
     "text": "hello", "reason": "finished"},
    {"type": "reply", "t_ms": 2000, "turn": 1, "start_ms": 1000, "end_ms": 2000,
     "generated": "Hi there, friend.", "heard": "Hi there,", "interrupted": True,
     "played_ms": 700},
    {"type": "user_turn", "t_ms": 2500, "turn": 2, "start_ms": 1900, "end_ms": 2400,
     "text": "stop", "reason": "finished"},
    {"type": "session_ended", "t_ms": 3000, "duration_ms": 3000},
]  # fmt: skip


def test_the_store_lists_shows_and_exports(tmp_path: Path) -> None:
    store = RecordStore(tmp_path / "sessions")
    assert store.summaries() == []
    full = make_record(store, SESSION)
    cut = make_record(store, [*SESSION[:2], {"type": "reply"}], audio=False)
    (store.root / cut / TRANSCRIPT).open("a").write('{"type": "us')  # a crash mid-line
    listed = {r.id: r for r in store.summaries()}
    assert listed[full].turns == 2 and listed[full].duration_s == 3.0 and listed[full].audio
    assert listed[full].persona == "tutor" and listed[full].complete
    assert listed[cut].turns == 1 and not listed[cut].audio and not listed[cut].complete
    assert store.lines(full) == SESSION
    archive = store.export(full, tmp_path / "out.tar.gz")
    with tarfile.open(archive) as tar:
        assert sorted(tar.getnames()) == [f"{full}/{AUDIO}", f"{full}/{TRANSCRIPT}"]
    folder = store.export(full, tmp_path / "out")
    assert (folder / TRANSCRIPT).read_text() == (store.root / full / TRANSCRIPT).read_text()
    assert (folder / AUDIO).stat().st_size == (store.root / full / AUDIO).stat().st_size
    assert os.stat(store.root / full).st_mode & 0o777 == 0o700


@pytest.mark.parametrize(
    "bad", ["../x", "..", "x/../..", "/etc/passwd", "20261203-194233-5f0c1a/../..", "", "%2e%2e"]
)
def test_bad_and_unknown_ids_are_errors(tmp_path: Path, bad: str) -> None:
    store = RecordStore(tmp_path)
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / TRANSCRIPT).write_text("{}\n")
    with pytest.raises(RecordError, match="not a record id"):
        store.folder(bad)
    with pytest.raises(RecordError, match="no record 20261203-194233-5f0c1a"):
        store.lines("20261203-194233-5f0c1a")


def test_records_older_than_the_retention_are_pruned(tmp_path: Path) -> None:
    store = RecordStore(tmp_path)
    old, new = make_record(store, SESSION), make_record(store, SESSION)
    long_ago = time.time() - 40 * 86400
    for p in [store.root / old, *(store.root / old).iterdir()]:
        os.utime(p, (long_ago, long_ago))
    (tmp_path / "not-a-record").mkdir()
    assert store.prune(30) == [old]
    assert store.ids() == [new] and (tmp_path / "not-a-record").is_dir()


# --- the command line -------------------------------------------------------------------------


def test_voice_agent_sessions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = RecordStore(tmp_path / "sessions")
    record = make_record(store, SESSION)
    where = ["--set", f"records.dir={store.root}"]
    assert main(["sessions", *where, "list"]) == 0
    out = capsys.readouterr().out
    assert record in out and "tutor" in out and "3.0 s" in out and "yes" in out
    assert main(["sessions", *where, "show", record]) == 0
    out = capsys.readouterr().out
    assert "user (turn 1): hello" in out
    assert "assistant: Hi there,  [interrupted after 700 ms; generated: Hi there, friend.]" in out
    out_path = tmp_path / "export"
    assert main(["sessions", *where, "export", record, "--out", str(out_path)]) == 0
    assert (out_path / TRANSCRIPT).is_file() and (out_path / AUDIO).is_file()
    assert main(["sessions", *where, "show", "../etc"]) == 1
    assert "not a record id" in capsys.readouterr().err
    assert main(["sessions", *where, "export", "20260101-000000-abcdef"]) == 1
    assert "no record 20260101-000000-abcdef" in capsys.readouterr().err
