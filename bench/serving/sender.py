"""Exactly N POSTs of one body over C kept-alive connections; prints how many were answered 200.

wrk runs for a time, not a count; counting instructions per request needs the count exact.

    python -m bench.serving.sender HOST PORT PATH BODY_FILE REQUESTS CONNECTIONS
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path


async def _connection(
    host: str, port: int, request: bytes, left: list[int], answered: list[int]
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    while left[0] > 0:
        left[0] -= 1
        writer.write(request)
        status = await reader.readline()
        headers: dict[bytes, bytes] = {}
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        if b"content-length" in headers:
            await reader.readexactly(int(headers[b"content-length"]))
        else:  # chunked, as uvicorn sends a body of no declared length
            while size := int((await reader.readline()).strip(), 16):
                await reader.readexactly(size + 2)
            await reader.readexactly(2)
        answered[0] += status.split(b" ", 2)[1] == b"200"
        if headers.get(b"connection") == b"close":
            writer.close()
            reader, writer = await asyncio.open_connection(host, port)
    writer.close()


async def send(
    host: str, port: int, path: str, body: bytes, requests: int, connections: int
) -> int:
    request = (
        f"POST {path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode() + body
    left, answered = [requests], [0]
    await asyncio.gather(
        *(_connection(host, port, request, left, answered) for _ in range(connections))
    )
    return answered[0]


def main() -> None:
    host, port, path, body_file, requests, connections = sys.argv[1:7]
    body = Path(body_file).read_bytes()
    print(asyncio.run(send(host, int(port), path, body, int(requests), int(connections))))


if __name__ == "__main__":
    main()
