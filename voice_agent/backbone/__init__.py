"""The speech backbone: ASR, LLM and TTS engines behind small protocols, and the stages that
drive them. One file per engine; engines are synchronous and run in the EngineExecutor."""
