"""`voice-agent transcribe FILE` (ASR mode) and `voice-agent speak TEXT` (TTS mode)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from voice_agent.cli.exits import EXIT_OK
from voice_agent.config import Settings
from voice_agent.modelfiles import ModelStore
from voice_agent.persona import PersonaStore


def run_transcribe(args: argparse.Namespace, settings: Settings) -> int:
    """`voice-agent transcribe FILE`: the text on stdout (partials on stderr with --partials)."""
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


def run_speak(args: argparse.Namespace, settings: Settings) -> int:
    """`voice-agent speak TEXT`: a WAV file (-o), WAV on a piped stdout, or the speaker."""
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


def _can_play() -> bool:
    try:
        import sounddevice  # noqa: F401

        return True
    except (ImportError, OSError):
        return False
