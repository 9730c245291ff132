"""The microphone and speaker `voice-agent talk` opens: sounddevice (PortAudio), the default
devices, and the rate both of them take."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

INSTALL = "apt-get install libportaudio2 and pip install 'voice-agent[local]'"


class DeviceError(RuntimeError):
    """No usable microphone or speaker; the message says what was found."""


def import_sounddevice() -> Any:
    """The sounddevice module, or a DeviceError that says what to install."""
    try:
        import sounddevice
    except (ImportError, OSError) as exc:  # OSError: the PortAudio library itself is missing
        raise DeviceError(f"cannot use the sound card ({exc}): {INSTALL}") from None
    return sounddevice


@dataclass(frozen=True, slots=True)
class Devices:
    """The microphone and speaker to open, and the rate they take."""

    input: int
    output: int
    input_name: str
    output_name: str
    sample_rate: int


def _seen(sd: Any, devices: list[dict[str, Any]]) -> str:
    if not devices:
        apis = ", ".join(str(api["name"]) for api in sd.query_hostapis())
        return f"PortAudio sees no audio device (host APIs: {apis or 'none'})"
    shown = ", ".join(
        f"{d['name']!r} ({d['max_input_channels']} in, {d['max_output_channels']} out)"
        for d in devices[:6]
    )
    more = f" and {len(devices) - 6} more" if len(devices) > 6 else ""
    return f"PortAudio sees {len(devices)} device(s): {shown}{more}"


def find_devices(sd: Any, sample_rate: int) -> Devices:
    """The default microphone and speaker, at `sample_rate` if they take it, else at the
    speaker's default rate; a DeviceError saying what was found when there is none."""
    try:
        devices = [dict(d) for d in sd.query_devices()]
    except sd.PortAudioError as exc:
        raise DeviceError(f"PortAudio cannot list the audio devices: {exc}") from None
    found: dict[str, dict[str, Any] | None] = {}
    for kind in ("input", "output"):
        try:
            found[kind] = dict(sd.query_devices(kind=kind))
        except (sd.PortAudioError, ValueError):  # no default device: PortAudio's -1
            found[kind] = None
    mic, speaker = found["input"], found["output"]
    if mic is None or speaker is None:
        missing = " and no ".join(
            what for what, dev in (("microphone", mic), ("speaker", speaker)) if dev is None
        )
        raise DeviceError(f"no {missing} to talk through: {_seen(sd, devices)}")
    ids = (int(mic["index"]), int(speaker["index"]))
    rates = [sample_rate, round(float(speaker["default_samplerate"]))]
    problem = None
    for rate in dict.fromkeys(rates):
        try:
            sd.check_input_settings(ids[0], channels=1, dtype="int16", samplerate=rate)
            sd.check_output_settings(ids[1], channels=1, dtype="int16", samplerate=rate)
        except (sd.PortAudioError, ValueError) as exc:
            problem = exc
            continue
        return Devices(*ids, str(mic["name"]), str(speaker["name"]), rate)
    raise DeviceError(
        f"{mic['name']!r} and {speaker['name']!r} take neither {' nor '.join(map(str, rates))} Hz "
        f"mono 16-bit audio: {problem}"
    )
