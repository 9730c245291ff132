"""Audio helpers: PCM conversion, resampling, playback pacing."""
