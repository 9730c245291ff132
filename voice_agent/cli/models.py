"""`voice-agent models list | verify`: the embedded models, and whether their files are sound."""

from __future__ import annotations

import argparse

from voice_agent.cli.exits import EXIT_INPUT, EXIT_OK
from voice_agent.config import Settings
from voice_agent.modelfiles import ModelStore, installed


def run_models(args: argparse.Namespace, settings: Settings) -> int:
    """`voice-agent models list | verify`; 1 when a model in use is absent or any is damaged."""
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
