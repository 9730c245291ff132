"""`voice-agent llm-server`: llama.cpp's server alone, for session servers elsewhere."""

from __future__ import annotations

import argparse
import sys

from voice_agent.cli.exits import EXIT_INPUT, EXIT_USAGE
from voice_agent.config import Settings
from voice_agent.modelfiles import ModelError, ModelStore


def run_llm_server(args: argparse.Namespace, settings: Settings) -> int:
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
