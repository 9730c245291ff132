"""Chat with any OpenAI-compatible server (vLLM, SGLang, llama.cpp's server, OpenAI itself).

`POST {base_url}/chat/completions` with `"stream": true`; the reply arrives as server-sent
events, one `data: {json}` line per chunk and `data: [DONE]` at the end. Each request runs on
the calling thread with a shared `httpx.Client` (thread-safe), so concurrent sessions are
concurrent requests; scaling is the server's job. Closing the iterator closes the HTTP
response, which tells the server to stop generating.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any

import httpx

from voice_agent.backbone.base import GenerationParams

_EXCERPT = 300
_MAX_REPLY_BYTES = 1024 * 1024
"""A whole (non-streamed) reply larger than this is cut (and then fails to parse, clearly)."""


class OpenAICompatibleLLM:
    """A `LLMEngine` that streams chat completions from an OpenAI-compatible HTTP server.

    Args:
        base_url: the API root, e.g. ``http://127.0.0.1:8000/v1``.
        model: the model name the server knows.
        api_key: sent as ``Authorization: Bearer ...``; never logged or put in an error.
        timeout_s: limit for connecting and for each wait on the server (not the whole reply).
        repeat_penalty_key: the request field that carries `GenerationParams.repeat_penalty`:
            ``"repeat_penalty"`` for llama.cpp's servers, ``"repetition_penalty"`` for vLLM and
            SGLang; None (the default) sends none, since OpenAI refuses unknown fields.
        extra_body: more request fields, sent as they are (e.g. ``{"min_p": 0.05}``).
        transport: an `httpx` transport (tests use `httpx.MockTransport`).

    Every failure (connection refused, timeout, HTTP error, a stream that is not valid SSE)
    is raised from the iterator as RuntimeError naming the URL, with the status and an excerpt
    of the body where there is one.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout_s: float = 30,
        repeat_penalty_key: str | None = None,
        extra_body: Mapping[str, Any] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = base_url.rstrip("/") + "/chat/completions"
        self._shown_url = str(httpx.URL(self.url).copy_with(userinfo=b""))
        """The URL as errors show it: without any user:password in it."""
        self.model = model
        self.repeat_penalty_key = repeat_penalty_key
        self.extra_body = dict(extra_body or {})
        self._key = api_key
        self._transport = transport
        headers = {"Accept": "text/event-stream"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._client = httpx.Client(
            headers=headers, timeout=httpx.Timeout(timeout_s), transport=transport
        )

    def stream(self, messages: Sequence[dict[str, str]], params: GenerationParams) -> Iterator[str]:
        """Yield the reply's text as the server streams it. Nothing is sent until the first
        `next()`; closing the iterator closes the response."""
        return self.stream_body(self.body(messages, params))

    def astream(
        self, messages: Sequence[dict[str, str]], params: GenerationParams
    ) -> AsyncIterator[str]:
        """`stream` for the event loop: no thread waits on the network. Closing the iterator
        (or cancelling the task that reads it) closes the response."""
        return self.astream_body(self.body(messages, params))

    def body(self, messages: Sequence[dict[str, str]], params: GenerationParams) -> dict[str, Any]:
        """The request for a streamed reply to `messages`."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [dict(m) for m in messages],
            "stream": True,
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
        }
        if params.stop:
            body["stop"] = list(params.stop)
        if self.repeat_penalty_key:
            body[self.repeat_penalty_key] = params.repeat_penalty
        body.update(self.extra_body)
        return body

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()

    def stream_body(self, body: dict[str, Any]) -> Iterator[str]:
        """Stream the reply to a request made by `body` (and changed as the caller likes)."""
        try:
            with self._client.stream("POST", self.url, json=body) as response:
                if response.status_code >= 400:
                    raise self._error(f"HTTP {response.status_code}", _read(response, _EXCERPT * 4))
                if not _is_sse(response):  # a server that ignored stream=true: one JSON reply
                    yield self._whole_reply(_read(response, _MAX_REPLY_BYTES))
                    return
                for line in response.iter_lines():
                    piece = self._event(line)
                    if piece is None:
                        return
                    if piece:
                        yield piece
        except httpx.HTTPError as exc:
            raise self._failed(exc) from None

    async def astream_body(self, body: dict[str, Any]) -> AsyncIterator[str]:
        """`stream_body` for the event loop."""
        try:
            async with (
                httpx.AsyncClient(
                    headers=self._client.headers,
                    timeout=self._client.timeout,
                    transport=self._transport  # a MockTransport serves both kinds
                    if isinstance(self._transport, httpx.AsyncBaseTransport)
                    else None,
                ) as client,
                client.stream("POST", self.url, json=body) as response,
            ):
                if response.status_code >= 400:
                    body_text = await _aread(response, _EXCERPT * 4)
                    raise self._error(f"HTTP {response.status_code}", body_text)
                if not _is_sse(response):
                    yield self._whole_reply(await _aread(response, _MAX_REPLY_BYTES))
                    return
                async for line in response.aiter_lines():
                    piece = self._event(line)
                    if piece is None:
                        return
                    if piece:
                        yield piece
        except httpx.HTTPError as exc:
            raise self._failed(exc) from None

    def _failed(self, exc: httpx.HTTPError) -> RuntimeError:
        """A transport failure (no answer, no connection, a broken stream), for people."""
        if isinstance(exc, httpx.TimeoutException):
            return self._error(f"timed out ({type(exc).__name__})")
        if isinstance(exc, httpx.ConnectError):
            return self._error(f"cannot connect: {exc}")
        return self._error(f"request failed: {type(exc).__name__}: {exc}")

    def _event(self, line: str) -> str | None:
        """The text one SSE line carries ("" for none); None at ``data: [DONE]``."""
        if not line.startswith("data:"):
            return ""  # blank separators, comments (": ping"), event:/id: fields
        data = line[5:].strip()
        if data == "[DONE]":
            return None
        chunk = self._parse(data)
        if "error" in chunk:
            raise self._error("error event", json.dumps(chunk["error"]))
        try:
            choices = chunk["choices"]
            if not choices:  # e.g. a final usage-only chunk
                return ""
            content = choices[0]["delta"].get("content")
        except (KeyError, TypeError, AttributeError, IndexError):
            raise self._error("malformed stream chunk", data) from None
        if content is not None and not isinstance(content, str):
            raise self._error("malformed stream chunk", data)
        return content or ""

    def _parse(self, data: str) -> dict[str, Any]:
        try:
            parsed = json.loads(data)
        except ValueError:
            raise self._error("malformed stream (not JSON)", data) from None
        if not isinstance(parsed, dict):
            raise self._error("malformed stream (not a JSON object)", data)
        return parsed

    def _whole_reply(self, text: str) -> str:
        reply = self._parse(text)
        try:
            return str(reply["choices"][0]["message"]["content"] or "")
        except (KeyError, TypeError, IndexError):
            raise self._error("unexpected reply (no choices[0].message)", text) from None

    def _error(self, what: str, body: str = "") -> RuntimeError:
        msg = f"LLM server {self._shown_url}: {what}"
        if body:
            excerpt = body.strip().replace("\n", " ")
            if self._key:
                excerpt = excerpt.replace(self._key, "***")
            if len(excerpt) > _EXCERPT:
                excerpt = excerpt[:_EXCERPT] + "..."
            msg += f": {excerpt}"
        return RuntimeError(msg)


def _is_sse(response: httpx.Response) -> bool:
    return str(response.headers.get("content-type", "")).startswith("text/event-stream")


async def _aread(response: httpx.Response, limit: int) -> str:
    """`_read` for an async response."""
    body = b""
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) >= limit:
            break
    return body[:limit].decode(errors="replace")


def _read(response: httpx.Response, limit: int) -> str:
    """At most `limit` bytes of a response body, as text (a hostile server can't fill memory)."""
    body = b""
    for chunk in response.iter_bytes():
        body += chunk
        if len(body) >= limit:
            break
    return body[:limit].decode(errors="replace")
