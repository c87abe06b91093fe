"""A command's output as the model gets it: the head and a rolling tail, the middle counted.

One pipe carries stdout and stderr interleaved; the reader keeps a head and a rolling tail
and only counts what falls between, so 10 GB of output costs no memory.
"""

from __future__ import annotations

import asyncio
import collections
from typing import BinaryIO


class OutputBuffer:
    """Keeps the head and a rolling tail of a byte stream; counts what falls between."""

    def __init__(self, limit_chars: int) -> None:
        self.limit_chars = limit_chars
        self._cap = 4 * limit_chars  # a UTF-8 character takes at most four bytes
        self._head = bytearray()
        self._tail: collections.deque[bytes] = collections.deque()  # chunks, never copied
        self._tail_bytes = 0
        self._total = 0

    async def read_from(self, pipe: BinaryIO) -> tuple[asyncio.ReadTransport,
                                                      asyncio.Future[None]]:
        """Feed this buffer from a pipe; the future is set at its end."""
        loop = asyncio.get_running_loop()
        drained: asyncio.Future[None] = loop.create_future()
        transport, _ = await loop.connect_read_pipe(lambda: _PipeProtocol(self, drained), pipe)
        return transport, drained

    def feed(self, chunk: bytes) -> None:
        self._total += len(chunk)
        room = self._cap - len(self._head)
        if room > 0:
            self._head += chunk[:room]
            chunk = chunk[room:]
        if not chunk:
            return
        self._tail.append(chunk)
        self._tail_bytes += len(chunk)
        while self._tail_bytes - len(self._tail[0]) >= self._cap:
            self._tail_bytes -= len(self._tail.popleft())

    def render(self) -> tuple[str, bool]:
        """The output as text, at most about limit_chars long, and whether it was cut."""
        tail = b"".join(self._tail)
        if len(self._head) + len(tail) == self._total:
            return cap_text((self._head + tail).decode(errors="replace"), self.limit_chars)
        tail = tail[-self._cap:].lstrip(bytes(range(0x80, 0xC0)))  # drop a split character
        half = _half(self.limit_chars)
        head_text = self._head.decode(errors="replace")[:half]
        tail_text = tail.decode(errors="replace")[-half:]
        cut = self._total - len(head_text.encode()) - len(tail_text.encode())
        return head_text + _cut_line(cut, "bytes", self._total) + tail_text, True


class _PipeProtocol(asyncio.Protocol):
    # A protocol gets each chunk straight from the transport: 1.8 GB/s here against
    # 0.5 GB/s for StreamReader.read (before our own bookkeeping, which halves it).
    def __init__(self, buffer: OutputBuffer, drained: asyncio.Future[None]) -> None:
        self.buffer = buffer
        self.drained = drained

    def data_received(self, data: bytes) -> None:
        self.buffer.feed(data)

    def eof_received(self) -> bool:
        self._done()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._done()

    def _done(self) -> None:
        if not self.drained.done():
            self.drained.set_result(None)


def cap_text(text: str, limit_chars: int) -> tuple[str, bool]:
    """Keep the head and tail of text within limit_chars, saying how much was cut."""
    if len(text) <= limit_chars:
        return text, False
    half = _half(limit_chars)
    return text[:half] + _cut_line(len(text) - 2 * half, "characters", len(text)) + \
        text[-half:], True


def _half(limit_chars: int) -> int:
    return max(0, (limit_chars - 120) // 2)  # leave room for the line saying what was cut


def _cut_line(cut: int, unit: str, total: int) -> str:
    return f"\n[... {cut:,} {unit} cut from the middle of {total:,}; head and tail shown ...]\n"
