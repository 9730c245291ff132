"""One soak session: connect over a transport, act out one way a session can end, leave.

The behaviours (see `voice_agent.bench.soak`): `turn`, `barge-in`, `abrupt`, `idle`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from websockets.exceptions import ConnectionClosed

from voice_agent.bench.caller import CALLERS, Caller, WebRTCCaller
from voice_agent.bench.script import RATE, Lines

TRANSPORTS = ("webrtc", "pcm", "realtime")
BEHAVIOURS = ("turn", "barge-in", "abrupt", "idle")
SESSION_TIMEOUT_S = 120.0
"""Longest one session may take, all of it; past that it is a failure."""
REPLY_WITHIN_S = 60.0
INTERRUPTED_WITHIN_S = 10.0
PEER_NOTICE_S = 15.0
"""How long the server may take to close its side of an abandoned peer connection."""


async def _reply_audible(caller: Caller, after: float) -> None:
    if await caller.audible_after(after, REPLY_WITHIN_S) is None:
        raise TimeoutError(f"no reply audible within {REPLY_WITHIN_S:.0f} s")


async def _expect(caller: Caller, kind: str, after: int, within_s: float, **fields: Any) -> None:
    try:
        await caller.wait_for(
            kind, lambda e: fields.items() <= e.items(), within_s=within_s, after=after
        )
    except TimeoutError:
        what = " ".join([kind, *(f"{k}={v}" for k, v in fields.items())])
        raise TimeoutError(f"no {what} within {within_s:.0f} s") from None


async def _ask(caller: Caller, lines: Lines, k: int, long: bool) -> None:
    """Say a question (one asking for a long reply when `long`) and wait until the reply is
    audible."""
    q = lines.asks[k % len(lines.asks)] if long else lines.questions[k % len(lines.questions)]
    said = caller.say(q.pcm, RATE, "question")
    await said.done.wait()
    await _reply_audible(caller, said.started + q.last / RATE)


async def _turn(caller: Caller, lines: Lines, k: int, idle_s: float) -> None:
    mark = len(caller.events)
    await _ask(caller, lines, k, long=False)
    await _expect(caller, "transcript", mark, REPLY_WITHIN_S, role="assistant", final=True)


async def _barge_in(caller: Caller, lines: Lines, k: int, idle_s: float) -> None:
    await _ask(caller, lines, k, long=True)
    mark = len(caller.events)
    caller.say(lines.barge_ins[k % len(lines.barge_ins)].pcm, RATE, "barge-in")
    await _expect(caller, "interrupted", mark, INTERRUPTED_WITHIN_S)


async def _abrupt(caller: Caller, lines: Lines, k: int, idle_s: float) -> None:
    await _ask(caller, lines, k, long=True)
    caller.ws.transport.abort()
    async with asyncio.timeout(5):
        await caller.ws.wait_closed()
    if isinstance(caller, WebRTCCaller):  # the server closes its side: DTLS shutdown reaches us
        pc, deadline = caller.pc, time.monotonic() + PEER_NOTICE_S
        while pc.connectionState not in ("closed", "failed"):
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"the server left its peer connection open {PEER_NOTICE_S:.0f} s after "
                    "the socket dropped"
                )
            await asyncio.sleep(0.05)


async def _idle(caller: Caller, lines: Lines, k: int, idle_s: float) -> None:
    await asyncio.sleep(idle_s)


SCRIPTS: dict[str, Callable[[Caller, Lines, int, float], Awaitable[None]]] = {
    "turn": _turn, "barge-in": _barge_in, "abrupt": _abrupt, "idle": _idle
}  # fmt: skip


async def one_session(
    url: str, transport: str, behaviour: str, lines: Lines, k: int, idle_s: float, **kw: Any
) -> None:
    """Connect over `transport`, act out `behaviour`, leave (`bye`, except after `abrupt` and on
    the Realtime API, which has none) and close; raises what went wrong."""
    caller = await CALLERS[transport].connect(url, **kw)
    try:
        await _expect(caller, "session", 0, 30)
        await SCRIPTS[behaviour](caller, lines, k, idle_s)
        if behaviour != "abrupt" and transport != "realtime":
            with contextlib.suppress(ConnectionClosed):
                await caller.ws.send(json.dumps({"type": "bye"}))
    finally:
        await caller.close()


async def bounded(session: Awaitable[None]) -> None:
    """`session`, stopped (as a `TimeoutError`) past `SESSION_TIMEOUT_S`. asyncio.timeout rather
    than wait_for, which on Python 3.11 can swallow a cancellation (CPython gh-86296)."""
    bound = asyncio.timeout(SESSION_TIMEOUT_S)
    try:
        async with bound:
            await session
    except TimeoutError:
        if not bound.expired():  # one of the session's own
            raise
        raise TimeoutError(f"the session took more than {SESSION_TIMEOUT_S:.0f} s") from None
