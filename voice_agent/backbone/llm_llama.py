"""Chat with a GGUF model on the CPU through llama.cpp (llama-cpp-python).

Threading: llama.cpp's `Llama` is not thread-safe, and it has one KV cache. So each engine runs
its generations on a worker thread of its own, one at a time in arrival order, holding
`self._lock` for the whole generation (two sessions are served one after the other). `stream()`
only queues a request; the iterator it returns is fed by the worker, which runs ahead of the
reader. Closing the iterator cancels the request: the worker stops before the next token, and
`close()` waits until it has, so once it returns no more tokens are computed for that reply.
Because generation never needs the caller's threads, a reader that is slow, blocked or gone
cannot hold the model for anyone else (a reply that is never read ends at `max_tokens`).

The prompt is rendered with the chat template stored in the GGUF metadata. Between turns of one
conversation the new prompt starts with the previous one (system prompt, examples, history), and
llama.cpp re-evaluates only what follows the longest common prefix of tokens, so later turns
start fast; `prefill()` does the same for the first turn (evaluate the persona's head early).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voice_agent.backbone.base import GenerationParams
from voice_agent.history import fit_to_context

log = logging.getLogger(__name__)

_DONE = object()


@dataclass(frozen=True, slots=True)
class Sampling:
    """Engine-wide sampler settings that `GenerationParams` does not carry.

    The defaults keep a small model from looping: `min_p` drops the long tail that `top_p` alone
    lets through at higher temperatures, and the penalties look back over `penalty_last_n`
    tokens (the reply so far and the end of the prompt).
    """

    top_k: int = 40
    min_p: float = 0.05
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    penalty_last_n: int = 64
    seed: int | None = None
    """None: a fixed seed (replies are reproducible); set one to vary them."""


@dataclass(eq=False)
class _Request:
    messages: list[dict[str, str]]
    params: GenerationParams
    prefill: bool = False
    """Evaluate the prompt into the KV cache only."""
    pieces: queue.SimpleQueue[object] = field(default_factory=queue.SimpleQueue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)
    started: bool = False
    state: threading.Lock = field(default_factory=threading.Lock)
    """Guards `started` against `cancelled`, so a reader's close knows whether to wait."""

    def start(self) -> bool:
        """Mark the request started, unless it was cancelled first."""
        with self.state:
            self.started = not self.cancelled.is_set()
            return self.started

    def cancel(self) -> bool:
        """Cancel it; True if the worker had already started it."""
        with self.state:
            self.cancelled.set()
            return self.started


class LlamaCppLLM:
    """A `LLMEngine` for GGUF chat models (SmolLM2, Qwen2.5, ...) run by llama.cpp.

    Args:
        model: the .gguf file.
        n_ctx: context window in tokens (prompt and reply together).
        threads: CPU threads for decoding and for prompt evaluation.
        n_batch: prompt tokens evaluated per llama.cpp call.
        sampling: sampler settings beyond `GenerationParams`.
        chat_format: a llama-cpp-python chat format name; None uses the GGUF's own template.
        warmup: run one tiny generation at load, so the first request is not slow.

    Raises:
        RuntimeError: the file is missing, is not a GGUF model llama.cpp can load, or has no chat
            template (and no `chat_format` was given). The message names the file.
    """

    def __init__(
        self,
        model: Path,
        *,
        n_ctx: int = 2048,
        threads: int = 2,
        n_batch: int = 512,
        sampling: Sampling | None = None,
        chat_format: str | None = None,
        warmup: bool = True,
    ) -> None:
        self.model = Path(model)
        self.n_ctx = n_ctx
        self.sampling = sampling or Sampling()
        self.tokens_generated = 0
        """Tokens sampled so far by this engine (for tests and metrics)."""
        self._llm = _load(self.model, n_ctx, threads, n_batch, self.sampling, chat_format)
        self._format = _formatter(self._llm, True) if chat_format is None else None
        self._format_head = _formatter(self._llm, False) if chat_format is None else None
        self._lock = threading.Lock()
        self._requests: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        if warmup:
            self._run(_Request([{"role": "user", "content": "Hi"}], GenerationParams(max_tokens=2)))
        self._worker = threading.Thread(target=self._serve, name="llama-cpp", daemon=True)
        self._worker.start()

    def stream(self, messages: Sequence[dict[str, str]], params: GenerationParams) -> Iterator[str]:
        """Queue a reply to `messages` and yield it in pieces as they are generated.

        Cheap: generation happens on the engine's worker thread. Closing the iterator stops it.
        Errors (a prompt that cannot fit `n_ctx`, a llama.cpp failure) are raised from the
        iterator as RuntimeError. A prompt longer than `n_ctx - params.max_tokens` is cut from
        the oldest message after the system prompt (the last message is always kept).
        """
        req = _Request([dict(m) for m in messages], params)
        self._requests.put(req)
        return _Stream(req, self._worker)

    def prefill(
        self, messages: Sequence[dict[str, str]], params: GenerationParams | None = None
    ) -> threading.Event:
        """Evaluate `messages` into the KV cache in the background (e.g. a persona's system
        prompt and examples when a session starts), so that the first reply only evaluates what
        follows them. Returns at once, with an event set when it is done. (One context: the
        conversation in `params` changes nothing.)"""
        req = _Request([dict(m) for m in messages], GenerationParams(), prefill=True)
        self._requests.put(req)
        return req.finished

    def count_tokens(self, text: str) -> int:
        """The number of tokens `text` has for this model (usable as `History.prompt`'s count)."""
        return len(self._llm.tokenize(text.encode(), add_bos=False, special=True))

    def close(self) -> None:
        """Stop the worker after the request in progress (queued ones are answered with an
        error). The engine cannot be used afterwards."""
        self._requests.put(None)
        self._worker.join(timeout=5)

    # -- the worker --------------------------------------------------------------------------

    def _serve(self) -> None:
        while (req := self._requests.get()) is not None:
            self._run(req)
        while True:  # answer whatever was queued behind the stop
            try:
                late = self._requests.get_nowait()
            except queue.Empty:
                return
            if late is not None:
                late.pieces.put(RuntimeError(f"LLM engine for {self.model} is closed"))
                late.finished.set()

    def _run(self, req: _Request) -> None:
        try:
            if not req.start():
                return  # closed before it started
            with self._lock:
                self._generate(req)
        except Exception as exc:  # handed to the reader, never lost in this thread
            if req.prefill:
                log.warning("prefill on %s failed: %s", self.model.name, exc)
            req.pieces.put(exc if isinstance(exc, RuntimeError) else _wrap(exc, self.model))
        finally:
            req.pieces.put(_DONE)
            req.finished.set()

    def _generate(self, req: _Request) -> None:
        p, s = req.params, self.sampling
        messages = self._fit(req.messages, p.max_tokens)
        if req.prefill:  # generate() reuses the cached prefix, evaluates the rest, samples one
            tokens = self._prompt_tokens(messages, generation_prompt=False)
            gen = self._llm.generate(tokens[: self.n_ctx - 1], temp=0.0)
            next(gen)
            gen.close()
            return
        chunks: Any = self._llm.create_chat_completion(
            messages,
            stream=True,
            max_tokens=p.max_tokens,
            temperature=p.temperature,
            top_p=p.top_p,
            repeat_penalty=p.repeat_penalty,
            stop=list(p.stop),
            top_k=s.top_k,
            min_p=s.min_p,
            frequency_penalty=s.frequency_penalty,
            presence_penalty=s.presence_penalty,
            seed=s.seed,
        )
        try:
            for chunk in chunks:
                if req.cancelled.is_set():
                    return
                delta = chunk["choices"][0]["delta"]
                if "content" in delta:
                    self.tokens_generated += 1
                    if delta["content"]:
                        req.pieces.put(delta["content"])
        finally:
            chunks.close()  # stops llama.cpp's generator chain before another token

    # -- fitting the prompt into the context -------------------------------------------------

    def _prompt_tokens(
        self, messages: list[dict[str, str]], generation_prompt: bool = True
    ) -> list[int]:
        fmt = self._format if generation_prompt else self._format_head
        if fmt is None:  # a named chat_format: count its plain text
            prompt = "\n".join(m["content"] for m in messages)
        else:
            prompt = fmt(messages=messages).prompt
        return list(self._llm.tokenize(prompt.encode(), add_bos=False, special=True))

    def _fit(self, messages: list[dict[str, str]], max_tokens: int) -> list[dict[str, str]]:
        """The messages that fit `n_ctx` with room for `max_tokens` (see `fit_to_context`)."""
        fitted, _ = fit_to_context(
            messages, lambda m: len(self._prompt_tokens(m)), self.n_ctx, max_tokens, self.model.name
        )
        return fitted


class _Stream(Iterator[str]):
    """The reader's side of one request."""

    def __init__(self, req: _Request, worker: threading.Thread) -> None:
        self._req = req
        self._worker = worker
        self._done = False

    def __iter__(self) -> _Stream:
        return self

    def __next__(self) -> str:
        while not self._done:
            try:
                item = self._req.pieces.get(timeout=1.0)
            except queue.Empty:
                if not self._worker.is_alive() and not self._req.finished.is_set():
                    self._done = True
                    raise RuntimeError("the LLM worker thread has stopped") from None
                continue
            if item is _DONE:
                self._done = True
            elif isinstance(item, BaseException):
                self._done = True
                raise item
            else:
                return str(item)
        raise StopIteration

    def close(self) -> None:
        """Cancel the reply; returns once no more of its tokens will be computed (at most the
        one being decoded, or the prompt evaluation in progress, is finished first)."""
        self._done = True
        if self._req.cancel() and self._worker.is_alive():
            self._req.finished.wait(timeout=10)

    def __del__(self) -> None:
        self._req.cancel()


def _load(
    model: Path, n_ctx: int, threads: int, n_batch: int, s: Sampling, chat_format: str | None
) -> Any:
    try:
        with model.open("rb") as f:
            magic = f.read(4)
    except OSError as exc:
        raise RuntimeError(f"cannot read GGUF model {model}: {exc.strerror or exc}") from exc
    if magic != b"GGUF":
        raise RuntimeError(f"{model} is not a GGUF model file (it starts with {magic!r})")
    try:
        from llama_cpp import Llama
    except ImportError as exc:  # pragma: no cover - a core dependency
        raise RuntimeError("llama-cpp-python is not installed: pip install voice-agent") from exc
    try:
        llm = Llama(
            model_path=str(model),
            n_ctx=n_ctx,
            n_threads=threads,
            n_threads_batch=threads,
            n_batch=min(n_batch, n_ctx),
            last_n_tokens_size=s.penalty_last_n,
            chat_format=chat_format,
            verbose=False,
        )
    except (ValueError, RuntimeError, OSError) as exc:
        raise RuntimeError(
            f"llama.cpp could not load {model}: {exc} (is the file complete?)"
        ) from exc
    if chat_format is None and "tokenizer.chat_template" not in llm.metadata:
        raise RuntimeError(f"{model} has no chat template in its metadata; pass chat_format=...")
    return llm


def _formatter(llm: Any, generation_prompt: bool) -> Any:
    """The same Jinja2 formatter llama-cpp-python builds from the GGUF template, for counting."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    def text(token: int) -> str:
        if token < 0:
            return ""
        return str(llm.detokenize([token], special=True).decode("utf-8", "replace"))

    return Jinja2ChatFormatter(
        template=llm.metadata["tokenizer.chat_template"],
        eos_token=text(llm.token_eos()),
        bos_token=text(llm.token_bos()),
        add_generation_prompt=generation_prompt,
    )


def _wrap(exc: Exception, model: Path) -> RuntimeError:
    err = RuntimeError(f"llama.cpp failed on {model.name}: {type(exc).__name__}: {exc}")
    err.__cause__ = exc
    return err
