"""Chat with a Hugging Face causal LM through transformers (the `torch` extra), CUDA when there.

The GPU path: on this project's 2-core CPU llama.cpp is several times faster (see DESIGN.md), so
this engine is for a machine with CUDA, for a model llama.cpp cannot run, or for comparing.
torch and transformers are imported only when an engine is made. A model is a local folder (or
a hub id already in the local cache), or, with `gguf_file`, a GGUF file that transformers
dequantizes (this needs the `gguf` package).

Threading: one `generate()` at a time per engine, on a thread of its own, holding `self._lock`
for the whole generation (two sessions are served one after the other); the reader takes text
from a `TextIteratorStreamer`. Closing the iterator sets a flag that a `StoppingCriteria` checks
after every token, and waits for the generation thread to end.
"""

from __future__ import annotations

import importlib
import queue
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from voice_agent.backbone.base import GenerationParams
from voice_agent.history import fit_to_context

_INSTALL = "pip install 'voice-agent[torch]'"


class TransformersLLM:
    """A `LLMEngine` for Hugging Face causal LMs with a chat template.

    Args:
        model: a model folder or a cached hub id; with `gguf_file`, the folder holding it.
        gguf_file: a GGUF file name inside `model` (or a full path, then `model` is ignored).
        device: "auto" (CUDA if available, else CPU), "cpu", "cuda", "cuda:1", ...
        dtype: "auto" (float16 on CUDA, float32 on CPU) or a torch dtype name.
        n_ctx: the most tokens a prompt and its reply may take together.
        threads: CPU threads for torch (process-wide: `torch.set_num_threads`); None leaves it.
        top_k, min_p: sampler settings beyond `GenerationParams`.
        warmup: run one tiny generation at load, so the first request is not slow.

    Raises:
        RuntimeError: torch or transformers is missing (with the pip command), or the model
            cannot be loaded (naming it), or it has no chat template.
    """

    def __init__(
        self,
        model: str | Path,
        *,
        gguf_file: str | Path | None = None,
        device: str = "auto",
        dtype: str = "auto",
        n_ctx: int = 2048,
        threads: int | None = None,
        top_k: int = 40,
        min_p: float = 0.05,
        warmup: bool = True,
    ) -> None:
        torch, transformers = _imports()
        self._torch = torch
        self._transformers = transformers
        if gguf_file is not None and Path(gguf_file).is_absolute():
            model, gguf_file = Path(gguf_file).parent, Path(gguf_file).name
        self.name = f"{model}/{gguf_file}" if gguf_file else str(model)
        if threads:
            torch.set_num_threads(threads)
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = device
        if dtype == "auto":
            dtype = "float16" if device.startswith("cuda") else "float32"
        self.n_ctx = n_ctx
        self.top_k, self.min_p = top_k, min_p
        try:
            kw: dict[str, Any] = {"gguf_file": str(gguf_file)} if gguf_file else {}
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(str(model), **kw)
            version = tuple(int(x) for x in transformers.__version__.split(".")[:2])
            kw["dtype" if version >= (4, 56) else "torch_dtype"] = getattr(torch, dtype)
            self.model = transformers.AutoModelForCausalLM.from_pretrained(str(model), **kw)
        except (OSError, ValueError, ImportError, RuntimeError) as exc:
            raise RuntimeError(f"transformers could not load {self.name}: {exc}") from exc
        self.model.to(device).eval()
        if not getattr(self.tokenizer, "chat_template", None):
            raise RuntimeError(f"{self.name} has no chat template")
        self._lock = threading.Lock()
        if warmup:
            for _ in self.stream([{"role": "user", "content": "Hi"}], GenerationParams(2)):
                pass

    def stream(self, messages: Sequence[dict[str, str]], params: GenerationParams) -> Iterator[str]:
        """Yield the reply in pieces. Nothing runs until the first `next()`; closing the iterator
        stops generation after the token in progress. Stop strings are not part of the reply.
        Errors are raised from the iterator as RuntimeError."""
        return self._stream([dict(m) for m in messages], params)

    def count_tokens(self, text: str) -> int:
        """The number of tokens `text` has for this model."""
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _stream(self, messages: list[dict[str, str]], params: GenerationParams) -> Iterator[str]:
        inputs = self._encode(messages, params.max_tokens)
        stop = threading.Event()
        streamer = self._transformers.TextIteratorStreamer(
            self.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=1.0
        )
        errors: list[BaseException] = []
        sample = params.temperature > 0
        kwargs: dict[str, Any] = {
            **inputs,
            "streamer": streamer,
            "max_new_tokens": params.max_tokens,
            "do_sample": sample,
            "repetition_penalty": params.repeat_penalty,
            "stopping_criteria": self._transformers.StoppingCriteriaList([self._flag(stop)]),
            "pad_token_id": self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
        }
        if sample:
            kwargs |= {"temperature": params.temperature, "top_p": params.top_p}
            kwargs |= {"top_k": self.top_k, "min_p": self.min_p}

        def run() -> None:
            try:
                with self._lock, self._torch.inference_mode():
                    if not stop.is_set():
                        self.model.generate(**kwargs)
            except BaseException as exc:
                errors.append(exc)
            finally:
                streamer.end()

        thread = threading.Thread(target=run, name="transformers-generate", daemon=True)
        thread.start()
        cut = _StopStrings(params.stop)
        try:
            for text in _pieces(streamer, thread):
                piece, done = cut.feed(text)
                if piece:
                    yield piece
                if done:
                    return
            if errors:
                exc = errors[0]
                raise RuntimeError(f"generation failed on {self.name}: {exc}") from exc
            if rest := cut.flush():
                yield rest
        finally:
            stop.set()
            thread.join(timeout=10)

    def _flag(self, event: threading.Event) -> Any:
        """A StoppingCriteria that stops every sequence once `event` is set."""
        torch = self._torch

        class Flag(self._transformers.StoppingCriteria):  # type: ignore[misc,name-defined]
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                return torch.full((input_ids.shape[0],), event.is_set(), dtype=torch.bool)

        return Flag()

    def _encode(self, messages: list[dict[str, str]], max_tokens: int) -> dict[str, Any]:
        """Tokenize with the chat template, dropping the oldest messages after the system
        prompt while the prompt leaves no room for `max_tokens`."""

        def encode(msgs: list[dict[str, str]]) -> Any:
            return self.tokenizer.apply_chat_template(
                msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True
            )

        def length(msgs: list[dict[str, str]]) -> int:
            return int(encode(msgs)["input_ids"].shape[-1])

        fitted, _ = fit_to_context(messages, length, self.n_ctx, max_tokens, self.name)
        enc = encode(fitted)
        return {k: v.to(self.device) for k, v in enc.items()}


def _pieces(streamer: Any, thread: threading.Thread) -> Iterator[str]:
    """The streamer's text; a wait that times out is retried while the thread still runs."""
    while True:
        try:
            text = next(streamer)
        except StopIteration:
            return
        except queue.Empty:
            if not thread.is_alive():
                return
            continue
        if text:
            yield str(text)


class _StopStrings:
    """Cuts streamed text at the first stop string, holding back a tail that may begin one."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = [s for s in stops if s]
        self.held = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """What can be given out now, and whether a stop string was reached."""
        self.held += text
        hits = [i for i in (self.held.find(s) for s in self.stops) if i >= 0]
        if hits:
            out, self.held = self.held[: min(hits)], ""
            return out, True
        keep = max((_overlap(self.held, s) for s in self.stops), default=0)
        out, self.held = self.held[: len(self.held) - keep], self.held[len(self.held) - keep :]
        return out, False

    def flush(self) -> str:
        out, self.held = self.held, ""
        return out


def _overlap(text: str, stop: str) -> int:
    """Length of the longest end of `text` that is a beginning of `stop`."""
    for n in range(min(len(text), len(stop) - 1), 0, -1):
        if stop.startswith(text[-n:]):
            return n
    return 0


def _imports() -> tuple[Any, Any]:
    try:
        torch = importlib.import_module("torch")
        transformers = importlib.import_module("transformers")
    except ImportError as exc:
        raise RuntimeError(
            f"the transformers engine needs torch and transformers: {_INSTALL}"
        ) from exc
    return torch, transformers
