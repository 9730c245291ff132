"""The turn policy: the numbers and switches turn-taking decides with.

`TurnPolicy.of` takes them from the settings, with what the persona's file sets taking
precedence; the realtime API's client may change some during a session (a `TurnPolicyFrame` replaces
the stage's policy, and the machines decide with the new one from their next input on).
"""

from __future__ import annotations

from dataclasses import dataclass

from voice_agent.config import Settings
from voice_agent.frames import SystemFrame
from voice_agent.persona import Persona


@dataclass(frozen=True, slots=True)
class TurnPolicy:
    """The numbers the turn-taking machines decide with (settings, tightened by the persona)."""

    endpoint_silence_ms: int = 500
    unfinished_silence_ms: int = 1500
    smart_turn_threshold: float = 0.94
    preemptive_reply: bool = True
    min_interruption_ms: int = 300
    backchannel_max_ms: int = 700
    backchannels_interrupt: bool = False
    duck_db: float = 24.0
    pause_ms: int = 160
    """The VAD's `stop_ms`: silence that has already passed when a pause is reported."""
    auto_end: bool = True
    """The stage decides when a turn ends; False: the client does (`CommitTurnFrame`)."""
    auto_reply: bool = True
    """A turn that ends is answered; False: it joins the conversation, unanswered until the
    client asks (`ResponseRequestFrame`), and nothing is answered preemptively."""
    barge_in: bool = True
    """Speech over the assistant may interrupt it; False: the reply plays out, and the speech
    is a turn of its own."""

    @classmethod
    def of(cls, settings: Settings, persona: Persona) -> TurnPolicy:
        """The settings' policy, with what the persona's file sets taking precedence."""
        t, mine = persona.turn_taking, persona.turn_taking.model_fields_set
        endpoint = (
            t.endpoint_silence_ms
            if "endpoint_silence_ms" in mine
            else settings.turns.endpoint_silence_ms
        )
        return cls(
            endpoint_silence_ms=endpoint,
            unfinished_silence_ms=max(endpoint, settings.turns.unfinished_silence_ms),
            smart_turn_threshold=settings.turns.smart_turn_threshold,
            preemptive_reply=settings.turns.preemptive_reply,
            min_interruption_ms=(
                t.min_interruption_ms
                if "min_interruption_ms" in mine
                else settings.turns.min_interruption_ms
            ),
            backchannel_max_ms=settings.turns.backchannel_max_ms,
            backchannels_interrupt=t.backchannels_interrupt,
            duck_db=settings.turns.duck_db,
            pause_ms=settings.vad.stop_ms,
        )


@dataclass(slots=True, kw_only=True)
class TurnPolicyFrame(SystemFrame):
    """Take turns by `policy` from now on (the turn stage applies it: a realtime client's
    `session.update`)."""

    policy: TurnPolicy
