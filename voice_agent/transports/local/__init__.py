"""Talking through the local microphone and speaker: `voice-agent talk` (sounddevice / PortAudio).

- `devices`: which microphone and speaker to open, at which rate (`find_devices`);
- `stream`: `LocalTransport`, the one full-duplex stream and its callback on PortAudio's thread;
- `speaker`: `SpeakerSink`, the output buffer that the device's clock drains;
- `echo`: `MicFrame` and `SpeakerEchoCancelStage`, which feed the echo canceller what the
  speaker played in lockstep with the microphone.

`voice_agent.talk` is the command that uses it.
"""

from voice_agent.transports.local.devices import (
    DeviceError,
    Devices,
    find_devices,
    import_sounddevice,
)
from voice_agent.transports.local.echo import MicFrame, SpeakerEchoCancelStage
from voice_agent.transports.local.speaker import SpeakerSink
from voice_agent.transports.local.stream import LocalTransport

__all__ = [
    "DeviceError",
    "Devices",
    "LocalTransport",
    "MicFrame",
    "SpeakerEchoCancelStage",
    "SpeakerSink",
    "find_devices",
    "import_sounddevice",
]
