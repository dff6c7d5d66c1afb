"""The one paced load sender (hack/loadgen.py) that `run_load`, `make bench-rollback` and
`make chaos` share: requests leave on their slots, a slot finding `max_inflight` waiting is
dropped, every request is answered with who answered it and when, and only loopback is loaded."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest

from hack.loadgen import Answer, BackgroundLoad, load_url, run_load, send_paced
from hack.processes import free_port


class Upstream:
    """A loopback HTTP/1.1 server answering every POST after `delay_s` as a gateway does:
    pod and revision headers, or 503 from the gateway itself when `no_pod` is set."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.port = free_port()
        self.delay_s = delay_s
        self.no_pod = False
        self.loop = asyncio.new_event_loop()
        started = threading.Event()
        self.thread = threading.Thread(target=self._main, args=(started,), daemon=True)
        self.thread.start()
        assert started.wait(10)

    def _main(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(
            asyncio.start_server(self._serve, "127.0.0.1", self.port)
        )
        started.set()
        self.loop.run_forever()

    async def _shutdown(self) -> None:
        self.server.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                )
                await reader.readexactly(length)
                await asyncio.sleep(self.delay_s)
                if self.no_pod:
                    status, extra, body = b"503 Service Unavailable", b"", b'{"error":"no pod"}'
                else:
                    status, body = b"200 OK", b"{}"
                    extra = b"x-modelrollout-pod: p-1\r\nx-modelrollout-revision: r1\r\n"
                writer.write(
                    b"HTTP/1.1 %s\r\n%scontent-length: %d\r\n\r\n%s"
                    % (status, extra, len(body), body)
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def url(self) -> str:
        return load_url(f"http://127.0.0.1:{self.port}", "ns", "iris")

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    up = Upstream()
    yield up
    up.close()


def test_requests_leave_on_their_slots_and_say_who_answered(upstream: Upstream) -> None:
    answers: list[Answer] = []
    started = time.monotonic()
    sent, dropped = asyncio.run(send_paced(upstream.url(), {}, 50, answers.append, count=10))
    assert (sent, dropped) == (10, 0)
    assert time.monotonic() - started >= 9 / 50  # the last slot is 0.18 s after the first
    assert len(answers) == 10
    assert {(a.pod, a.revision, a.code, a.detail) for a in answers} == {("p-1", "r1", 200, "")}
    assert all(a.sent <= a.done for a in answers)
    slots = sorted(a.sent for a in answers)
    assert slots[-1] - slots[0] >= 8 / 50  # not sent in one burst


def test_a_slot_that_finds_max_inflight_waiting_is_dropped() -> None:
    slow = Upstream(delay_s=0.5)
    try:
        answers: list[Answer] = []
        sent, dropped = asyncio.run(
            send_paced(slow.url(), {}, 50, answers.append, count=10, max_inflight=2)
        )
    finally:
        slow.close()
    assert sent == 2
    assert dropped == 8
    assert len(answers) == 2


def test_the_gateways_own_answers_and_no_answer_at_all_are_told_apart(upstream: Upstream) -> None:
    upstream.no_pod = True
    answers: list[Answer] = []
    asyncio.run(send_paced(upstream.url(), {}, 20, answers.append, count=1))
    assert (answers[0].pod, answers[0].revision, answers[0].code) == ("", "-", 503)
    assert "no pod" in answers[0].detail
    closed = load_url(f"http://127.0.0.1:{free_port()}", "ns", "iris")
    answers.clear()
    asyncio.run(send_paced(closed, {}, 20, answers.append, count=1))
    assert (answers[0].code, answers[0].detail) == (0, "ConnectError")


def test_background_load_runs_until_stopped_and_keeps_every_answer(upstream: Upstream) -> None:
    load = BackgroundLoad(f"http://127.0.0.1:{upstream.port}", "ns", "iris", 40, {}).start()
    deadline = time.monotonic() + 20  # a loaded machine takes a while to start the client
    while len(load.answers()) < 10 and time.monotonic() < deadline:
        time.sleep(0.05)
    answers = load.stop()
    assert 10 <= len(answers) == load.sent
    assert load.dropped == 0
    stats = run_load(f"http://127.0.0.1:{upstream.port}", "ns", "iris", 40, 0.25, {})
    assert stats.by_status == {200: 10}
    assert stats.by_revision == {"r1": 10}
    assert len(stats.latencies_s) == 10


def test_only_loopback_is_loaded_within_bounds() -> None:
    with pytest.raises(ValueError, match="loopback"):
        BackgroundLoad("http://192.0.2.1:80", "ns", "iris", 10, {})
    with pytest.raises(ValueError, match="rate_per_s"):
        BackgroundLoad("http://127.0.0.1:80", "ns", "iris", 0, {})
    with pytest.raises(ValueError, match="rate_per_s"):
        run_load("http://127.0.0.1:80", "ns", "iris", 10, 10_000, {})
