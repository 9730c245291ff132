"""The session's events: typed, named for the wire, stamped when made."""

from __future__ import annotations

import dataclasses
import time

import pytest

from voice_agent.events import (
    Ducked,
    EndOfTurn,
    Event,
    TurnModelScore,
    TurnStarted,
    event_type,
)


def test_events_serialise_with_their_name_and_time() -> None:
    e = EndOfTurn(turn=2, reason="finished turn", t_ns=1_500_000)
    assert e.to_json() == {
        "type": "end_of_turn",
        "t_ms": 1.5,
        "turn": 2,
        "reason": "finished turn",
        "probability": None,
        "text": "",
    }


def test_an_event_is_named_from_its_class_unless_it_says_otherwise() -> None:
    assert TurnStarted.type == "turn_started" and TurnStarted(turn=1).type == "turn_started"
    assert TurnModelScore.type == "turn_model" and Ducked.type == "duck"
    assert event_type("turn_started") is TurnStarted and event_type("duck") is Ducked
    with pytest.raises(KeyError):
        event_type("no_such_event")


def test_every_event_has_its_own_name() -> None:
    def kinds(cls: type[Event]) -> list[type[Event]]:
        return [k for sub in cls.__subclasses__() for k in (sub, *kinds(sub))]

    named = {k.type for k in kinds(Event)}
    assert all(event_type(name).type == name for name in named)
    assert len(named) >= 40


def test_events_are_frozen_stamped_when_made_and_equal_whenever_made() -> None:
    before = time.monotonic_ns()
    e = TurnStarted(turn=1)
    assert before <= e.t_ns <= time.monotonic_ns()
    assert e == TurnStarted(turn=1, t_ns=0) and e != TurnStarted(turn=2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        e.turn = 2  # type: ignore[misc]
