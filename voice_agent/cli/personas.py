"""`voice-agent personas list | show ID | validate PATH...`."""

from __future__ import annotations

import argparse
import sys

import yaml

from voice_agent.cli.exits import EXIT_INPUT, EXIT_OK
from voice_agent.config import Settings
from voice_agent.persona import PersonaStore, load_persona
from voice_agent.yamlfile import FileError


def run_personas(args: argparse.Namespace, settings: Settings) -> int:
    """`voice-agent personas list | show ID | validate PATH...`; 1 for a persona with problems,
    or no such persona."""
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
