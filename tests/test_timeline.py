"""Per-turn timelines from a session's events: every mark, preemption, barge-in, resumed turns."""

from __future__ import annotations

from typing import Any

from tests.fakes import make_event
from voice_agent.timeline import TurnTimeline


class Feed:
    def __init__(self) -> None:
        self.timeline = TurnTimeline("s1")
        self.out: list[tuple[str, dict[str, Any]]] = []

    def at(self, at_ms: float, kind: str, **data: Any) -> list[tuple[str, dict[str, Any]]]:
        event = make_event(kind, at_ms, **data)
        made = self.timeline.feed(event)
        assert all(e.t_ns == event.t_ns for e in made)  # stamped with the time of their cause
        got = [(e.type, e.data) for e in made]
        self.out += got
        return got


def spoken_turn(f: Feed, turn: int, start: float, end: float) -> None:
    """The VAD and turn events of one stretch of speech from `start` to `end` (ms)."""
    f.at(start + 120, "user_started_speaking", onset_ms_ago=120)
    f.at(start + 120, "turn_started", turn=turn)
    f.at(end + 160, "user_stopped_speaking", speech_end_ms_ago=160)


def test_every_mark_of_a_preemptive_turn_counts_from_the_end_of_speech() -> None:
    f = Feed()
    spoken_turn(f, 1, 1000, 2500)
    f.at(2700, "transcript", role="user", text="what time is it", final=True)
    f.at(2800, "llm_first_token")
    f.at(2950, "first_clause", text="It is")
    f.at(3000, "end_of_turn", turn=1, reason="finished turn")
    f.at(3010, "tts_first_chunk", text="It is", ms=400)
    assert f.out == []
    assert f.at(3020, "bot_started_speaking") == [
        (
            "turn_metrics",
            {
                "turn": 1,
                "reason": "finished turn",
                "speech_ms": 1500.0,
                "endpoint_ms": 500.0,
                "asr_ms": 200.0,
                "llm_first_token_ms": 300.0,
                "first_clause_ms": 450.0,
                "tts_first_chunk_ms": 510.0,
                "voice_to_voice_ms": 520.0,
            },
        )
    ]
    [(kind, record)] = f.at(4500, "bot_stopped_speaking", played_ms=1480)
    assert kind == "turn_record"
    assert record["session"] == "s1" and record["turn"] == 1 and record["at"] > 1.7e9
    assert record["interrupted"] is False and record["played_ms"] == 1480
    assert record["voice_to_voice_ms"] == 520.0
    assert f.at(4600, "bot_stopped_speaking") == []  # one record per reply


def test_a_turn_the_user_goes_on_with_starts_its_marks_over() -> None:
    f = Feed()
    spoken_turn(f, 1, 0, 1000)
    f.at(1200, "transcript", role="user", text="remind me to call", final=True)
    f.at(1300, "llm_first_token")
    f.at(1400, "first_clause", text="Sure")
    f.at(1500, "preemption_cancelled", turn=1)
    f.at(1620, "user_started_speaking", onset_ms_ago=120)
    f.at(1620, "turn_resumed", turn=1)
    f.at(2660, "user_stopped_speaking", speech_end_ms_ago=160)
    f.at(2700, "transcript", role="user", text="my sister", final=True)
    f.at(2800, "end_of_turn", turn=1, reason="finished turn")
    f.at(2900, "llm_first_token")
    [(_, metrics)] = f.at(3300, "bot_started_speaking")
    assert metrics["speech_ms"] == 2500.0  # from the first onset to the last end of speech
    assert metrics["asr_ms"] == 200.0 and metrics["llm_first_token_ms"] == 400.0
    assert metrics["first_clause_ms"] is None and metrics["voice_to_voice_ms"] == 800.0


def test_a_barge_in_closes_the_reply_interrupted_and_opens_the_next_turn() -> None:
    f = Feed()
    spoken_turn(f, 1, 0, 1000)
    f.at(1600, "end_of_turn", turn=1, reason="finished turn")
    f.at(1700, "bot_started_speaking")
    f.at(3120, "user_started_speaking", onset_ms_ago=120)  # over the reply: a candidate
    f.at(3400, "turn_started", turn=2)  # confirmed: the speech is the next turn
    [(kind, record)] = f.at(3420, "playback_interrupted", played_ms=1700, heard="Once there")
    assert kind == "turn_record" and record["turn"] == 1
    assert record["interrupted"] is True and record["played_ms"] == 1700
    f.at(4500, "user_stopped_speaking", speech_end_ms_ago=160)
    f.at(4900, "end_of_turn", turn=2, reason="finished turn")
    [(_, metrics)] = f.at(5000, "bot_started_speaking")
    assert metrics["turn"] == 2 and metrics["speech_ms"] == 1340.0  # onset 3000 -> end 4340
    assert metrics["voice_to_voice_ms"] == 660.0


def test_events_before_any_turn_and_replies_never_played_record_nothing() -> None:
    f = Feed()
    assert f.at(0, "user_stopped_speaking", speech_end_ms_ago=10) == []
    assert f.at(0, "bot_started_speaking") == []
    spoken_turn(f, 1, 0, 1000)
    f.at(1300, "llm_first_token")
    assert f.at(1400, "playback_interrupted", played_ms=0, heard="") == []


def test_a_reply_that_starts_while_the_user_speaks_the_next_turn_is_the_earlier_turns() -> None:
    f = Feed()
    spoken_turn(f, 1, 0, 1000)
    f.at(1200, "transcript", role="user", text="what is the capital of France", final=True)
    f.at(1500, "end_of_turn", turn=1, reason="finished question")
    f.at(2200, "llm_first_token")
    spoken_turn(f, 2, 3000, 4500)  # they speak again while the assistant is still thinking
    f.at(3500, "first_clause", text="Paris.")
    f.at(3700, "tts_first_chunk", text="Paris.", ms=600)
    [(_, metrics)] = f.at(3800, "bot_started_speaking")
    assert metrics["turn"] == 1 and metrics["reason"] == "finished question"
    assert metrics["speech_ms"] == 1000.0 and metrics["endpoint_ms"] == 500.0
    assert metrics["llm_first_token_ms"] == 1200.0 and metrics["voice_to_voice_ms"] == 2800.0
    f.at(4200, "bot_stopped_speaking", played_ms=400)
    f.at(4800, "end_of_turn", turn=2, reason="finished turn")
    [(_, metrics)] = f.at(5600, "bot_started_speaking")
    assert metrics["turn"] == 2 and metrics["speech_ms"] == 1500.0
    assert metrics["endpoint_ms"] == 300.0 and metrics["voice_to_voice_ms"] == 1100.0


def test_the_reply_to_a_turn_the_user_reopened_is_not_its_answer() -> None:
    f = Feed()
    spoken_turn(f, 1, 0, 1000)
    f.at(1500, "end_of_turn", turn=1, reason="long silence after an unfinished turn")
    f.at(1800, "user_started_speaking", onset_ms_ago=100)  # they go on after the turn ended
    f.at(1800, "turn_reopened", turn=1)
    assert f.at(1850, "bot_started_speaking") == []  # a reply already on its way, cut next
    assert f.at(1860, "playback_interrupted", played_ms=10, heard="") == []
    f.at(2660, "user_stopped_speaking", speech_end_ms_ago=160)
    f.at(3000, "end_of_turn", turn=1, reason="finished turn")
    [(_, metrics)] = f.at(3300, "bot_started_speaking")
    assert metrics["reason"] == "finished turn" and metrics["endpoint_ms"] == 500.0
    assert metrics["voice_to_voice_ms"] == 800.0
