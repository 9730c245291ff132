"""Settings for a command: config file, environment and the flags that override them."""

from __future__ import annotations

import argparse
from typing import Any

from voice_agent.config import Settings, load_settings, parse_assignment


def settings_of(args: argparse.Namespace) -> Settings:
    """The settings in effect: defaults < config file < environment < --set < the command's own
    flags (--host, --port, --persona, --log-level)."""
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


def settings_argv(args: argparse.Namespace) -> list[str]:
    """The settings flags of this command, for a server it starts."""
    argv = ["--config", str(args.config)] if args.config else []
    for assignment in args.assignments:
        argv += ["--set", assignment]
    return argv
