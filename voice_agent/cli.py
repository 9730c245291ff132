"""The `voice-agent` command.

    voice-agent serve [--host H] [--port P] [--persona ID] [--config FILE] [--dashboard]
    voice-agent talk | transcribe FILE | speak TEXT -o FILE.wav
    voice-agent personas list | show ID | validate PATH...
    voice-agent models list | verify
    voice-agent doctor
    voice-agent config show
    voice-agent dashboard [--url ws://HOST:PORT]
    voice-agent bench [models | turns | conversation | soak]

Results go to stdout, logs and errors to stderr. Exit codes: 0 ok, 1 a problem with the input
(a broken persona or config, say), 2 a usage error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from voice_agent import __version__
from voice_agent.config import Settings, load_settings, parse_assignment, settings_as_yaml
from voice_agent.modelfiles import ModelError, ModelStore, default_cache_dir, installed
from voice_agent.persona import PersonaStore, load_persona
from voice_agent.yamlfile import FileError

EXIT_OK, EXIT_INPUT, EXIT_USAGE = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="voice-agent",
        description="A realtime, full-duplex voice assistant.",
        epilog="Settings: defaults < config.yaml (or --config / $VOICE_AGENT_CONFIG) < "
        "$VOICE_AGENT_SECTION__KEY < --set section.key=value.",
    )
    p.add_argument("--version", action="version", version=f"voice-agent {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config", type=Path, help="config file (default: ./config.yaml if present)"
    )
    common.add_argument(
        "--set",
        dest="assignments",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one setting, e.g. --set engines.llm.model=smollm2-135m",
    )
    common.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    s = sub.add_parser(
        "serve", parents=[common], help="run the server: browser page, WebRTC, /pcm, /metrics"
    )
    s.add_argument("--host")
    s.add_argument("--port", type=int)
    s.add_argument("--persona", help="default persona id")
    s.add_argument(
        "--dashboard",
        action="store_true",
        help="run the server in the background (log in ~/.cache/voice-agent/serve.log) and "
        "show the latency dashboard; quitting it stops the server",
    )
    tk = sub.add_parser(
        "talk", parents=[common], help="talk through the local microphone and speaker"
    )
    tk.add_argument("--persona", help="who to talk with (default: personas.default)")
    t = sub.add_parser("transcribe", parents=[common], help="speech to text (ASR mode)")
    t.add_argument(
        "file", help="wav/flac/ogg/mp3, or - for stdin (an audio file, or raw 16-bit mono PCM)"
    )
    t.add_argument("--rate", type=int, default=16000, help="sample rate of raw PCM on stdin")
    t.add_argument("--partials", action="store_true", help="show partial transcripts live (stderr)")
    t.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    sp = sub.add_parser("speak", parents=[common], help="text to speech (TTS mode)")
    sp.add_argument("text", help="what to say, or - to read it from stdin")
    sp.add_argument("-o", "--output", type=Path, help="WAV file to write (default: play it)")
    sp.add_argument("--persona", help="speak with this persona's voice")
    sp.add_argument("--voice", help="joe | kokoro:jf_alpha | kokoro:jm_kumo=0.7,jf_alpha=0.3")
    sp.add_argument("--speed", type=float, help="speaking rate, 0.5 to 2.0")

    pe = sub.add_parser("personas", parents=[common], help="list, show and validate personas")
    pe_sub = pe.add_subparsers(dest="action", metavar="ACTION", required=True)
    pe_sub.add_parser("list", help="every persona in effect, and where it comes from")
    show = pe_sub.add_parser("show", help="one persona, as loaded")
    show.add_argument("id")
    val = pe_sub.add_parser("validate", help="check persona files: file:line: field: reason")
    val.add_argument("paths", nargs="+", type=Path)

    m = sub.add_parser("models", parents=[common], help="the embedded models")
    m.add_argument("action", choices=["list", "verify"])
    ls = sub.add_parser(
        "llm-server",
        parents=[common],
        help="llama.cpp's server alone (engines.llm settings), for session servers elsewhere",
    )
    ls.add_argument("--host", default="127.0.0.1")
    ls.add_argument("--port", type=int, default=8090)
    ls.add_argument(
        "--slots", type=int, help="replies decoded together (default: engines.llm.slots)"
    )
    sub.add_parser(
        "doctor",
        parents=[common],
        help="does every engine run on this machine? (CPU, llama.cpp build, models, a test run)",
    )
    c = sub.add_parser("config", parents=[common], help="the effective settings")
    c.add_argument("action", choices=["show"])
    d = sub.add_parser("dashboard", parents=[common], help="latency dashboard for a running server")
    d.add_argument(
        "--url", default="ws://127.0.0.1:8080", help="the server (its token: server.token)"
    )
    b = sub.add_parser("bench", parents=[common], help="benchmarks that print figures")
    b.add_argument(
        "suite",
        nargs="?",
        choices=["models", "turns", "conversation", "capacity", "soak"],
        help="default: models and conversation; capacity: conversation at 1, 2, 4, 8 sessions",
    )
    b.add_argument(
        "--repeat",
        type=int,
        help="runs per figure (default: 20 for models, 10 for turns); turns per simulated user "
        "for conversation (default: 10)",
    )
    b.add_argument(
        "--json", type=Path, help="where to write the figures (default: bench-SUITE.json)"
    )
    conv = b.add_argument_group("conversation")
    conv.add_argument("--url", help="a running server (ws://HOST:PORT); default: start one")
    conv.add_argument(
        "--sessions",
        help="simulated users at once (default: 1; soak: 4); capacity: a list (default: 1,2,4,8)",
    )
    conv.add_argument(
        "--pace",
        choices=["back-to-back", "human"],
        help="between a reply's end and the next turn: none (the default) or 1-3 s; "
        "capacity: both unless given",
    )
    conv.add_argument(
        "--transport",
        choices=["webrtc", "pcm", "realtime"],
        help="default: webrtc; soak: every one in turn",
    )
    conv.add_argument("--persona", help="the simulated users' persona (default: the server's)")
    conv.add_argument(
        "--plot", type=Path, help="PNG of the latencies (default: bench-conversation.png)"
    )
    soak = b.add_argument_group("soak (also --url, --sessions, --transport, --persona)")
    soak.add_argument(
        "--duration",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="how long to open and close sessions (default: 60)",
    )
    return p


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[tuple[str, ...], Any] = {}
    for text in args.assignments:
        keys, value = parse_assignment(text)
        overrides[keys] = value
    for flag, keys in (
        ("host", ("server", "host")),
        ("port", ("server", "port")),
        ("persona", ("personas", "default")),
        ("log_level", ("log_level",)),
    ):
        if getattr(args, flag, None) is not None:
            overrides[keys] = getattr(args, flag)
    return load_settings(args.config, overrides=overrides)


def _personas(args: argparse.Namespace, settings: Settings) -> int:
    if args.action == "validate":
        bad = 0
        for path in args.paths:
            try:
                load_persona(path)
                print(f"{path}: ok")
            except FileError as exc:
                bad += 1
                for problem in exc.problems:
                    print(problem)
        return EXIT_INPUT if bad else EXIT_OK
    store = PersonaStore(settings.personas.dirs)
    if args.action == "list":
        for pid, path, persona, error in store.status():
            mark = "*" if pid == settings.personas.default else " "
            name = f"{persona.name}: {persona.description}" if persona else "(not loadable)"
            state = f"  [problems: {len(error.problems)}]" if error else ""
            print(f"{mark} {pid:<14} {name}{state}\n  {'':<14} {path}")
        return EXIT_OK
    try:
        persona = store.get(args.id)
    except KeyError as exc:
        print(f"voice-agent: {exc.args[0]}", file=sys.stderr)
        return EXIT_INPUT
    print(
        yaml.safe_dump(persona.model_dump(mode="json", exclude_none=True), sort_keys=False), end=""
    )
    return EXIT_OK


def _transcribe(args: argparse.Namespace, settings: Settings) -> int:
    from voice_agent.audio.files import read_audio, read_stdin
    from voice_agent.engines import load_asr
    from voice_agent.modes import transcribe

    rate = settings.audio.sample_rate
    pcm = (
        read_stdin(sys.stdin.buffer, args.rate, rate)
        if args.file == "-"
        else read_audio(Path(args.file), rate)
    )
    asr = load_asr(settings.engines.asr, ModelStore(cache_dir=settings.engines.models_cache))
    live = sys.stderr.isatty()

    def show(text: str) -> None:
        print(
            f"\r\033[K… {text}" if live else f"partial: {text}",
            end="" if live else "\n",
            file=sys.stderr,
            flush=True,
        )

    interval = settings.engines.asr.partial_interval_ms if args.partials else 0
    result = transcribe(
        asr, pcm, partial_interval_ms=interval, on_partial=show if args.partials else None
    )
    if args.partials and live:
        print("\r\033[K", end="", file=sys.stderr)
    print(json.dumps(result.as_json()) if args.json else result.text)
    return EXIT_OK


def _speak(args: argparse.Namespace, settings: Settings) -> int:
    from voice_agent.audio.files import wav_bytes, write_wav
    from voice_agent.engines import load_tts
    from voice_agent.modes import parse_voice, speak

    text = sys.stdin.read() if args.text == "-" else args.text
    persona = PersonaStore(settings.personas.dirs).get(args.persona or settings.personas.default)
    speed = args.speed if args.speed is not None else persona.voice.speed
    voice = (
        parse_voice(args.voice, speed)
        if args.voice
        else persona.voice.model_copy(update={"speed": speed})
    )
    if args.output is None and sys.stdout.isatty() and not _can_play():
        raise ValueError(
            "no -o FILE.wav given and no audio output: pass -o, or install voice-agent[local]"
        )
    tts = load_tts(
        voice.engine, settings.engines.tts, ModelStore(cache_dir=settings.engines.models_cache)
    )
    pcm = speak(tts, text, voice)
    seconds = len(pcm) / tts.sample_rate
    if args.output is not None:
        write_wav(args.output, pcm, tts.sample_rate)
        print(f"{args.output}: {seconds:.2f} s of speech at {tts.sample_rate} Hz", file=sys.stderr)
    elif not sys.stdout.isatty():
        sys.stdout.buffer.write(wav_bytes(pcm, tts.sample_rate))
    else:
        import sounddevice  # type: ignore[import-not-found, unused-ignore]

        sounddevice.play(pcm, tts.sample_rate, blocking=True)
    return EXIT_OK


def _bench(args: argparse.Namespace, settings: Settings) -> int:
    from voice_agent.admission import remember_knee
    from voice_agent.bench import capacity, conversation, figures, models, turntaking

    if args.repeat is not None and args.repeat < 1:
        raise ValueError("--repeat must be at least 1")
    counts = _counts(args.sessions)
    if args.suite != "capacity" and len(counts) > 1:
        raise ValueError("--sessions takes a list only for `bench capacity`")
    args.sessions = counts[0] if args.sessions is not None else None

    def progress(what: str) -> None:
        print(f"bench: {what}…", file=sys.stderr)

    if args.suite == "soak":
        return _soak(args, settings, progress)

    everything: list[figures.Figure] = []
    for suite in [args.suite] if args.suite else ["models", "conversation"]:
        details: dict[str, Any] = {}
        plots: list[tuple[Callable[[list[figures.Figure], str, Path], None], str, str]] = []
        if suite == "models":
            results = models.run(settings, args.repeat or 20, progress)
        elif suite == "turns":
            results = asyncio.run(turntaking.run(settings, args.repeat or 10, progress))
        elif suite == "capacity":
            results, details = asyncio.run(
                capacity.run(
                    settings,
                    url=args.url,
                    counts=counts if args.sessions is not None else capacity.COUNTS,
                    turns=args.repeat or 5,
                    transport=args.transport or "webrtc",
                    argv=_settings_argv(args),
                    progress=progress,
                    persona=args.persona,
                    paces=[args.pace] if args.pace else ["human", "back-to-back"],
                )
            )
            plots = [(capacity.plot, "voice-agent bench capacity", "bench-capacity.png")]
            knee = details["knee_sessions"].get("human")
            print(f"knee (p95 <= {capacity.KNEE_P95_MS:g} ms at a human pace): "
                  f"{knee or 'none'}", file=sys.stderr)  # fmt: skip
            if args.url is None and "human" in details["paces"]:  # its own server: these settings
                where = remember_knee(settings, knee or 0)
                print(f"server.max_sessions auto now admits {max(1, knee or 0)} sessions on this "
                      f"machine (remembered in {where})", file=sys.stderr)  # fmt: skip
        else:
            results, details = asyncio.run(
                conversation.run(
                    settings,
                    url=args.url,
                    sessions=args.sessions or 1,
                    turns=args.repeat or 10,
                    transport=args.transport or "webrtc",
                    argv=_settings_argv(args),
                    progress=progress,
                    persona=args.persona,
                    pace=args.pace or "back-to-back",
                )
            )
            title = (
                f"voice-agent bench conversation: {details['sessions']} x {details['transport']}"
            )
            plots = [(conversation.plot, title, "bench-conversation.png")]
        everything += results
        if args.suite:
            print(figures.table(results))
        path = Path(f"bench-{suite}.json")
        if args.json is not None:  # with every suite, each gets its own file next to it
            path = args.json if args.suite else args.json.with_stem(f"{args.json.stem}-{suite}")
        body = [f.as_json() for f in results]
        path.write_text(json.dumps({"figures": body, **details} if details else body, indent=2))
        print(f"figures written to {path}", file=sys.stderr)
        for draw, title, default in plots:
            png = args.plot or Path(default)
            try:
                draw(results, title, png)
                print(f"plot written to {png}", file=sys.stderr)
            except figures.NoPlot as exc:
                print(f"no plot: {exc}", file=sys.stderr)
    if not args.suite:
        print(figures.table(everything))
    return EXIT_OK


def _counts(text: str | None) -> list[int]:
    """`--sessions`: one count, or a comma-separated list of them."""
    if text is None:
        return [1]
    try:
        counts = [int(part) for part in text.split(",")]
    except ValueError:
        raise ValueError(
            f"--sessions takes a number or a list like 1,2,4,8, not {text!r}"
        ) from None
    if min(counts) < 1:
        raise ValueError("--sessions must be at least 1")
    return counts


def _soak(args: argparse.Namespace, settings: Settings, progress: Callable[[str], None]) -> int:
    """`bench soak`: the table on stdout, everything (with the time series) as JSON; exit
    status 1 when a count did not come back to its baseline or a session failed."""
    from voice_agent.bench import soak

    if not args.duration > 0:
        raise ValueError("--duration must be more than 0 seconds")
    try:
        report = asyncio.run(
            soak.run(
                settings,
                url=args.url,
                sessions=args.sessions or soak.DEFAULT_WORKERS,
                duration_s=args.duration,
                argv=_settings_argv(args),
                progress=progress,
                transports=[args.transport] if args.transport else soak.TRANSPORTS,
                persona=args.persona,
            )
        )
    except (RuntimeError, OSError) as exc:  # no server, a failed warm-up, no /metrics
        raise ValueError(str(exc)) from None
    print(report.table())
    path = args.json or Path("bench-soak.json")
    path.write_text(json.dumps(report.as_json(), indent=2))
    print(f"figures written to {path}", file=sys.stderr)
    return EXIT_OK if report.ok else EXIT_INPUT


def _serve_with_dashboard(argv: list[str], settings: Settings) -> int:
    """The server as a child process, the dashboard in front of it (it waits while the models
    load); when the dashboard quits, the server stops."""
    import subprocess

    from voice_agent.ui.dashboard import run_dashboard

    log = default_cache_dir().parent / "serve.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "voice_agent", *[a for a in argv if a != "--dashboard"]]
    with log.open("w") as out:
        child = subprocess.Popen(cmd, stdout=out, stderr=out, stdin=subprocess.DEVNULL)
    print(f"voice-agent serve: server log in {log}", file=sys.stderr)
    cfg = settings.server
    host = "127.0.0.1" if cfg.host in ("0.0.0.0", "::", "") else cfg.host
    try:
        code = run_dashboard(f"ws://{host}:{cfg.port}", token=cfg.token)
    finally:
        child.terminate()
        try:
            child.wait(cfg.shutdown_grace_s + 5)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    if child.returncode not in (0, -15):
        print(f"voice-agent serve: {_server_death(child.returncode, log)}", file=sys.stderr)
        return child.returncode if child.returncode > 0 else EXIT_INPUT
    return code


def _server_death(returncode: int, log: Path) -> str:
    """Why the server child ended, in one line: its own last word, or the signal that killed
    it (a native runtime's crash leaves no Python error behind)."""
    import signal

    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return (f"the server died ({name}); see {log}, and run `voice-agent doctor` to see "
                "which engine crashes on this machine")  # fmt: skip
    lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    last = lines[-1].removeprefix("voice-agent serve: ") if lines else "no output"
    return f"the server exited with {returncode}: {last} (log: {log})"


def _settings_argv(args: argparse.Namespace) -> list[str]:
    """The settings flags of this command, for a server it starts."""
    argv = ["--config", str(args.config)] if args.config else []
    for assignment in args.assignments:
        argv += ["--set", assignment]
    return argv


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    from voice_agent.enginecheck import EngineCheckFailed
    from voice_agent.server import ServerError, check_binding, run_server

    try:
        if args.dashboard:
            check_binding(settings)
            return _serve_with_dashboard(args.argv, settings)
        asyncio.run(run_server(settings))
    except EngineCheckFailed as exc:
        print(f"voice-agent serve: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except ServerError as exc:
        print(f"voice-agent serve: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # the port is taken, say
        print(f"voice-agent serve: cannot listen on {settings.server.host}:"
              f"{settings.server.port}: {exc.strerror or exc}", file=sys.stderr)  # fmt: skip
        return EXIT_INPUT
    return EXIT_OK


def _llm_server(args: argparse.Namespace, settings: Settings) -> int:
    """`voice-agent llm-server`: a key is required off loopback, as for `serve`."""
    import os

    from voice_agent.backbone.llama_server import KEY_ENV, ServerConfig, standalone
    from voice_agent.transports.base import is_loopback

    s = settings.engines.llm
    key = os.environ.get(KEY_ENV) or None
    if key is None and not is_loopback(args.host):
        why = f"set a key in ${KEY_ENV} (clients: engines.llm.api_key_env={KEY_ENV})"
        print(f"voice-agent llm-server: {args.host} is not a loopback address: {why}",
              file=sys.stderr)  # fmt: skip
        return EXIT_USAGE
    try:
        model = s.model_path or ModelStore(cache_dir=settings.engines.models_cache).path(s.model)
    except (KeyError, ModelError) as exc:
        print(f"voice-agent llm-server: {exc}", file=sys.stderr)
        return EXIT_INPUT
    slots = args.slots or s.slots
    config = ServerConfig(str(model), slots, s.context_tokens, s.threads)
    return standalone(config, args.host, args.port, key)


def _can_play() -> bool:
    try:
        import sounddevice  # noqa: F401

        return True
    except (ImportError, OSError):
        return False


def _models(args: argparse.Namespace, settings: Settings) -> int:
    store = ModelStore(cache_dir=settings.engines.models_cache)
    in_use = {
        settings.engines.asr.model,
        settings.engines.llm.model,
        settings.engines.tts.piper_model,
    }
    if args.action == "list":
        print(f"  {'id':<16} {'role':<5} {'engine':<15} {'MB':>5}  {'package':<34} licence")
        for m in store.catalog.models:
            size = m.joined.size if m.joined else sum(f.size for f in m.files)
            mark = "*" if m.id in in_use else " "
            where = f"{m.package}=={m.version}" + (
                "" if installed(m) else f" (not installed: [{m.extra}])"
            )
            print(
                f"{mark} {m.id:<16} {m.role:<5} {m.engine:<15} {size / 1e6:>5.0f}  "
                f"{where:<34} {m.licence}"
            )
        print("(* in use by the current settings)")
        return EXIT_OK
    bad = 0
    for m in store.catalog.models:
        check = store.verify(m.id)
        if check.ok:
            print(f"ok       {m.id:<16} {check.detail}")
        elif not check.installed:
            print(f"absent   {m.id:<16} {check.detail}")
            bad += m.id in in_use
        else:
            print(f"FAILED   {m.id:<16} {check.detail}")
            bad += 1
    return EXIT_INPUT if bad else EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    args.argv = argv
    try:
        settings = _settings(args)
    except FileError as exc:
        print(f"voice-agent: invalid settings:\n{exc}", file=sys.stderr)
        return EXIT_INPUT
    logging.basicConfig(
        level=settings.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if settings.log_level != "debug":  # a line per ICE check and per connection: debug only
        for chatty in ("aioice", "aiortc", "websockets", "httpx"):
            logging.getLogger(chatty).setLevel(logging.WARNING)
    if args.command == "personas":
        try:
            return _personas(args, settings)
        except FileError as exc:
            print(exc, file=sys.stderr)
            return EXIT_INPUT
    if args.command == "models":
        return _models(args, settings)
    if args.command in ("transcribe", "speak", "bench", "serve"):
        run = {"transcribe": _transcribe, "speak": _speak, "bench": _bench, "serve": _serve}[
            args.command
        ]
        try:
            return run(args, settings)
        except (ValueError, KeyError, FileError, ModelError) as exc:
            message = exc.args[0] if isinstance(exc, KeyError) else str(exc)
            print(f"voice-agent {args.command}: {message}", file=sys.stderr)
            return EXIT_INPUT
    if args.command == "config":
        print(settings_as_yaml(settings), end="")
        return EXIT_OK
    if args.command == "llm-server":
        return _llm_server(args, settings)
    if args.command == "doctor":
        from voice_agent.doctor import doctor

        return doctor(settings, sys.stdout)
    if args.command == "talk":
        from voice_agent.talk import talk

        return talk(settings, args.persona)
    from voice_agent.ui.dashboard import run_dashboard

    return run_dashboard(args.url, token=settings.server.token)


if __name__ == "__main__":
    sys.exit(main())
