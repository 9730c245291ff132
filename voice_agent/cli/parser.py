"""The `voice-agent` command line: every command, its flags and their help texts."""

from __future__ import annotations

import argparse
from pathlib import Path

from voice_agent import __version__


def parser() -> argparse.ArgumentParser:
    """The parser of `voice-agent`'s arguments (see `voice_agent.cli`)."""
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

    se = sub.add_parser(
        "sessions", parents=[common], help="session records on this machine (records.dir)"
    )
    se_sub = se.add_subparsers(dest="action", metavar="ACTION", required=True)
    se_sub.add_parser("list", help="every record: id, start, duration, turns, persona, audio")
    se_show = se_sub.add_parser("show", help="one record's transcript, readable")
    se_show.add_argument("id")
    se_export = se_sub.add_parser("export", help="one record's transcript.jsonl and audio.wav")
    se_export.add_argument("id")
    se_export.add_argument(
        "--out", type=Path, help="a .tar.gz/.tgz archive, else a folder (default: ./ID.tar.gz)"
    )
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
        choices=["models", "turns", "conversation", "capacity", "soak", "noise"],
        help="default: models and conversation; capacity: conversation at 1, 2, 4, 8 sessions; "
        "noise: listening in noise, suppression off and on",
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
    noisy = b.add_argument_group("noise")
    noisy.add_argument(
        "--quick",
        action="store_true",
        help="fewer sentences, voices and conditions (10 dB only): about a minute",
    )
    noisy.add_argument(
        "--suppression",
        metavar="LEVELS",
        help="levels to compare, e.g. off,low,high (default: off and audio.noise_suppression)",
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
