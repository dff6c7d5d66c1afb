"""A forward-only protobuf wire-format reader over a stream of byte chunks.

Only the unread tail of the current chunk is buffered, so memory stays bounded by the chunk
size no matter how large the message is. Payloads the caller does not want (tensor data) are
skipped chunk by chunk without being copied or kept. Every chunk is passed to an optional
callback as it arrives (the profiler hashes the stream with it).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator

from .errors import CorruptModelError

VARINT = 0
FIXED64 = 1
LEN = 2
FIXED32 = 5

_WIRE_NAMES = {0: "varint", 1: "fixed64", 2: "length-delimited", 3: "start-group", 4: "end-group"}
_WIRE_NAMES[5] = "fixed32"

_U64 = 1 << 64
_I64_MAX = (1 << 63) - 1


def wire_name(wire_type: int) -> str:
    return _WIRE_NAMES.get(wire_type, f"invalid({wire_type})")


def to_signed64(value: int) -> int:
    """Protobuf encodes negative int32/int64 as 64-bit two's complement varints."""
    return value - _U64 if value > _I64_MAX else value


def _encode_varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def decode_packed_varints(data: bytes, offset: int = 0) -> list[int]:
    """Decode a packed repeated int32/int64 field (already in memory; callers bound its size)."""
    out: list[int] = []
    pos = 0
    n = len(data)
    while pos < n:
        result = 0
        shift = 0
        while True:
            if pos >= n:
                raise CorruptModelError("truncated varint in packed field", offset=offset + pos)
            b = data[pos]
            pos += 1
            result |= (b & 0x7F) << shift
            if b < 0x80:
                break
            shift += 7
            if shift >= 70:
                raise CorruptModelError("varint longer than 10 bytes", offset=offset + pos)
        out.append(to_signed64(result))
    return out


class WireReader:
    """Reads varints, keys and length-delimited fields from an iterator of chunks."""

    __slots__ = ("_base", "_buf", "_chunks", "_on_chunk", "_pos", "bytes_read")

    def __init__(
        self,
        chunks: Iterator[bytes | bytearray | memoryview],
        on_chunk: Callable[[bytes], None] | None = None,
    ) -> None:
        self._chunks = chunks
        self._on_chunk = on_chunk
        self._buf = b""
        self._pos = 0
        self._base = 0  # absolute stream offset of _buf[0]
        self.bytes_read = 0

    def tell(self) -> int:
        return self._base + self._pos

    def _next_chunk(self) -> bytes | None:
        for chunk in self._chunks:
            if not chunk:
                continue
            if not isinstance(chunk, bytes):
                chunk = bytes(chunk)
            if self._on_chunk is not None:
                self._on_chunk(chunk)
            self.bytes_read += len(chunk)
            return chunk
        return None

    def _more(self) -> bool:
        """Append the next chunk to the unread tail. False at end of input."""
        chunk = self._next_chunk()
        if chunk is None:
            return False
        tail = self._buf[self._pos :]
        self._base += self._pos
        self._buf = tail + chunk if tail else chunk
        self._pos = 0
        return True

    def _fill(self, n: int) -> bool:
        """Make n unread bytes available if the input has them (joined once, not per chunk)."""
        have = len(self._buf) - self._pos
        if have >= n:
            return True
        parts = [self._buf[self._pos :]]
        while have < n:
            chunk = self._next_chunk()
            if chunk is None:
                break
            parts.append(chunk)
            have += len(chunk)
        self._base += self._pos
        self._buf = b"".join(parts)
        self._pos = 0
        return have >= n

    def at_eof(self) -> bool:
        return self._pos >= len(self._buf) and not self._more()

    def truncated(self, what: str) -> CorruptModelError:
        return CorruptModelError(
            f"file is truncated: input ended inside {what}", offset=self.tell()
        )

    def varint(self) -> int:
        buf = self._buf
        pos = self._pos
        if pos < len(buf) and buf[pos] < 0x80:  # one-byte varints: most keys and lengths
            self._pos = pos + 1
            return buf[pos]
        if len(buf) - pos < 10:
            self._fill(10)
            buf = self._buf
        start = pos = self._pos
        end = min(len(buf), pos + 10)
        result = 0
        shift = 0
        while pos < end:
            b = buf[pos]
            pos += 1
            result |= (b & 0x7F) << shift
            if b < 0x80:
                self._pos = pos
                return result
            shift += 7
        if pos - start >= 10:
            raise CorruptModelError("varint longer than 10 bytes", offset=self._base + start)
        raise self.truncated("a varint")

    def key(self) -> tuple[int, int]:
        """Read a field key; returns (field number, wire type)."""
        k = self.varint()
        field, wire_type = k >> 3, k & 7
        if field == 0 or wire_type in (3, 4) or wire_type > 5:
            at = self.tell() - len(_encode_varint(k))
            if field == 0:
                raise CorruptModelError("field number 0 is not valid protobuf", offset=at)
            raise CorruptModelError(
                f"unsupported wire type {wire_name(wire_type)} for field {field}", offset=at
            )
        return field, wire_type

    def length(self, end: int, what: str) -> int:
        """Read a length prefix and return the absolute end offset of the payload."""
        at = self.tell()
        n = self.varint()
        stop = self.tell() + n
        if stop > end:
            raise CorruptModelError(
                f"{what} declares {n} bytes, past the end of its enclosing message", offset=at
            )
        return stop

    def read(self, n: int, what: str) -> bytes:
        if not self._fill(n):
            raise self.truncated(what)
        start = self._pos
        self._pos = start + n
        return self._buf[start : start + n]

    def fixed32(self) -> bytes:
        return self.read(4, "a fixed32 field")

    def float32(self) -> float:
        value: float = struct.unpack("<f", self.read(4, "a float field"))[0]
        return value

    def skip(self, n: int, what: str = "a field") -> None:
        """Advance n bytes without keeping them (payloads are discarded chunk by chunk)."""
        avail = len(self._buf) - self._pos
        if n <= avail:
            self._pos += n
            return
        n -= avail
        self._base += len(self._buf)
        self._buf = b""
        self._pos = 0
        while True:
            chunk = self._next_chunk()
            if chunk is None:
                raise self.truncated(what)
            if len(chunk) > n:
                self._buf = chunk
                self._pos = n
                return
            n -= len(chunk)
            self._base += len(chunk)
            if n == 0:
                return

    def skip_field(self, wire_type: int, end: int) -> int:
        """Skip one field value; returns the number of payload bytes skipped."""
        if wire_type == VARINT:
            self.varint()
            return 0
        if wire_type == LEN:
            stop = self.length(end, "a length-delimited field")
            n = stop - self.tell()
            self.skip(n)
            return n
        if wire_type == FIXED64:
            self.skip(8, "a fixed64 field")
            return 8
        self.skip(4, "a fixed32 field")
        return 4
