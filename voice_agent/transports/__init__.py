"""Transports: how audio gets in and out of a session (WebRTC, WebSocket PCM, local devices)."""
