"""Word error rate for the tests: the benches' own (`voice_agent.bench.wer`)."""

from voice_agent.bench.wer import wer, words

__all__ = ["wer", "words"]
