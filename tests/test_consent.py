"""ICE consent checks on a busy machine (voice_agent.transports.consent): two real aioice
connections on loopback, one of which answers late, or not at all. Times are scaled down: a
check every 0.2 s, STUN's first retransmission after 50 ms, consent for 1.5 s."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aioice
import aioice.ice
import aioice.stun
import pytest

from voice_agent.transports import consent
from voice_agent.transports.webrtc import ice_on_loopback, peer_connection


@pytest.fixture(autouse=True)
def fast_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aioice.stun, "RETRY_RTO", 0.05)  # answers up to 0.35 s late count
    monkeypatch.setattr(aioice.ice, "CONSENT_INTERVAL", 0.2)  # aioice's own, for comparison
    monkeypatch.setattr(consent, "INTERVAL_S", 0.2)
    monkeypatch.setattr(consent, "EXPIRY_S", 1.5)
    ice_on_loopback(True)


Pair = tuple[aioice.Connection, aioice.Connection]
Connect = Callable[..., Awaitable[Pair]]


@pytest.fixture
async def connect(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Connect]:
    """Two connections on loopback, connected, checking consent with `check`."""
    made: list[aioice.Connection] = []

    async def connect(check: Any = consent.query_consent) -> Pair:
        monkeypatch.setattr(aioice.Connection, "query_consent", check)
        a = aioice.Connection(ice_controlling=True, components=1)
        b = aioice.Connection(ice_controlling=False, components=1)
        made.extend((a, b))
        await asyncio.gather(a.gather_candidates(), b.gather_candidates())
        for one, other in ((a, b), (b, a)):
            one.remote_username, one.remote_password = other.local_username, other.local_password
            for candidate in other.local_candidates:
                await one.add_remote_candidate(candidate)
            await one.add_remote_candidate(None)
        await asyncio.gather(a.connect(), b.connect())
        return a, b

    yield connect
    await asyncio.gather(*(c.close() for c in made))


def answers(connection: aioice.Connection, how: Callable[[Callable[..., None]], Any]) -> None:
    """Make `connection` send its STUN answers through `how(send)` (late, or never)."""
    for protocol in connection._protocols:
        send = protocol.send_stun

        def send_stun(message: aioice.stun.Message, addr: Any, send: Any = send) -> None:
            if message.message_class == aioice.stun.Class.RESPONSE:
                how(lambda: send(message, addr))
            else:
                send(message, addr)

        protocol.send_stun = send_stun  # type: ignore[method-assign]


async def lost_within(connection: aioice.Connection, seconds: float) -> float | None:
    """When (s from now) `connection` closed, if it did within `seconds`."""
    start = time.monotonic()
    try:
        async with asyncio.timeout(seconds):
            await connection.recv()
    except TimeoutError:
        return None
    except ConnectionError:
        return time.monotonic() - start
    raise AssertionError("no data was sent")


def late(seconds: float) -> Callable[[Callable[[], None]], Any]:
    return lambda send: asyncio.get_running_loop().call_later(seconds, send)


async def test_aioice_alone_drops_a_peer_that_answers_late(connect: Connect) -> None:
    """The failure this module fixes: answers 0.15 s late (3x the first wait) end consent."""
    a, b = await connect(consent.AIOICE_CHECK)
    answers(b, late(0.15))
    assert await lost_within(a, 4.0) is not None


async def test_late_answers_keep_consent(connect: Connect) -> None:
    a, b = await connect()
    answers(b, late(0.15))
    assert await lost_within(a, 4.0) is None  # more than twice the consent time


async def test_a_peer_that_never_answers_is_let_go(connect: Connect) -> None:
    a, b = await connect()
    answers(b, lambda send: None)
    lost = await lost_within(a, 4.0)
    assert lost is not None and lost >= consent.EXPIRY_S - 0.3


def test_every_peer_connection_checks_consent_this_way(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aioice.Connection, "query_consent", consent.AIOICE_CHECK)
    pc = peer_connection()
    assert aioice.Connection.query_consent is consent.query_consent
    peer_connection()  # once is enough
    assert aioice.Connection.query_consent is consent.query_consent
    del pc
