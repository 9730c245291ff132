"""Benchmarks that print figures: `voice-agent bench [models | conversation]`."""
