"""The campaign's fault proxies on loopback sockets (bench/chaos/proxies.py)."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from bench.chaos.proxies import PrometheusProxy, TcpProxy


@pytest.fixture
def echo() -> Iterator[int]:
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                while data := conn.recv(1024):
                    conn.sendall(data)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(2)
    server.close()


def test_cut_holds_bytes_and_heal_delivers_them(echo: int) -> None:
    proxy = TcpProxy("127.0.0.1", echo)
    try:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=2) as conn:
            conn.sendall(b"before")
            assert conn.recv(1024) == b"before"
            proxy.cut()
            conn.sendall(b"during")
            conn.settimeout(0.5)
            with pytest.raises(TimeoutError):
                conn.recv(1024)  # no answer while cut off, and no error either
            proxy.heal()
            conn.settimeout(2)
            assert conn.recv(1024) == b"during"
    finally:
        proxy.close()


class _Prometheus(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps({"status": "success", "data": {"result": [{"value": [0, "7"]}]}})
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *_: object) -> None:
        pass


def test_prometheus_proxy_modes() -> None:
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), _Prometheus)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    proxy = PrometheusProxy(f"http://127.0.0.1:{upstream.server_address[1]}")
    query = f"{proxy.url}/api/v1/query?query=up"
    try:
        with httpx.Client(trust_env=False, timeout=2) as client:
            assert client.get(query).json()["data"]["result"][0]["value"][1] == "7"
            proxy.set_mode("error")
            answer = client.get(query)
            assert answer.status_code == 503
            assert answer.json()["status"] == "error"
            proxy.set_mode("empty")
            assert client.get(query).json()["data"]["result"] == []
            proxy.set_mode("down")
            with pytest.raises(httpx.ConnectError):
                client.get(query)
            proxy.set_mode("pass")
            assert client.get(query).status_code == 200
    finally:
        proxy.close()
        upstream.shutdown()
