"""The LLM engines: llama.cpp on the two embedded GGUF models, an OpenAI-compatible server (a real
llama.cpp server in a subprocess, plus a fake transport for what a real server will not do),
and transformers where torch is installed."""

from __future__ import annotations

import importlib.util
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.servers import free_port
from voice_agent.backbone.base import GenerationParams
from voice_agent.backbone.llama_server import LlamaServer, ServerConfig
from voice_agent.backbone.llm_llama import LlamaCppLLM
from voice_agent.backbone.llm_openai import OpenAICompatibleLLM
from voice_agent.backbone.llm_transformers import TransformersLLM, _StopStrings
from voice_agent.history import History
from voice_agent.modelfiles import ModelStore
from voice_agent.persona import load_persona
from voice_agent.resources import personas_dir

GREEDY = GenerationParams(max_tokens=48, temperature=0.0)
QUESTION = "What's the capital of Italy?"


def concierge(*turns: str) -> list[dict[str, str]]:
    """The concierge persona's prompt (system + examples) and the user turns given."""
    history = History()
    for i, text in enumerate(turns):
        (history.add_user if i % 2 == 0 else history.add_assistant)(text)
    return history.prompt(load_persona(personas_dir() / "concierge.yaml"), 1800)


def text(
    engine: LlamaCppLLM | OpenAICompatibleLLM, messages: list[dict[str, str]], **kw: object
) -> str:
    params = GenerationParams(**{"max_tokens": 48, "temperature": 0.0, **kw})  # type: ignore[arg-type]
    return "".join(engine.stream(messages, params))


# --- llama.cpp --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def store() -> ModelStore:
    return ModelStore()


@pytest.fixture(scope="module")
def smol_path(store: ModelStore) -> Path:
    return store.path("smollm2-135m")


@pytest.fixture(scope="module")
def smol(smol_path: Path) -> Iterator[LlamaCppLLM]:
    engine = LlamaCppLLM(smol_path, n_ctx=1024)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def qwen(store: ModelStore) -> Iterator[LlamaCppLLM]:
    engine = LlamaCppLLM(store.path("qwen2.5-0.5b"), n_ctx=1024)
    yield engine
    engine.close()


class EvalCounter:
    """Counts the tokens llama.cpp evaluates (prompt and reply) by wrapping `Llama.eval`."""

    def __init__(self, engine: LlamaCppLLM, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        evaluate = engine._llm.eval

        def counting(tokens: list[int]) -> None:
            self.count += len(tokens)
            evaluate(tokens)

        monkeypatch.setattr(engine._llm, "eval", counting)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["smol", "qwen"])
def test_both_models_answer_through_their_own_chat_template(
    model: str, request: pytest.FixtureRequest
) -> None:
    engine: LlamaCppLLM = request.getfixturevalue(model)
    assert engine._llm.chat_format == "chat_template.default"  # the GGUF's own template: ChatML
    rendered = engine._format(
        messages=[{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]
    )
    assert rendered.prompt == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n"
    )
    pieces = list(engine.stream(concierge(QUESTION), GREEDY))
    reply = "".join(pieces)
    assert len(pieces) > 1  # streamed, not one block
    assert "Rome" in reply
    assert "<|im" not in reply and "assistant" not in reply.lower()  # no template leaking out
    assert reply.strip().count(".") <= 3  # short, as the persona asks


@pytest.mark.slow
def test_stop_strings_and_max_tokens_are_honoured(smol: LlamaCppLLM) -> None:
    messages = concierge("Tell me about the city of Rome in three sentences.")
    full = text(smol, messages, max_tokens=60)
    words = full.split()
    assert len(words) > 8, full
    stop = " " + words[len(words) // 2]
    before = full[: full.index(stop)]
    assert text(smol, messages, max_tokens=60, stop=(stop,)) == before
    short = text(smol, messages, max_tokens=5)
    assert full.startswith(short) and 0 < smol.count_tokens(short) <= 5


@pytest.mark.slow
def test_closing_the_iterator_stops_generation(smol: LlamaCppLLM) -> None:
    # greedy, SmolLM2 counts for all 400 tokens (~6 s): ending early cannot pass for stopping
    messages = [{"role": "user", "content": "Count from 1 to 300, separated by commas."}]
    params = GenerationParams(max_tokens=400, temperature=0.0, repeat_penalty=1.0)
    # control: left open, the worker keeps generating while nobody reads
    it = smol.stream(messages, params)
    next(it)
    n0 = smol.tokens_generated
    deadline = time.monotonic() + 5
    while smol.tokens_generated == n0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert smol.tokens_generated > n0
    it.close()  # type: ignore[attr-defined]
    # closed: close() returns quickly and not one more token is sampled or evaluated after it
    it = smol.stream(messages, params)
    next(it)
    t = time.perf_counter()
    it.close()  # type: ignore[attr-defined]
    assert time.perf_counter() - t < 1.0
    n0, kv = smol.tokens_generated, smol._llm.n_tokens
    time.sleep(0.3)
    assert (smol.tokens_generated, smol._llm.n_tokens) == (n0, kv)
    assert list(it) == []
    assert text(smol, concierge(QUESTION))  # and the engine still answers


@pytest.mark.slow
def test_later_turns_and_a_prefilled_first_turn_reuse_the_kv_cache(
    smol: LlamaCppLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    counter = EvalCounter(smol, monkeypatch)
    turn1 = concierge("How do I boil an egg?")
    prompt1 = len(smol._prompt_tokens(turn1))
    smol._llm.reset()  # nothing cached
    answer = text(smol, turn1)
    assert counter.count >= prompt1  # the whole prompt was evaluated
    turn2 = concierge("How do I boil an egg?", answer, "How long for a soft one?")
    new = len(smol._prompt_tokens(turn2)) - prompt1
    counter.count = 0
    first = next(iter(smol.stream(turn2, GenerationParams(max_tokens=1, temperature=0))))
    assert first and counter.count <= new + 8  # only what follows the shared prefix
    # a prefill of the persona's head before turn one does the same for turn one
    smol._llm.reset()
    assert smol.prefill(concierge()).wait(10)
    counter.count = 0
    text(smol, turn1, max_tokens=1)
    assert counter.count <= prompt1 - len(smol._prompt_tokens(concierge())) + 8


@pytest.mark.slow
def test_two_sessions_are_served_one_after_the_other(smol: LlamaCppLLM) -> None:
    a, b = concierge(QUESTION), concierge("How do I boil an egg?")
    alone = text(smol, a), text(smol, b)
    together: dict[str, str] = {}

    def ask(name: str, messages: list[dict[str, str]]) -> None:
        together[name] = ""
        for piece in smol.stream(messages, GREEDY):
            together[name] += piece
            time.sleep(0.002)  # a slow reader, so that the two requests overlap

    threads = [threading.Thread(target=ask, args=x) for x in (("a", a), ("b", b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert (together["a"], together["b"]) == alone  # no reply corrupted the other's KV cache


@pytest.mark.slow
def test_a_prompt_too_long_for_the_context_is_trimmed_or_refused(smol_path: Path) -> None:
    engine = LlamaCppLLM(smol_path, n_ctx=256, warmup=False)
    try:
        filler = [
            f"Tell me fact number {i} about the weather in a long sentence." for i in range(60)
        ]
        long_history = concierge(*filler, QUESTION)
        assert len(engine._prompt_tokens(long_history)) > 256
        assert text(engine, long_history, max_tokens=32)  # the oldest turns were dropped
        huge = [
            {"role": "system", "content": "Be brief. " * 300},
            {"role": "user", "content": "Hi"},
        ]
        with pytest.raises(RuntimeError, match="does not fit the 256-token context"):
            text(engine, huge)
        assert text(engine, concierge(QUESTION), max_tokens=8)  # still usable
    finally:
        engine.close()


@pytest.mark.slow
def test_a_missing_or_corrupt_gguf_is_named_in_the_error(tmp_path: Path, smol_path: Path) -> None:
    missing = tmp_path / "nope.gguf"
    with pytest.raises(RuntimeError, match=r"cannot read GGUF model .*nope\.gguf"):
        LlamaCppLLM(missing)
    not_gguf = tmp_path / "noise.gguf"
    not_gguf.write_bytes(b"\x00" * 4096)
    with pytest.raises(RuntimeError, match=r"noise\.gguf is not a GGUF model file"):
        LlamaCppLLM(not_gguf)
    truncated = tmp_path / "truncated.gguf"
    with smol_path.open("rb") as f:
        truncated.write_bytes(f.read(1 << 20))
    with pytest.raises(RuntimeError, match=r"could not load .*truncated\.gguf"):
        LlamaCppLLM(truncated)


# --- OpenAI-compatible ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(smol_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    """llama.cpp's own OpenAI-compatible server on SmolLM2, with one slot (it serves one
    request at a time: closing a stream must free it)."""
    log = tmp_path_factory.mktemp("server") / "server.log"
    llama = LlamaServer(ServerConfig(str(smol_path), slots=1, context_tokens=1024), log)
    llama.start()
    yield llama
    llama.close()


@pytest.mark.slow
def test_openai_engine_streams_from_a_real_llama_cpp_server(server: LlamaServer) -> None:
    engine = OpenAICompatibleLLM(
        server.wait_ready(10) + "/v1",
        "smollm2",
        api_key=server.key,
        repeat_penalty_key="repeat_penalty",
    )
    pieces = list(engine.stream(concierge(QUESTION), GREEDY))
    assert len(pieces) > 1 and "Rome" in "".join(pieces)
    full = text(engine, concierge("Tell me about the city of Rome."), max_tokens=40)
    stop = " " + full.split()[4]
    assert (
        text(engine, concierge("Tell me about the city of Rome."), max_tokens=40, stop=(stop,))
        == (full[: full.index(stop)])
    )
    assert len(text(engine, concierge("Tell me about the city of Rome."), max_tokens=3)) < len(full)
    # closing early frees the server (it serves one request at a time): the next request is
    # not stuck behind the 5-10 s that 500 more tokens would take
    story = [{"role": "user", "content": "Tell me a very long story."}]
    waits = []
    for max_tokens in (2, 500):
        it = engine.stream(story, GenerationParams(max_tokens=max_tokens, temperature=1.0))
        next(it)
        it.close()  # type: ignore[attr-defined]
        t = time.perf_counter()
        assert text(engine, concierge(QUESTION), max_tokens=4)
        waits.append(time.perf_counter() - t)
    assert waits[1] < waits[0] + 2.5, waits
    engine.close()


@pytest.mark.slow
def test_openai_engine_reports_http_errors_with_status_and_body(server: LlamaServer) -> None:
    base = server.wait_ready(10)
    engine = OpenAICompatibleLLM(base + "/v1", "smollm2", api_key=server.key)
    with pytest.raises(RuntimeError, match=rf"{base}/v1/chat/completions: HTTP 400: .*content"):
        text(engine, [{"role": "user"}])  # type: ignore[list-item]
    stranger = OpenAICompatibleLLM(base + "/v1", "smollm2")  # without the key
    with pytest.raises(RuntimeError, match=r"/v1/chat/completions: HTTP 401"):
        text(stranger, concierge(QUESTION))
    wrong = OpenAICompatibleLLM(base + "/nope", "smollm2", api_key=server.key)
    with pytest.raises(RuntimeError, match=r"/nope/chat/completions: HTTP 404"):
        text(wrong, concierge(QUESTION))


def test_openai_engine_reports_a_refused_connection() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    engine = OpenAICompatibleLLM(url, "m", timeout_s=2)
    it = engine.stream(concierge(QUESTION), GREEDY)  # nothing is sent yet
    with pytest.raises(RuntimeError, match=rf"LLM server {url}/chat/completions: cannot connect: "):
        next(it)


def test_openai_engine_times_out_on_a_silent_server() -> None:
    with socket.socket() as listener:  # accepts connections (backlog), never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
        engine = OpenAICompatibleLLM(url, "m", timeout_s=0.3)
        t = time.perf_counter()
        with pytest.raises(RuntimeError, match=r"chat/completions: timed out \(ReadTimeout\)"):
            text(engine, concierge(QUESTION))
        assert time.perf_counter() - t < 3


class Body(httpx.SyncByteStream):
    """A response body that records whether it was closed."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        self.closed = False

    def __iter__(self) -> Iterator[bytes]:
        for line in self.lines:
            yield (line + "\n").encode()

    def close(self) -> None:
        self.closed = True


def chunk(content: str) -> str:
    return "data: " + json.dumps({"choices": [{"index": 0, "delta": {"content": content}}]})


def fake(
    body: Body, status: int = 200, seen: list[httpx.Request] | None = None
) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(request)
        return httpx.Response(status, headers={"content-type": "text/event-stream"}, stream=body)

    return httpx.MockTransport(handle)


def test_openai_engine_parses_sse_and_sends_the_params() -> None:
    body = Body(
        [
            ": ping",
            "",
            'data: {"choices":[{"delta":{"role":"assistant"}}]}',
            chunk("It's"),
            "",
            chunk(" Rome."),
            'data: {"choices":[]}',
            "data: [DONE]",
            chunk(" never read"),
        ]
    )
    seen: list[httpx.Request] = []
    engine = OpenAICompatibleLLM(
        "http://llm.test/v1/",
        "m",
        api_key="sk-1",
        transport=fake(body, seen=seen),
        repeat_penalty_key="repetition_penalty",
        extra_body={"min_p": 0.05},
    )
    params = GenerationParams(
        max_tokens=7, temperature=0.3, top_p=0.8, repeat_penalty=1.2, stop=("\n",)
    )
    assert list(engine.stream(concierge(QUESTION), params)) == ["It's", " Rome."]
    sent = json.loads(seen[0].content)
    assert str(seen[0].url) == "http://llm.test/v1/chat/completions"
    assert seen[0].headers["authorization"] == "Bearer sk-1"
    assert sent["stream"] is True and sent["messages"] == concierge(QUESTION)
    assert (sent["max_tokens"], sent["temperature"], sent["top_p"], sent["stop"]) == (
        7,
        0.3,
        0.8,
        ["\n"],
    )
    assert (sent["repetition_penalty"], sent["min_p"]) == (1.2, 0.05)
    assert body.closed


def test_openai_engine_closes_the_response_when_the_iterator_is_closed() -> None:
    body = Body([chunk(f"w{i} ") for i in range(100)])
    engine = OpenAICompatibleLLM("http://llm.test/v1", "m", transport=fake(body))
    it = engine.stream(concierge(QUESTION), GREEDY)
    assert next(it) == "w0 "
    assert not body.closed
    it.close()  # type: ignore[attr-defined]
    assert body.closed


@pytest.mark.parametrize(
    ("lines", "status", "error"),
    [
        (["data: {not json"], 200, r"malformed stream \(not JSON\): \{not json"),
        (['data: {"choices":[{"text":"x"}]}'], 200, r"malformed stream chunk"),
        (['data: {"error":{"message":"out of memory"}}'], 200, r"error event: .*out of memory"),
        (['{"error":"bad key sk-secret"}'], 401, r"HTTP 401: \{\"error\":\"bad key \*\*\*\"\}"),
        (["x" * 2000], 500, r"HTTP 500: x{300}\.\.\.$"),
    ],
)
def test_openai_engine_errors_name_the_url_and_never_the_key(
    lines: list[str], status: int, error: str
) -> None:
    engine = OpenAICompatibleLLM(
        "http://llm.test/v1", "m", api_key="sk-secret", transport=fake(Body(lines), status)
    )
    with pytest.raises(
        RuntimeError, match=r"LLM server http://llm\.test/v1/chat/completions: " + error
    ) as e:
        text(engine, concierge(QUESTION))
    assert "sk-secret" not in str(e.value)


# --- transformers -----------------------------------------------------------------------------


def test_stop_strings_are_cut_even_across_pieces() -> None:
    cut = _StopStrings(["\nUser:", "###"])
    assert cut.feed("Hello there") == ("Hello there", False)
    assert cut.feed(".\nUs") == (".", False)  # "\nUs" may begin a stop string: held back
    assert cut.feed("ually, yes #") == ("\nUsually, yes ", False)
    assert cut.feed("## ignored") == ("", True)
    assert _StopStrings(["##"]).flush() == ""


@pytest.mark.skipif(importlib.util.find_spec("torch") is not None, reason="torch is installed")
def test_transformers_engine_without_torch_says_what_to_install() -> None:
    with pytest.raises(RuntimeError, match=r"pip install 'voice-agent\[torch\]'"):
        TransformersLLM("any-model")


@pytest.mark.slow
def test_transformers_engine_streams_smollm2_from_its_gguf(smol_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("gguf")
    pytest.importorskip("accelerate")
    engine = TransformersLLM(smol_path.parent, gguf_file=smol_path.name, threads=2)
    reply = "".join(
        engine.stream(concierge(QUESTION), GenerationParams(max_tokens=16, temperature=0))
    )
    assert "Rome" in reply and "<|im" not in reply
    assert engine.count_tokens(reply) <= 16 + 1
    it = engine.stream(concierge("Tell me a long story."), GenerationParams(max_tokens=200))
    next(it)
    t = time.perf_counter()
    it.close()  # type: ignore[attr-defined]  # stops generate() at the next token
    assert time.perf_counter() - t < 5
    assert not engine._lock.locked()
