"""The default LLM engine: llama.cpp's server, in a supervised child process, one slot per
conversation.

Every session's replies go to one `LlamaServer` (see llama_server.py), which decodes them
together. Each conversation (`GenerationParams.conversation`) keeps a slot of its own while
it lasts, so its prompt (the persona's head, prefilled when the session starts, then the
history) stays in that slot's KV cache and a new turn evaluates only its new words; when there
are more conversations than slots, the one heard from least recently gives its slot up (and
its prompt is evaluated again when it next speaks). Replies stream over loopback HTTP: `astream`
on the event loop (no thread waits for tokens), `stream` for synchronous callers. Closing
either stops that reply at the next token; the others go on.

If the child dies (a crash in native code), the replies in flight fail with RuntimeError (the
session speaks its apology), the supervisor starts a new child, and requests made meanwhile
wait up to `restart_wait_s` for it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from voice_agent.backbone.base import GenerationParams
from voice_agent.backbone.llama_server import LlamaServer, ServerConfig
from voice_agent.backbone.llm_openai import OpenAICompatibleLLM

log = logging.getLogger(__name__)


class SlotMap:
    """Conversations to slots: a conversation keeps its slot; a new one takes a free slot or
    the slot of the conversation heard from least recently."""

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self._owners: OrderedDict[str, int] = OrderedDict()
        self._lock = threading.Lock()

    def slot(self, conversation: str | None) -> int | None:
        """The slot for `conversation` (None: let the server choose)."""
        if conversation is None:
            return None
        with self._lock:
            if conversation in self._owners:
                self._owners.move_to_end(conversation)
                return self._owners[conversation]
            taken = set(self._owners.values())
            free = [s for s in range(self.slots) if s not in taken]
            if free:
                slot = free[0]
            else:
                _, slot = self._owners.popitem(last=False)
            self._owners[conversation] = slot
            return slot

    def release(self, conversation: str) -> None:
        """The conversation is over: its slot is free for the next one."""
        with self._lock:
            self._owners.pop(conversation, None)


class LlamaServerLLM:
    """A `LLMEngine` backed by llama.cpp's server in a child process (module docstring).

    Args:
        model: the GGUF file.
        slots: conversations decoded together, each keeping its own prompt cache.
        context_tokens: context of each slot.
        threads: CPU threads of the server.
        log_path: llama.cpp's log.
        sampling: more sampler fields sent with every request (e.g. ``top_k``, ``min_p``).
        timeout_s: wait for each piece of a reply.
        restart_wait_s: how long a request waits for a server that is restarting.

    Raises:
        RuntimeError: the server could not start (the message ends with its log).
    """

    def __init__(
        self,
        model: Path,
        *,
        slots: int = 8,
        context_tokens: int = 2048,
        threads: int = 2,
        log_path: Path,
        sampling: dict[str, Any] | None = None,
        timeout_s: float = 30.0,
        restart_wait_s: float = 15.0,
    ) -> None:
        self.model = Path(model)
        self.restart_wait_s = restart_wait_s
        self.slots = SlotMap(slots)
        self.server = LlamaServer(
            ServerConfig(str(self.model), slots, context_tokens, threads), log_path
        )
        self._timeout_s = timeout_s
        self._extra = {"cache_prompt": True, "repeat_last_n": 64, **(sampling or {})}
        self._clients: dict[str, OpenAICompatibleLLM] = {}
        self._lock = threading.Lock()
        self._prefills = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llm-prefill")
        self.server.start()

    # -- the LLMEngine protocol --------------------------------------------------------------

    def stream(self, messages: Sequence[dict[str, str]], params: GenerationParams) -> Iterator[str]:
        """Yield the reply in pieces (blocking); closing the iterator stops it."""

        def reply() -> Iterator[str]:
            for attempt in (1, 2):  # waits while the server restarts: not before next()
                client, pid = self._client(), self.server.pid
                said = False
                try:
                    for piece in client.stream_body(self._body(client, messages, params)):
                        said = True
                        yield piece
                    return
                except RuntimeError:
                    if said or attempt == 2 or not self._died(pid):
                        raise

        return reply()

    async def astream(
        self, messages: Sequence[dict[str, str]], params: GenerationParams
    ) -> AsyncIterator[str]:
        """Yield the reply in pieces on the event loop; closing (or cancelling) stops it."""
        import asyncio

        for attempt in (1, 2):  # a child that died before it said anything: once more
            client = await asyncio.to_thread(self._client)  # waits while the server restarts
            pid, said = self.server.pid, False
            try:
                async for piece in client.astream_body(self._body(client, messages, params)):
                    said = True
                    yield piece
                return
            except RuntimeError:
                if said or attempt == 2 or not await asyncio.to_thread(self._died, pid):
                    raise

    def prefill(
        self, messages: Sequence[dict[str, str]], params: GenerationParams | None = None
    ) -> threading.Event:
        """Evaluate `messages` into the conversation's slot in the background (e.g. the
        persona's head when a session starts); returns an event set when it is done."""
        done = threading.Event()
        p = GenerationParams(max_tokens=1, conversation=params.conversation if params else None)
        batch = [dict(m) for m in messages]

        def run() -> None:
            try:
                for _ in self.stream(batch, p):
                    pass
            except RuntimeError as exc:
                log.warning("prefill failed: %s", exc)
            finally:
                done.set()

        try:
            self._prefills.submit(run)
        except RuntimeError:  # closed
            done.set()
        return done

    def end_conversation(self, conversation: str) -> None:
        """The conversation is over: its slot goes to the next one."""
        self.slots.release(conversation)

    def health(self) -> dict[str, Any]:
        return self.server.health()

    def close(self) -> None:
        """Stop the server and its child; the engine cannot be used afterwards."""
        self._prefills.shutdown(wait=False, cancel_futures=True)
        self.server.close()
        with self._lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()

    # -- internals -----------------------------------------------------------------------------

    def _died(self, pid: int | None, within_s: float = 1.0) -> bool:
        """Whether the child `pid` has died (or dies within `within_s`): a request that failed
        before any reply came is then worth sending again, to its successor."""
        deadline = time.monotonic() + within_s
        while self.server.pid == pid and pid is not None:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def _client(self) -> OpenAICompatibleLLM:
        url = self.server.wait_ready(self.restart_wait_s)
        with self._lock:
            client = self._clients.get(url)
            if client is None:  # the first start, or a restart on another port
                for old in self._clients.values():
                    old.close()
                self._clients = {
                    url: OpenAICompatibleLLM(
                        url + "/v1",
                        self.model.name,
                        api_key=self.server.key,
                        timeout_s=self._timeout_s,
                        repeat_penalty_key="repeat_penalty",
                        extra_body=self._extra,
                    )
                }
                client = self._clients[url]
            return client

    def _body(
        self,
        client: OpenAICompatibleLLM,
        messages: Sequence[dict[str, str]],
        params: GenerationParams,
    ) -> dict[str, Any]:
        body = client.body(messages, params)
        slot = self.slots.slot(params.conversation)
        if slot is not None:
            body["id_slot"] = slot
        return body
