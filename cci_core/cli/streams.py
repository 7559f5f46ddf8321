"""Where streamed command output goes: bytes to our stdout or stderr, as they arrive."""

from __future__ import annotations

from typing import TextIO

from cci_core.driver import OutputHandler


def binary_writer(stream: TextIO) -> OutputHandler:
    """A handler writing each chunk to ``stream``'s binary buffer (decoded for text-only streams) and flushing."""
    buffer = getattr(stream, "buffer", None)

    def write(chunk: bytes) -> None:
        if buffer is not None:
            buffer.write(chunk)
        else:  # a text-only stream (click's test runner): decode
            stream.write(chunk.decode("utf-8", errors="replace"))
        stream.flush()

    return write
