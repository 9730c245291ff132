"""Settings: defaults < config.yaml < ``VOICE_AGENT_*`` environment < command-line flags.

Every knob lives in one pydantic model (`Settings`, ``extra="forbid"``). An unknown or
ill-typed key is an error naming its source: ``config.yaml:12: server.port: ...`` for the file,
``$VOICE_AGENT_SERVER__PORT: ...`` for the environment, ``--set server.port: ...`` for flags.

Environment: ``VOICE_AGENT_<SECTION>__<KEY>=value`` (double underscore between levels), the
value read as YAML (``8080``, ``true``, ``[a, b]``). ``VOICE_AGENT_CONFIG`` names the file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from voice_agent.yamlfile import FileError, Problem, YamlDoc, dotted, load_yaml, load_yaml_text

ENV_PREFIX = "VOICE_AGENT_"
CONFIG_ENV = "VOICE_AGENT_CONFIG"
DEFAULT_CONFIG_FILE = "config.yaml"

Ms = Annotated[int, Field(ge=0, le=60_000)]
NoiseLevel = Literal["off", "low", "moderate", "high", "very-high"]
"""WebRTC noise suppression before the VAD: off, or 6, 12, 18 or 21 dB (`audio/noise.py`)."""


def _off_is_off(value: object) -> object:
    """YAML reads a bare `off` as false: that is `off` too."""
    return "off" if value is False else value


NoiseSuppression = Annotated[NoiseLevel, BeforeValidator(_off_is_off)]


class Section(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, validate_default=True, use_attribute_docstrings=True
    )


class AudioSettings(Section):
    """Sample rates and frame sizes of the pipeline."""

    sample_rate: Literal[16000] = 16000
    """Rate of everything between the transports (ASR, VAD and turn models all expect 16 kHz)."""
    output_frame_ms: Literal[10, 20, 40] = 20
    """Playback frame: the output side sends frames of this length, paced by sample count."""
    max_turn_s: Annotated[float, Field(gt=0, le=600)] = 60.0
    """Longest stretch of speech transcribed (the rest of a longer one is not), and the most a
    realtime client's input buffer holds when it marks its turns itself."""
    echo_cancellation: bool = True
    """Cancel the assistant's own voice on the local microphone (WebRTC AEC3)."""
    noise_suppression: NoiseSuppression = "off"
    """Suppress stationary noise before the VAD, on every transport (WebRTC NS): `off`, or
    `low`, `moderate`, `high`, `very-high` (6, 12, 18, 21 dB). Personas may override it. Off by
    default: in `voice-agent bench noise` it did not lower the WER and it made babble start
    more false turns (docs/noise.md)."""
    noise_suppression_asr: bool = True
    """With suppression on, the ASR (and all after the VAD) hears the suppressed audio too;
    false: only the VAD does, the ASR hears the raw audio (its WER was as good or worse in
    most conditions, docs/noise.md)."""


class VadSettings(Section):
    """Voice activity: a cheap WebRTC gate, then Silero to confirm."""

    gate_aggressiveness: Annotated[int, Field(ge=0, le=3)] = 2
    gate_frame_ms: Literal[10, 20, 30] = 30
    confirm_threshold: Annotated[float, Field(ge=0, le=1)] = 0.5
    start_ms: Ms = 120
    """Speech must last this long before UserStartedSpeaking."""
    stop_ms: Ms = 160
    """Silence that counts as a pause (the end-of-turn decision starts here)."""


class TurnSettings(Section):
    """End of turn, preemptive replies and barge-in (personas may tighten the first three)."""

    endpoint_silence_ms: Ms = 500
    """Silence that ends a turn that sounds finished."""
    unfinished_silence_ms: Ms = 1500
    """Silence that ends a turn that sounds unfinished."""
    smart_turn: bool = True
    """Use the Smart Turn v3.2 model to tell finished turns from unfinished ones."""
    smart_turn_threshold: Annotated[float, Field(ge=0, le=1)] = 0.94
    """Smart Turn score at or above which a turn sounds finished (on the bundled voice, finished
    sentences scored 0.96-0.99 and hanging ones up to 0.93)."""
    preemptive_reply: bool = True
    """Start ASR final, LLM and TTS as soon as the user pauses; hold the audio until turn end."""
    min_interruption_ms: Ms = 300
    """Speech over the assistant that lasts this long may interrupt it: at once for a persona
    whose backchannels interrupt, otherwise once the ASR finds a word that is not a backchannel."""
    backchannel_max_ms: Ms = 700
    """Speech over the assistant shorter than this may be a backchannel ("mm-hmm"): only its
    final transcript can make it an interruption, for Whisper's partial of a short backchannel
    can be words ("in a manner."). Longer speech is confirmed by its partials as they come."""
    duck_db: Annotated[float, Field(ge=0, le=60)] = 24.0
    """How far the assistant's voice drops at the onset of the user's speech, until the speech
    is confirmed as an interruption (it stops) or not (it comes back up)."""


class ASRSettings(Section):
    engine: Literal["faster-whisper"] = "faster-whisper"
    model: str = "whisper-tiny-en"
    """A model id from models/catalog.yaml."""
    model_path: Path | None = None
    """Your own model directory instead of the catalog's."""
    compute_type: Literal["int8", "int8_float32", "float32", "float16"] = "int8"
    threads: Annotated[int, Field(ge=1, le=64)] = 2
    partial_interval_ms: Annotated[int, Field(ge=100, le=5000)] = 400
    language: str = "en"


class LLMSettings(Section):
    engine: Literal["llama-server", "llama-cpp", "openai", "transformers"] = "llama-server"
    """`llama-server`: llama.cpp's server in a child process, replies of every session decoded
    together, a slot (prompt cache) per session, restarted if it crashes (the default);
    `llama-cpp`: llama.cpp inside this process, one reply at a time (extra `llama-cpp`);
    `openai`: an OpenAI-compatible server at `base_url`; `transformers`: extra `torch`."""
    model: str = "qwen2.5-0.5b"
    """A model id from models/catalog.yaml, or the server's model name for the `openai` engine."""
    model_path: Path | None = None
    """Your own GGUF file (llama-cpp) or model directory (transformers)."""
    base_url: str | None = None
    """OpenAI-compatible server for the `openai` engine, e.g. http://127.0.0.1:8000/v1."""
    api_key_env: str = "OPENAI_API_KEY"
    """Environment variable holding the server's key (never written to config)."""
    context_tokens: Annotated[int, Field(ge=256, le=131_072)] = 2048
    max_tokens: Annotated[int, Field(ge=1, le=4096)] = 160
    threads: Annotated[int, Field(ge=1, le=64)] = 2
    slots: Annotated[int, Field(ge=1, le=256)] = 8
    """`llama-server`: sessions whose replies are decoded together, each keeping its prompt in
    its own slot (memory: `context_tokens` x slots of KV cache); more sessions share them."""
    temperature: Annotated[float, Field(ge=0, le=2)] = 0.6
    top_p: Annotated[float, Field(gt=0, le=1)] = 0.9
    repeat_penalty: Annotated[float, Field(ge=1, le=2)] = 1.15
    request_timeout_s: Annotated[float, Field(gt=0, le=600)] = 30.0


class TTSSettings(Section):
    """Text to speech; each persona's voice picks the engine (piper or kokoro)."""

    piper_model: str = "piper-joe"
    piper_model_path: Path | None = None
    """Your own Piper voice (.onnx, with its .onnx.json beside it) instead of the catalog's."""
    kokoro_model: str = "kokoro-82m"
    threads: Annotated[int, Field(ge=1, le=64)] = 2
    """CPU threads per synthesis (Piper's first clause: ~92 ms with 1, ~56 ms with 2, here)."""
    first_clause_max_chars: Annotated[int, Field(ge=8, le=400)] = 36
    """Speak the first clause at the first punctuation, or after this many characters (at a
    word boundary). Lower: first audio sooner (the default LLM writes ~130 characters a second);
    higher: fewer seams in the first sentence."""


class ExecutorSettings(Section):
    """The bounded pool where engines run, off the event loop."""

    workers: Annotated[int, Field(ge=1, le=64)] = 2
    max_pending: Annotated[int, Field(ge=1, le=10_000)] = 64
    """Calls waiting beyond this are refused with a 'busy' error instead of queueing."""
    call_timeout_s: Annotated[float, Field(gt=0, le=600)] = 20.0


class RealtimeBackboneSettings(Section):
    """A remote OpenAI-Realtime-compatible service as the backbone (`engines.backbone:
    realtime`): it hears the user's turns and speaks the replies; VAD, turn-taking, barge-in,
    the local ASR (for turn decisions) and the metrics stay ours."""

    url: str | None = None
    """Its WebSocket, e.g. wss://api.openai.com/v1/realtime or ws://127.0.0.1:8080/v1/realtime."""
    model: str | None = None
    """Sent as `?model=`."""
    api_key_env: str = "OPENAI_API_KEY"
    """Environment variable holding its key (never written to config)."""
    voice: str | None = None
    """One of the service's voices (a persona id on a voice-agent server); unset: its default."""
    timeout_s: Annotated[float, Field(gt=0, le=120)] = 10.0
    """Connecting, and waiting for each event of a reply: past this the turn ends in an error."""


class EngineSettings(Section):
    backbone: Literal["cascade", "realtime"] = "cascade"
    """`cascade`: our ASR -> LLM -> TTS; `realtime`: the remote service of `realtime`."""
    asr: ASRSettings = ASRSettings()
    llm: LLMSettings = LLMSettings()
    tts: TTSSettings = TTSSettings()
    realtime: RealtimeBackboneSettings = RealtimeBackboneSettings()
    executor: ExecutorSettings = ExecutorSettings()
    models_cache: Path | None = None
    """Where joined model files are kept (default: $XDG_CACHE_HOME/voice-agent)."""


class ServerSettings(Section):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8080
    token: str | None = None
    """Required when host is not a loopback address (query `?token=` or `Authorization: Bearer`)."""
    allowed_origins: list[str] = []
    """Extra browser origins allowed on WebSockets (the server's own origin always is)."""
    max_sessions: Annotated[int, Field(ge=1, le=10_000)] | Literal["auto"] = "auto"
    """Sessions at once (the next caller gets `busy`); `auto`: what `voice-agent bench
    capacity` measured on this machine, else one per two cores (voice_agent.admission)."""
    max_message_bytes: Annotated[int, Field(ge=1024, le=16 * 1024 * 1024)] = 256 * 1024
    shutdown_grace_s: Annotated[float, Field(ge=0, le=600)] = 10.0
    max_session_s: Annotated[float, Field(ge=10, le=7 * 86400)] | None = 3600.0
    """The longest a session lasts (None: no limit); a persona may set less (`time_limit`).
    At the limit the persona says its `time_limit.goodbye` and the session ends
    (`max_duration`)."""
    webrtc_jitter_frames: Annotated[int, Field(ge=1, le=16)] = 1
    """20 ms audio frames the WebRTC receiver holds before decoding: every frame is 20 ms more
    latency on every turn and barge-in. 1 suits loopback and LANs; raise it on lossy networks
    (aiortc's own default is 4)."""


class MetricsSettings(Section):
    turns_kept: Annotated[int, Field(ge=1, le=100_000)] = 500
    """Per-turn timelines kept in memory (a ring)."""
    prometheus: bool = True
    jsonl_path: Path | None = None
    """Append every turn's timeline to this file as JSON lines."""


class RecordSettings(Section):
    """Session records (docs/records.md): off unless you turn them on; the page and every
    client's `session` message say when a session is recorded."""

    enabled: bool = False
    """Write each session's transcript (JSON lines: turns, replies generated and heard, when)."""
    audio: bool = False
    """Also record its audio: a stereo WAV, the caller left and the assistant right, aligned."""
    dir: Path | None = None
    """Where records go (default: $XDG_DATA_HOME/voice-agent/sessions)."""
    retention_days: Annotated[float, Field(ge=0, le=36_500)] = 30
    """Records older than this are deleted (at server start, then daily); 0 keeps them all."""


class PersonaSettings(Section):
    default: str = "concierge"
    dirs: list[Path] = [Path("~/.config/voice-agent/personas")]
    """Your persona folders, read on top of the built-in ones (a same id replaces a built-in)."""


class Settings(Section):
    """Every setting of voice-agent."""

    audio: AudioSettings = AudioSettings()
    vad: VadSettings = VadSettings()
    turns: TurnSettings = TurnSettings()
    engines: EngineSettings = EngineSettings()
    server: ServerSettings = ServerSettings()
    metrics: MetricsSettings = MetricsSettings()
    records: RecordSettings = RecordSettings()
    personas: PersonaSettings = PersonaSettings()
    log_level: Literal["debug", "info", "warning", "error"] = "info"


def _set_path(data: dict[str, Any], keys: Sequence[str], value: Any) -> None:
    for k in keys[:-1]:
        nxt = data.get(k)
        if not isinstance(nxt, dict):
            nxt = data[k] = {}
        data = nxt
    data[keys[-1]] = value


def _parse_value(text: str) -> Any:
    """A value from the environment or --set, read as YAML: `8080`, `true`, `[a, b]`. Text that
    YAML cannot read, or reads as nothing although it is not `null` (`#secret`), stays text."""
    try:
        value = yaml.safe_load(text) if text.strip() else text
    except (yaml.YAMLError, ValueError):  # an impossible date, say: pydantic judges the text
        return text
    if value is None and text.strip() not in ("null", "Null", "NULL", "~"):
        return text
    return value


def _overrides_from_env(env: Mapping[str, str]) -> dict[tuple[str, ...], tuple[str, Any]]:
    out: dict[tuple[str, ...], tuple[str, Any]] = {}
    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX) or name == CONFIG_ENV:
            continue
        keys = tuple(k.lower() for k in name[len(ENV_PREFIX) :].split("__"))
        out[keys] = (f"${name}", _parse_value(raw))
    return out


def parse_assignment(text: str) -> tuple[tuple[str, ...], Any]:
    """`server.port=9000` -> (("server", "port"), 9000)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise FileError([Problem("--set", None, text, "expected KEY=VALUE, e.g. server.port=9000")])
    return tuple(key.strip().split(".")), _parse_value(value)


def find_config_file(explicit: Path | None, env: Mapping[str, str]) -> Path | None:
    """--config, else $VOICE_AGENT_CONFIG, else ./config.yaml if there is one."""
    if explicit is not None:
        return explicit
    if env.get(CONFIG_ENV):
        return Path(env[CONFIG_ENV])
    local = Path(DEFAULT_CONFIG_FILE)
    return local if local.is_file() else None


def load_settings(
    config_file: Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[tuple[str, ...], Any] | None = None,
) -> Settings:
    """Build Settings from the layers; raise FileError listing every problem with its source."""
    env = os.environ if env is None else env
    path = find_config_file(config_file, env)
    doc = load_yaml(path) if path is not None else load_yaml_text("", "<defaults>")
    if doc.data is None:
        doc.data = {}
    if not isinstance(doc.data, dict):
        raise FileError([Problem(doc.file, 1, "", "the config must be a mapping of sections")])
    data: dict[str, Any] = doc.data
    sources: dict[tuple[str, ...], str] = {}
    layered = [(k, src, v) for k, (src, v) in _overrides_from_env(env).items()]
    layered += [(k, "--set " + ".".join(k), v) for k, v in (overrides or {}).items()]
    for keys, source, value in layered:
        _set_path(data, keys, value)
        sources[keys] = source
    try:
        return Settings.model_validate(data)
    except ValidationError as err:
        raise FileError(_locate(err, doc, sources)) from None


def _locate(
    err: ValidationError, doc: YamlDoc, sources: Mapping[tuple[str, ...], str]
) -> list[Problem]:
    problems = []
    for p, e in zip(doc.problems_from(err), err.errors(), strict=True):
        loc = tuple(str(x) for x in e["loc"])
        for n in range(len(loc), 0, -1):
            if loc[:n] in sources:
                p = Problem(sources[loc[:n]], None, dotted(e["loc"]), p.reason)
                break
        problems.append(p)
    return problems


def settings_as_yaml(settings: Settings) -> str:
    """The effective settings, as a config file would write them."""
    return yaml.safe_dump(settings.model_dump(mode="json"), sort_keys=False)
