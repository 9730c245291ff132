"""ICE consent freshness (RFC 7675) that a busy machine does not break.

Every 4-6 s each end of a WebRTC connection asks the other, with a STUN request, whether it
still wants the media; with no answer for 30 s it stops sending. aioice (0.13) waits 0.5 s for
each answer, never retransmits, and gives up after six unanswered requests in a row. On a
machine at full load, answers on loopback took 50-900 ms (measured: eight callers and their
sessions on two cores), so sessions whose peer was alive and answering were closed after half a
minute. Here a request is retransmitted (0.5, 1, 2 s apart: an answer up to 3.5 s late
counts), and consent expires, as the RFC says, only when no answer has come for
`EXPIRY_S`. A peer that is gone is still let go: within `EXPIRY_S` plus one interval.

`install()` replaces aioice's method process-wide (every connection made after it); an aioice
without the parts it needs is left as it is, and the log says so.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time

import aioice
import aioice.stun

INTERVAL_S = 5.0
"""Between requests (each one randomized to 0.8-1.2 times this, as RFC 7675 says)."""
EXPIRY_S = 30.0
"""Consent expires this long after the last answer."""
RETRANSMISSIONS = 2
"""Resends of each request (aioice doubles the wait from 0.5 s: answers up to 3.5 s count)."""

log = logging.getLogger(__name__)
AIOICE_CHECK = aioice.Connection.query_consent
"""aioice's own check, which `install` replaces."""
_NEEDS = ("build_request", "close", "query_consent")


async def query_consent(self: aioice.Connection) -> None:
    """aioice `Connection.query_consent`, RFC 7675's way (see the module docstring)."""
    assert self.remote_password is not None  # checks start once connect() has it
    key = self.remote_password.encode("utf8")
    answered = time.monotonic()
    while True:
        await asyncio.sleep(INTERVAL_S * (0.8 + 0.4 * random.random()))
        for pair in list(self._nominated.values()):
            request = self.build_request(pair, nominate=False)
            try:
                await pair.protocol.request(
                    request, pair.remote_addr, integrity_key=key, retransmissions=RETRANSMISSIONS
                )
                answered = time.monotonic()
            except aioice.stun.TransactionError:
                pass
        if time.monotonic() - answered >= EXPIRY_S:
            log.info("ICE consent expired: no answer from the peer for %.0f s", EXPIRY_S)
            self._query_consent_task = None
            await self.close()
            return


def install() -> None:
    """Make every aioice connection made from now on check consent with `query_consent`."""
    connection = aioice.Connection
    if connection.query_consent is query_consent:
        return
    if not all(hasattr(connection, name) for name in _NEEDS):
        log.warning("this aioice has no consent check to replace; left as it is")
        return
    connection.query_consent = query_consent  # type: ignore[method-assign]
