"""`voice-agent talk`: a conversation through the local microphone and speaker.

It looks for the audio devices before it loads any model (so a machine without any says so at
once), then runs one session over `LocalTransport`, with echo cancellation unless turned off,
until Ctrl-C ends it cleanly, printing the conversation as it goes.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Callable, Iterator
from typing import Any, TextIO

from voice_agent.audio.echo import EchoCanceller
from voice_agent.backbone.realtime_client import RemoteRealtimeError
from voice_agent.config import Settings
from voice_agent.enginecheck import EngineCheckFailed, ensure_engines_run
from voice_agent.engines import Engines
from voice_agent.eventbus import Subscription
from voice_agent.events import ClientMessage, Event
from voice_agent.modelfiles import ModelError
from voice_agent.persona import Persona, PersonaStore
from voice_agent.session import Session
from voice_agent.tasks import TaskOwner
from voice_agent.transports.local import (
    DeviceError,
    LocalTransport,
    SpeakerEchoCancelStage,
    find_devices,
    import_sounddevice,
)
from voice_agent.yamlfile import FileError


class TranscriptPrinter:
    """The conversation as text: the user's words (on a terminal, partials overwrite one line)
    and each reply once it has been played, cut where the user interrupted it. It reads what a
    client of the server is sent (the session's `ClientMessage` events)."""

    def __init__(self, out: TextIO, err: TextIO, *, live: bool) -> None:
        self.out, self.err, self.live = out, err, live
        self.fatal: str | None = None
        self._partial = False
        self._interrupted = False

    async def follow(self, events: Subscription[Event]) -> None:
        async for event in events:
            if isinstance(event, ClientMessage):
                self.show(event.message)

    def show(self, m: dict[str, Any]) -> None:
        """Print one client message."""
        kind, text = m["type"], str(m.get("text", ""))
        if kind == "transcript" and m["role"] == "user":
            if m["final"]:
                if text:
                    self._line(f"you: {text}")
            elif self.live and text:
                self.out.write(f"\r\033[Kyou: {text}…")
                self.out.flush()
                self._partial = True
        elif kind == "transcript" and m["final"]:
            cut, self._interrupted = self._interrupted, False
            if text:
                self._line(f"assistant: {text} … (interrupted)" if cut else f"assistant: {text}")
        elif kind == "interrupted":
            self._interrupted = True
        elif kind == "error":
            self._line(f"error: {m['message']}", self.err)
            if m["fatal"]:
                self.fatal = str(m["message"])

    def _line(self, text: str, stream: TextIO | None = None) -> None:
        if self._partial:
            self.out.write("\r\033[K")
            self.out.flush()
            self._partial = False
        print(text, file=stream or self.out, flush=True)


@contextlib.contextmanager
def _on_sigint(stop: Callable[[], None]) -> Iterator[None]:
    """Ctrl-C calls `stop` (ends the session cleanly) instead of raising KeyboardInterrupt."""
    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGINT, stop)
    except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or Windows
        yield
        return
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGINT)


async def _converse(
    settings: Settings,
    persona: Persona,
    engines: Engines,
    transport: LocalTransport,
    canceller: EchoCanceller | None,
    printer: TranscriptPrinter,
) -> int:
    stages = [SpeakerEchoCancelStage(canceller)] if canceller is not None else []
    transport.open()
    d = transport.devices
    printer.err.write(
        f"voice-agent talk: {persona.name} is listening (microphone {d.input_name!r}, speaker "
        f"{d.output_name!r}, {d.sample_rate} Hz, echo cancellation "
        f"{'on' if canceller else 'off'}); Ctrl-C to stop\n"
    )
    owner = TaskOwner("talk")
    backbone = await engines.backbone(settings, persona)  # a RemoteRealtimeError says why not
    try:
        session = Session(
            settings, persona, transport, engines, input_stages=stages, backbone=backbone
        )
        async with session:
            shown = owner.create_task(printer.follow(session.events()), "transcript")
            with _on_sigint(session.close):
                await session.run()
        await asyncio.wait({shown}, timeout=1.0)  # the last events, up to session_ended
    finally:
        await owner.cancel_tasks()
        await backbone.aclose()  # (the session has closed it, unless it never started)
    if printer.fatal is not None:
        return 1
    if transport.lost:
        printer.err.write("voice-agent talk: the audio device stopped\n")
        return 1
    return 0


def talk(
    settings: Settings,
    persona_id: str | None = None,
    *,
    sd: Any = None,
    engines: Engines | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Talk with a persona through the local microphone and speaker until Ctrl-C; the exit
    code (0, or 1 after printing one line that says why). `sd` (the sounddevice module) and
    `engines` (already loaded, left open) are for tests; by default both are loaded here."""
    out, err = out or sys.stdout, err or sys.stderr
    rate = settings.audio.sample_rate
    own_engines = engines is None
    transport: LocalTransport | None = None
    try:
        sd = sd if sd is not None else import_sounddevice()
        devices = find_devices(sd, rate)  # before loading anything: fails at once without one
        persona = PersonaStore(settings.personas.dirs).get(persona_id or settings.personas.default)
        canceller = None
        if settings.audio.echo_cancellation:
            try:
                canceller = EchoCanceller(rate)
            except ImportError as exc:
                raise DeviceError(
                    f"echo cancellation needs pywebrtc-audio ({exc}): pip install "
                    "'pywebrtc-audio==0.2.0', or --set audio.echo_cancellation=false"
                ) from None
        if engines is None:
            from voice_agent.engines import load_engines

            err.write("voice-agent talk: loading the models…\n")
            ensure_engines_run(settings)
            engines = load_engines(settings)
        transport = LocalTransport(rate, sd=sd, devices=devices)
        printer = TranscriptPrinter(out, err, live=out.isatty())
        return asyncio.run(_converse(settings, persona, engines, transport, canceller, printer))
    except KeyboardInterrupt:  # Ctrl-C before the session took it over
        return 0
    except (
        DeviceError,
        ModelError,
        KeyError,
        FileError,
        ImportError,
        OSError,
        ValueError,
        RemoteRealtimeError,
        EngineCheckFailed,
    ) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        err.write(f"voice-agent talk: {message}\n")
        return 1
    finally:
        if transport is not None:
            transport.shutdown()
        if own_engines and engines is not None:
            engines.close()
