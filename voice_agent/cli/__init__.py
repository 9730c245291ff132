"""The `voice-agent` command.

    voice-agent serve [--host H] [--port P] [--persona ID] [--config FILE] [--dashboard]
    voice-agent talk | transcribe FILE | speak TEXT -o FILE.wav
    voice-agent personas list | show ID | validate PATH...
    voice-agent models list | verify
    voice-agent sessions list | show ID | export ID [--out PATH]
    voice-agent doctor
    voice-agent config show
    voice-agent dashboard [--url ws://HOST:PORT]
    voice-agent bench [models | turns | conversation | soak]

Each command family has its module here, named for it (`bench.py` runs `voice-agent bench`,
`serve.py` runs `serve`, ...); `parser.py` holds every flag and help text, `settings.py` how
flags, environment and config file make the settings.

Results go to stdout, logs and errors to stderr. Exit codes: 0 ok, 1 a problem with the input
(a broken persona or config, say), 2 a usage error.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from voice_agent.cli.bench import run_bench
from voice_agent.cli.exits import EXIT_INPUT, EXIT_OK, EXIT_USAGE
from voice_agent.cli.llm_server import run_llm_server
from voice_agent.cli.models import run_models
from voice_agent.cli.modes import run_speak, run_transcribe
from voice_agent.cli.parser import parser
from voice_agent.cli.personas import run_personas
from voice_agent.cli.serve import run_serve
from voice_agent.cli.sessions import run_sessions
from voice_agent.cli.settings import settings_of
from voice_agent.config import settings_as_yaml
from voice_agent.modelfiles import ModelError
from voice_agent.yamlfile import FileError

__all__ = ["EXIT_INPUT", "EXIT_OK", "EXIT_USAGE", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run `voice-agent` with `argv` (default: the process's arguments); the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(argv)
    args.argv = argv
    try:
        settings = settings_of(args)
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
            return run_personas(args, settings)
        except FileError as exc:
            print(exc, file=sys.stderr)
            return EXIT_INPUT
    if args.command == "models":
        return run_models(args, settings)
    if args.command == "sessions":
        return run_sessions(args, settings)
    if args.command in ("transcribe", "speak", "bench", "serve"):
        run = {
            "transcribe": run_transcribe,
            "speak": run_speak,
            "bench": run_bench,
            "serve": run_serve,
        }[args.command]
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
        return run_llm_server(args, settings)
    if args.command == "doctor":
        from voice_agent.doctor import doctor

        return doctor(settings, sys.stdout)
    if args.command == "talk":
        from voice_agent.talk import talk

        return talk(settings, args.persona)
    from voice_agent.ui.dashboard import run_dashboard

    return run_dashboard(args.url, token=settings.server.token)
