"""A stand-in for llama-cpp-python whose model load dies the way a llama.cpp built for another
CPU does: a fault in native code, no Python exception. Put this folder first on PYTHONPATH."""

import ctypes


class Llama:
    def __init__(self, *args: object, **kwargs: object) -> None:
        ctypes.string_at(0)  # reads address 0: SIGSEGV
