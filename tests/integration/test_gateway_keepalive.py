"""The weighted gateway never sends a request on a connection its upstream is closing.

`make chaos` once saw a 502 from a healthy stable pod: the gateway kept idle upstream connections
as long as the model server does (5 s, uvicorn's default), so a request could leave on a
connection the server was closing at that very moment. The gateway now drops idle connections
after 2 s. The upstream here is strict about that race: a request that reaches it on a
connection idle for `CROSSED_AFTER_S` or more is met by the close, unanswered (on a loaded
machine the server's close and a request cross on the wire about then).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from hack.gateway import Gateway
from hack.podrunner import PodServer
from hack.processes import free_port

from .kube import Kube

pytestmark = pytest.mark.integration

NAME = "idle"
KEEPALIVE_S = 5.0  # the model server's (uvicorn's default timeout_keep_alive)
CROSSED_AFTER_S = 4.0
SPACING_S = 4.3  # past CROSSED_AFTER_S, inside KEEPALIVE_S


class ClosingUpstream:
    """A minimal HTTP/1.1 keep-alive server on 127.0.0.1 that closes idle connections at
    KEEPALIVE_S and meets a request crossing that close with the close."""

    def __init__(self) -> None:
        self.port = free_port()
        self.connections = 0
        self.answered = 0
        self.crossed = 0
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._main, name="closing-upstream", daemon=True)

    def __enter__(self) -> ClosingUpstream:
        self._thread.start()
        assert self._started.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._serve, "127.0.0.1", self.port)
        )
        self._started.set()
        try:
            self._loop.run_forever()
        finally:
            server.close()
            self._loop.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        loop = asyncio.get_running_loop()
        idle_since = loop.time()
        try:
            while True:
                try:
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), KEEPALIVE_S)
                except (TimeoutError, asyncio.IncompleteReadError):
                    return  # idle past its keep-alive, or the client went away
                if loop.time() - idle_since >= CROSSED_AFTER_S:
                    self.crossed += 1
                    return  # the close crossed this request: no answer
                length = _content_length(head)
                if length:
                    await reader.readexactly(length)
                body = b'{"ok":true}'
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    b"content-length: %d\r\n\r\n%s" % (len(body), body)
                )
                await writer.drain()
                self.answered += 1
                idle_since = loop.time()
        finally:
            writer.close()


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip())
    return 0


class OnePod:
    """The gateway's pod source: one ready pod of NAME, served by the upstream."""

    def __init__(self, namespace: str, url: str) -> None:
        self.server = PodServer(
            namespace=namespace,
            pod=f"{NAME}-0",
            deployment=NAME,
            revision="r1",
            labels={},
            url=url,
            metrics_url="",
            ready=True,
            pid=0,
            log_path="",
        )

    def servers(self, **filters: Any) -> list[PodServer]:
        return [self.server]


@pytest.fixture
def upstream() -> Iterator[ClosingUpstream]:
    with ClosingUpstream() as up:
        yield up


def test_no_502_when_the_upstream_closes_an_idle_connection(
    kube: Kube, upstream: ClosingUpstream
) -> None:
    pods = OnePod(kube.namespace, f"http://127.0.0.1:{upstream.port}")
    url = f"/{kube.namespace}/{NAME}/v2/models/{NAME}/infer"
    codes: list[int] = []
    with (
        Gateway(kube.cluster.kubeconfig, pods) as gateway,
        httpx.Client(base_url=gateway.url, timeout=10, trust_env=False) as client,
    ):
        for _ in range(3):  # back to back: one kept-alive connection serves them all
            codes.append(client.post(url, json={}).status_code)
        warm = upstream.connections
        for _ in range(2):  # each just past the moment the upstream's close may cross it
            time.sleep(SPACING_S)
            codes.append(client.post(url, json={}).status_code)
    assert codes == [200] * 5, (
        f"answers {codes}; requests met by the upstream's close: {upstream.crossed}"
    )
    assert upstream.crossed == 0
    assert warm == 1, "keep-alive is still used between requests close together"
    assert upstream.connections == 3
