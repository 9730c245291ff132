"""voice-agent: a realtime, full-duplex voice assistant."""

__version__ = "0.1.0"
