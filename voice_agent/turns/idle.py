"""The idle clock: a caller who goes quiet is re-prompted, then the session ends; and no session
outlasts its time limit.

`IdleClock` is a synchronous machine, like `turns/taker.py`'s: it reads a session's events
(each stamped with the monotonic clock) and says when something is due and what (`due`): a
`Say` (a re-prompt, the goodbye, the time-up line) or an `End` (with its reason). `IdleWatch`
drives it for a session with one owned timer task.

What counts as silence: time when nobody holds the floor. The caller holds it from their first
words (a transcript with words, partial or final) to the pause; a user turn that ended holds
it until its reply starts (a reply that never comes is waited for at most `REPLY_WAIT_MAX_S`);
the assistant holds it while it speaks; `AssistantBusy` (a tool running) holds it until it
ends. The silence is counted from the moment the floor was last let go (the end of the reply,
the caller's last pause). Sound without words (a VAD onset that was not speech, noise the ASR
finds no words in) neither resets the clock nor holds it; but nothing is said over a sound the
VAD still hears: it waits for the pause. Words from the caller start the re-prompts over.

The time limit counts from the session's start, whatever happens: when it comes, what is
playing is cut, the time-up line is said, and the session ends (`max_duration`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from voice_agent.events import (
    AssistantBusy,
    BotStartedSpeaking,
    BotStoppedSpeaking,
    EndOfTurn,
    Event,
    LlmDone,
    LlmStarted,
    PlaybackInterrupted,
    Transcript,
    UserStartedSpeaking,
    UserStoppedSpeaking,
    VadFalseOnset,
)
from voice_agent.persona import Idle
from voice_agent.tasks import TaskOwner

REPLY_WAIT_MAX_S = 30.0
"""Longest a reply (or fixed text) is waited for before the silence counts anyway: a reply that
failed unsaid, text that synthesized to nothing."""


@dataclass(frozen=True, slots=True)
class Say:
    """Say `text` now (`why`: `reprompt`, `goodbye`, `time_up`); `cut` what is playing first."""

    text: str
    why: str
    cut: bool = False


@dataclass(frozen=True, slots=True)
class End:
    """End the session now, for `reason` (`idle`, `max_duration`)."""

    reason: str


Action = Say | End


class IdleClock:
    """The idle policy and the time limit of one session, as a machine (module docstring).

    `speaks`: whether the session can say fixed text (a remote backbone cannot: the re-prompts
    and goodbyes are then silent, and the clock goes on as if they were said at once)."""

    def __init__(
        self,
        idle: Idle | None,
        max_s: float | None,
        start_s: float,
        *,
        time_up: str = "",
        speaks: bool = True,
    ) -> None:
        self.idle = idle
        self.max_s = max_s
        self.time_up = time_up
        """Said when time is up (the persona's `time_limit.goodbye`; "": nothing)."""
        self.speaks = speaks
        self.start_s = start_s
        self.reprompts = 0
        """Re-prompts said since the caller last spoke."""
        self.ending: str | None = None
        """Why the session is ending, once its last words are decided."""
        self._holds: set[str] = set()
        self._since = start_s
        """When the floor was last let go: the silence counts from here."""
        self._reply_since: float | None = None
        self._sound = False
        self._nothing_to_say = False
        """The last reply finished with no words (it will not be heard)."""
        self._last_started = False
        """The last words it was told to say have started playing (or never will)."""
        self._ended = False

    # --- inputs -------------------------------------------------------------------------------

    def greeting(self, now: float) -> None:
        """The session starts with a greeting: the silence counts once it is over."""
        if self.speaks:
            self._wait_reply(now)

    def feed(self, event: Event) -> None:
        """One of the session's events."""
        now = event.t_ns / 1e9
        match event:
            case Transcript(role="user", text=text, final=final):
                words = bool(text.strip())
                if words:
                    self.reprompts = 0
                if final:
                    self._release("user", now)
                    if words:
                        self._since = max(self._since, now)
                elif words:
                    self._holds.add("user")
            case UserStartedSpeaking():
                self._sound = True
            case UserStoppedSpeaking():
                self._sound = False
                self._release("user", now)
            case VadFalseOnset():
                self._sound = False
            case EndOfTurn():
                self._release("user", now)
                if not self._nothing_to_say:
                    self._wait_reply(now)
            case LlmStarted():
                self._nothing_to_say = False
            case LlmDone(text=text) if not text:
                self._nothing_to_say = True
                self._release("reply", now)
            case BotStartedSpeaking():
                self._last_started = True
                self._holds.add("speaking")
                self._release("reply", now)
            case BotStoppedSpeaking() | PlaybackInterrupted():
                self._release("speaking", now)
            case AssistantBusy(busy=busy):
                if busy:
                    self._holds.add("busy")
                else:
                    self._release("busy", now)

    # --- what is due --------------------------------------------------------------------------

    def deadline(self) -> float | None:
        """When `due` may next have something (monotonic s); None: only after an event."""
        times = []
        if self.max_s is not None and self.ending is None:
            times.append(self.start_s + self.max_s)
        if self._reply_since is not None:
            times.append(self._reply_since + REPLY_WAIT_MAX_S)
        if self.ending is not None:
            if self._last_said():
                times.append(self._since)
        elif self.idle is not None and not self._holds:
            times.append(self._since + self.idle.after_s)
        return min(times, default=None)

    def due(self, now: float) -> Action | None:
        """What to do now, if anything (at most one thing; ask again after doing it)."""
        if self._ended:
            return None
        if self._reply_since is not None and now >= self._reply_since + REPLY_WAIT_MAX_S:
            self._release("reply", now)
            self._last_started = True  # (it will not be heard now)
        if self.ending is not None:
            return self._end_now() if self._last_said() else None
        if self.max_s is not None and now >= self.start_s + self.max_s:
            return self._last_words("max_duration", self.time_up, now)
        idle = self.idle
        if idle is None or self._holds or self._sound or now < self._since + idle.after_s:
            return None
        if self.reprompts < idle.max_reprompts:
            text = idle.reprompts[self.reprompts % len(idle.reprompts)]
            self.reprompts += 1
            self._said(now)
            return Say(text, "reprompt")
        return self._last_words("idle", idle.goodbye, now)

    # --- inside -------------------------------------------------------------------------------

    def _last_words(self, reason: str, text: str, now: float) -> Action:
        """The session ends for `reason`, once `text` (if any) has been said."""
        self.ending = reason
        if not text or not self.speaks:
            return self._end_now()
        self._said(now)
        if reason == "max_duration":
            return Say(text, "time_up", cut=True)
        return Say(text, "goodbye")

    def _last_said(self) -> bool:
        """The last words have been played out (or cut, or will never be heard)."""
        return self._last_started and not {"reply", "speaking"} & self._holds

    def _end_now(self) -> End:
        self._ended = True
        assert self.ending is not None
        return End(self.ending)

    def _said(self, now: float) -> None:
        """Fixed text goes to be said now: the silence counts again once it has been heard."""
        if self.speaks:
            self._last_started = False
            self._wait_reply(now)
        else:
            self._last_started = True
            self._since = now

    def _wait_reply(self, now: float) -> None:
        self._holds.add("reply")
        self._reply_since = now

    def _release(self, hold: str, now: float) -> None:
        if hold in self._holds:
            self._holds.discard(hold)
            if hold == "reply":
                self._reply_since = None
            if not self._holds:
                self._since = now


class IdleWatch(TaskOwner):
    """Drives one session's `IdleClock` with one timer task: fed each event of the session
    (`feed`), it sleeps until the clock's deadline or the next event, and carries out what is
    due with the session's callbacks."""

    def __init__(
        self,
        clock: IdleClock,
        say: Callable[[Say], None],
        end: Callable[[str], None],
        *,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__("idle")
        self.clock = clock
        self._say = say
        self._end = end
        self._now = now
        self._news = asyncio.Event()

    def start(self) -> None:
        self.create_task(self._run(), "clock")

    def feed(self, event: Event) -> None:
        self.clock.feed(event)
        self._news.set()

    async def _run(self) -> None:
        while True:
            self._news.clear()
            action = self.clock.due(self._now())
            if isinstance(action, End):
                self._end(action.reason)
                return
            if action is not None:
                self._say(action)
                continue
            deadline = self.clock.deadline()
            if deadline is None:
                await self._news.wait()
                continue
            try:
                async with asyncio.timeout(max(0.0, deadline - self._now())):
                    await self._news.wait()
            except TimeoutError:
                pass
