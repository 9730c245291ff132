"""What the turn-taking machines decide: small frozen records, in the order they are to happen.

Each input to a machine (`TurnTaker`, `Endpointer`, `BargeInJudge`) returns a list of these;
`TurnStage` carries them out in that order, each as one frame, one event or one call. The
order matters: what is sent downstream after an `Interrupt` follows the interruption (see
`voice_agent/turns/stage.py`), and every event is stamped when the machine makes it.
"""

from __future__ import annotations

from dataclasses import dataclass

from voice_agent.events import Event


@dataclass(frozen=True, slots=True)
class Emit:
    """Report `event` (`Stage.emit`): the metrics timeline, the wire protocol and the
    operators' feed read it."""

    event: Event


@dataclass(frozen=True, slots=True)
class SendTurn:
    """Give the LLM the turn's text (a `UserTurnFrame`)."""

    text: str
    turn: int
    replaces: int = 0
    """The id of an earlier send of this turn that this one replaces (0: none)."""
    respond: bool = True
    """Answer it (False: it joins the conversation unanswered)."""


@dataclass(frozen=True, slots=True)
class EndTurn:
    """The user's turn is over (an `EndOfTurnFrame`: playback may play its reply)."""

    turn: int
    reason: str


@dataclass(frozen=True, slots=True)
class Duck:
    """Set the level of the assistant's voice: down `db` (0.0: back up), a `DuckOutputFrame`."""

    db: float


@dataclass(frozen=True, slots=True)
class Interrupt:
    """Interrupt the reply in progress (`Stage.request_interruption`)."""

    reason: str


@dataclass(frozen=True, slots=True)
class AskForWords:
    """Ask the ASR for a transcript of the speech so far (a `TranscriptRequestFrame` upstream):
    does speech over the reply have words that take the floor?"""


@dataclass(frozen=True, slots=True)
class ScoreTurn:
    """Have the turn model score the last seconds of audio for pause number `pause`, and feed
    the score back (`scored`); a score still coming for an earlier pause is moot."""

    pause: int


@dataclass(frozen=True, slots=True)
class ReleaseRequests:
    """The committed turn has ended: requests for a reply held meanwhile follow it."""


@dataclass(frozen=True, slots=True)
class DropRequests:
    """The client discarded its turn: requests for a reply held for its commit are void."""


Decision = (
    Emit
    | SendTurn
    | EndTurn
    | Duck
    | Interrupt
    | AskForWords
    | ScoreTurn
    | ReleaseRequests
    | DropRequests
)
"""Anything a machine decides."""
