"""The idle clock as a machine (timelines of events, no asyncio), and through a Session with fake
engines: the greeting, re-prompts, goodbye, time limit."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.fakes import FakeASR, FakeLLM, FakeTransport, FakeTTS, engines, make_event, settings
from voice_agent.events import Event
from voice_agent.persona import Idle, Persona
from voice_agent.session import Session
from voice_agent.turns.idle import REPLY_WAIT_MAX_S, End, IdleClock, Say

IDLE = Idle(
    after_s=10, reprompts=["Are you there?", "Still there?"], max_reprompts=2, goodbye="Bye now."
)


def at(kind: str, t_s: float, **data: Any) -> Event:
    return make_event(kind, t_ms=t_s * 1000, **data)


def clock(idle: Idle | None = IDLE, max_s: float | None = None, **kw: Any) -> IdleClock:
    return IdleClock(idle, max_s, 0.0, **kw)


def play(c: IdleClock, start: float, end: float) -> None:
    """The assistant speaks from `start` to `end` (s)."""
    c.feed(at("bot_started_speaking", start))
    c.feed(at("bot_stopped_speaking", end))


def user_turn(c: IdleClock, start: float, words: str = "what time is it") -> None:
    """The caller speaks a turn from `start` for 1 s; the end of turn 0.5 s later."""
    c.feed(at("user_started_speaking", start))
    c.feed(at("transcript", start + 0.5, role="user", text=words.split()[0], final=False))
    c.feed(at("user_stopped_speaking", start + 1.0))
    c.feed(at("transcript", start + 1.2, role="user", text=words, final=True))
    c.feed(at("end_of_turn", start + 1.5, turn=1, reason="finished"))


def test_a_reprompt_after_the_silence_counted_from_the_end_of_the_reply() -> None:
    c = clock()
    user_turn(c, 1.0)
    assert c.deadline() is not None and c.deadline() == 2.5 + REPLY_WAIT_MAX_S  # a reply due
    assert c.due(12.0) is None  # 10 s after the session started, but the reply is awaited
    play(c, 4.0, 9.0)
    assert c.deadline() == 19.0
    assert c.due(18.9) is None
    assert c.due(19.0) == Say("Are you there?", "reprompt")
    assert c.due(19.0) is None  # said once; now it waits for it to be heard


def test_nothing_counts_while_the_assistant_speaks_or_is_busy() -> None:
    c = clock()
    c.feed(at("bot_started_speaking", 1.0))
    assert c.deadline() is None and c.due(60.0) is None  # a long reply: no re-prompt over it
    c.feed(at("bot_stopped_speaking", 60.0))
    c.feed(at("assistant_busy", 61.0, busy=True))  # a tool runs
    assert c.deadline() is None and c.due(100.0) is None
    c.feed(at("assistant_busy", 100.0, busy=False))
    assert c.due(109.9) is None
    assert c.due(110.0) == Say("Are you there?", "reprompt")


def test_real_speech_resets_the_clock_and_the_reprompts_a_false_onset_or_noise_does_not() -> None:
    c = clock()
    assert c.due(10.0) == Say("Are you there?", "reprompt")
    play(c, 10.5, 11.5)
    # noise: an onset that was not speech, then a sound the ASR found no words in
    c.feed(at("vad_onset", 13.0))
    c.feed(at("vad_false_onset", 13.1))
    c.feed(at("user_started_speaking", 15.0))
    c.feed(at("user_stopped_speaking", 16.0))
    c.feed(at("transcript", 16.2, role="user", text="", final=True))
    assert c.deadline() == 21.5  # still counted from the end of the re-prompt
    assert c.due(21.5) == Say("Still there?", "reprompt")
    assert c.reprompts == 2
    play(c, 22.0, 23.0)
    user_turn(c, 25.0)  # words: the caller is back
    assert c.reprompts == 0
    play(c, 27.0, 28.0)
    assert c.due(37.9) is None
    assert c.due(38.0) == Say("Are you there?", "reprompt")


def test_nothing_is_said_over_a_sound_the_vad_still_hears() -> None:
    c = clock()
    c.feed(at("user_started_speaking", 9.0))  # a long sound with no words yet
    assert c.due(12.0) is None
    c.feed(at("user_stopped_speaking", 14.0))
    assert c.due(14.0) == Say("Are you there?", "reprompt")  # no words: the clock ran on


def test_after_the_reprompts_the_goodbye_then_the_end_once_it_has_played() -> None:
    c = clock()
    assert c.due(10.0) == Say("Are you there?", "reprompt")
    play(c, 10.5, 11.0)
    assert c.due(21.0) == Say("Still there?", "reprompt")
    play(c, 21.5, 22.0)
    assert c.due(32.0) == Say("Bye now.", "goodbye")
    assert c.ending == "idle"
    assert c.due(33.0) is None  # not yet heard
    c.feed(at("bot_started_speaking", 32.5))
    assert c.due(33.0) is None  # being heard
    c.feed(at("bot_stopped_speaking", 34.0))
    assert c.due(34.0) == End("idle")
    assert c.due(35.0) is None  # once


def test_a_goodbye_cut_by_the_caller_still_ends_the_session() -> None:
    c = clock(Idle(after_s=5, reprompts=[], max_reprompts=0, goodbye="Bye."))
    assert c.due(5.0) == Say("Bye.", "goodbye")
    c.feed(at("bot_started_speaking", 5.2))
    c.feed(at("playback_interrupted", 5.6, played_ms=400, heard=""))
    assert c.due(5.6) == End("idle")


def test_no_goodbye_text_or_no_voice_ends_at_once() -> None:
    assert clock(Idle(after_s=5, max_reprompts=0)).due(5.0) == End("idle")
    silent = clock(speaks=False)  # a remote backbone: nothing is said, the clock goes on
    assert silent.due(10.0) == Say("Are you there?", "reprompt")
    assert silent.due(19.9) is None
    assert silent.due(20.0) == Say("Still there?", "reprompt")
    assert silent.due(30.0) == End("idle")


def test_the_greeting_comes_first_and_the_silence_counts_from_its_end() -> None:
    c = clock()
    c.greeting(0.0)
    assert c.due(10.0) is None
    play(c, 0.5, 3.0)
    assert c.due(12.9) is None
    assert c.due(13.0) == Say("Are you there?", "reprompt")


def test_a_reply_that_never_plays_is_waited_for_only_so_long() -> None:
    c = clock()
    user_turn(c, 1.0)  # ... and the reply failed unsaid
    assert c.due(2.5 + REPLY_WAIT_MAX_S) is None  # the wait is over: the silence counts now
    assert c.due(2.5 + REPLY_WAIT_MAX_S + 10) == Say("Are you there?", "reprompt")


def test_an_empty_reply_is_not_waited_for() -> None:
    c = clock()
    c.feed(at("llm_started", 1.0))
    c.feed(at("llm_done", 1.2, text=""))  # a preemptive reply with nothing in it
    user_turn(c, 0.5)
    assert c.due(12.0) == Say("Are you there?", "reprompt")


def test_the_time_limit_cuts_in_says_its_line_and_ends() -> None:
    c = clock(max_s=60.0, time_up="Time is up.")
    c.feed(at("bot_started_speaking", 55.0))  # a reply is playing
    assert c.deadline() == 60.0
    assert c.due(60.0) == Say("Time is up.", "time_up", cut=True)
    assert c.ending == "max_duration"
    c.feed(at("playback_interrupted", 60.1, played_ms=5100, heard="..."))  # the reply, cut
    assert c.due(60.1) is None  # its own line has not played yet
    play(c, 60.3, 61.5)
    assert c.due(61.5) == End("max_duration")


def test_the_time_limit_without_idle_policy_or_line() -> None:
    c = clock(None, max_s=30.0)
    assert c.deadline() == 30.0
    assert c.due(29.9) is None
    assert c.due(30.0) == End("max_duration")


def test_off_when_absent() -> None:
    c = clock(None)
    assert c.deadline() is None and c.due(10_000.0) is None


# --- through a session ---------------------------------------------------------------------


def greeter(**fields: Any) -> Persona:
    return Persona.model_validate(
        {
            "id": "greeter",
            "name": "Greeter",
            "description": "test persona",
            "system_prompt": "Be brief.",
            "greeting": "Hello there, how can I help?",
            **fields,
        }
    )


async def events_until(s: Session, kind: str, n: int = 1) -> list[Event]:
    seen: list[Event] = []

    async def find() -> None:
        count = 0
        async for e in sub:
            seen.append(e)
            count += e.type == kind
            if count == n:
                return
        raise AssertionError(f"the session ended before {n} {kind!r}")

    sub = s.events()
    await asyncio.wait_for(find(), 10)
    return seen


async def test_the_greeting_is_spoken_at_the_start_and_kept_in_the_history() -> None:
    tts = FakeTTS()
    transport = FakeTransport()
    persona = greeter()
    async with Session(settings(), persona, transport, engines(FakeASR([]), FakeLLM([]), tts)) as s:
        seen = await events_until(s, "bot_stopped_speaking")
        transport.hang_up()
        await asyncio.wait_for(s.run(), 5)
    said = next(e for e in seen if e.type == "assistant_said")
    assert said.data == {"why": "greeting", "text": persona.greeting, "id": said.data["id"]}
    assert tts.spoken == ["Hello there,", "how can I help?"]  # clause by clause, as a reply
    assert [(m.role, m.content, m.interrupted) for m in s.history.messages] == [
        ("assistant", persona.greeting, False)
    ]
    assert len(transport.sink.frames) == 6 * 5  # 6 words of 100 ms, in 20 ms frames
    wire = [e.message for e in transport.events if e.type == "client_message"]
    assert {"type": "state", "state": "speaking"} in wire
    assert {
        "type": "transcript",
        "role": "assistant",
        "text": persona.greeting,
        "final": True,
        "turn": 0,
    } in wire


async def test_a_barge_in_over_the_greeting_cuts_it_like_a_reply() -> None:
    transport = FakeTransport()
    transport.sink.interrupt_after = 10  # 200 ms: "Hello there" heard
    llm = FakeLLM(["Sure."])
    asr = FakeASR(["book a table"])
    async with Session(settings(), greeter(), transport, engines(asr, llm)) as s:
        transport.sink.pipeline_queue = s.pipeline.queue
        seen = await events_until(s, "history_truncated")
        transport.sink.interrupt_after = None
        transport.say()
        await events_until(s, "bot_stopped_speaking")
        transport.hang_up()
        await asyncio.wait_for(s.run(), 5)
    cut = next(e for e in seen if e.type == "history_truncated")
    assert cut.data["heard"] == "Hello there,"
    assert [(m.role, m.content, m.interrupted) for m in s.history.messages] == [
        ("assistant", "Hello there,", True),
        ("user", "book a table", False),
        ("assistant", "Sure.", False),
    ]


async def test_a_silent_caller_is_reprompted_then_told_goodbye_and_the_session_ends() -> None:
    tts = FakeTTS()
    transport = FakeTransport()
    idle = {"after_s": 1, "reprompts": ["Anyone there?"], "max_reprompts": 1, "goodbye": "Bye."}
    persona = greeter(greeting="", idle=idle)
    async with Session(settings(), persona, transport, engines(FakeASR([]), FakeLLM([]), tts)) as s:
        await asyncio.wait_for(s.run(), 10)  # nobody says anything
    assert tts.spoken == ["Anyone there?", "Bye."]
    assert s.end_reason == "idle"
    said = [e.data["why"] for e in transport.events if e.type == "assistant_said"]
    assert said == ["reprompt", "goodbye"]
    ended = [e.message for e in transport.events if e.type == "client_message"][-1]
    assert ended == {"type": "session_ended", "reason": "idle"}
    assert [m.content for m in s.history.messages] == ["Anyone there?", "Bye."]
    # the goodbye was played out before the end
    assert len(transport.sink.frames) == (2 + 1) * 5


async def test_a_caller_at_the_time_limit_hears_the_line_and_the_session_ends() -> None:
    tts = FakeTTS()
    transport = FakeTransport()
    persona = greeter(greeting="", time_limit={"max_s": 10, "goodbye": "Time is up."})
    cfg = settings()
    async with Session(cfg, persona, transport, engines(FakeASR([]), FakeLLM([]), tts)) as s:
        s._idle.clock.max_s = 0.2  # (a persona's limit is at least 10 s; not waited for here)
        await asyncio.wait_for(s.run(), 10)
    assert s.end_reason == "max_duration"
    assert tts.spoken == ["Time is up."]


@pytest.mark.parametrize(
    ("idle", "field", "reason"),
    [
        ({"after_s": 0.2}, "6: idle.after_s", "greater than or equal to 1"),
        ({"max_reprompts": 2}, "5: idle", "no reprompts to say"),
        ({"reprompts": ["Hi?"], "sometimes": True}, "8: idle.sometimes", "unknown field"),
    ],
)
def test_idle_fields_are_validated_with_file_and_line(
    tmp_path: Any, idle: dict[str, Any], field: str, reason: str
) -> None:
    import yaml

    from voice_agent.persona import load_persona
    from voice_agent.yamlfile import FileError

    doc = {
        "id": "quiet",
        "name": "Quiet",
        "description": "d",
        "system_prompt": "Be brief.",
        "idle": idle,
    }
    path = tmp_path / "quiet.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    with pytest.raises(FileError) as err:
        load_persona(path)
    text = str(err.value)
    assert f"quiet.yaml:{field}: " in text and reason in text, text
