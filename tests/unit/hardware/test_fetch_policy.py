"""Model fetches under the platform's policy, against real HTTP servers on 127.0.0.1.

Each case is an attack a tenant could write into spec.model.uri: a file in the operator's pod,
a loopback or metadata address (a `#` fragment hiding the rest of the path), a redirect out of
the allowed hosts, a server that drips a byte at a time, a gzip bomb, credentials in the URI
and a hostile error page. Only loopback addresses are ever connected to: hosts are mapped to
127.0.0.x by the test's resolver.
"""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from modelrollout.hardware.errors import (
    ModelTooLargeError,
    ModelUnreachableError,
    ProfileError,
    RefusedByPolicyError,
)
from modelrollout.hardware.fetch import profile_uri, redact_uri
from modelrollout.tenancy import IPAddress, TenantPolicy

from . import onnxgen

MODEL = onnxgen.mlp().model().SerializeToString()


@dataclass
class Site:
    """A tiny HTTP server whose routes are functions of the handler."""

    routes: dict[str, Callable[[BaseHTTPRequestHandler], None]] = field(default_factory=dict)
    seen: list[str] = field(default_factory=list)
    port: int = 0

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"


@pytest.fixture
def site() -> Iterator[Site]:
    s = Site()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            s.seen.append(f"{self.headers.get('Host')}{self.path}")
            route = s.routes.get(self.path.split("?")[0])
            if route is None:
                self.send_error(404)
                return
            route(self)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    s.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield s
    finally:
        server.shutdown()
        server.server_close()


def send(body: bytes, status: int = 200, **headers: str) -> Callable[[Any], None]:
    def route(h: Any) -> None:
        h.send_response(status)
        h.send_header("Content-Length", str(len(body)))
        for k, v in headers.items():
            h.send_header(k.replace("_", "-"), v)
        h.end_headers()
        h.wfile.write(body)

    return route


def redirect(location: str) -> Callable[[Any], None]:
    return send(b"", 302, Location=location)


def loopback(names: dict[str, str]) -> Callable[[str, int], list[IPAddress]]:
    import ipaddress

    def resolve(host: str, port: int) -> list[IPAddress]:
        return [ipaddress.ip_address(names[host])]

    return resolve


def policy(**fields: Any) -> TenantPolicy:
    return TenantPolicy.model_validate(fields)


def refused(rule: str, uri: str, **kwargs: Any) -> RefusedByPolicyError:
    with pytest.raises(RefusedByPolicyError) as info:
        profile_uri(uri, cache=None, **kwargs)
    assert info.value.rule == rule
    assert f"policy.{rule}" in str(info.value)
    assert info.value.reason == "RefusedByPolicy"
    return info.value


def test_files_in_the_operator_pod_are_off_by_default(tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(MODEL)
    # The same answer whether or not the file exists: nothing about the pod's files leaks.
    answers = {
        str(refused("modelUriSchemes", uri)).split(": ", 1)[1]
        for uri in (str(model), model.as_uri(), str(tmp_path / "nope"), "/etc/passwd")
    }
    assert answers == {
        "refused by policy.modelUriSchemes: scheme 'file' is not allowed "
        "(allowed: https, http, s3, gs, az)"
    }
    assert profile_uri(str(model), cache=None, policy=policy(modelUriSchemes=["file"]))


def test_loopback_and_metadata_style_urls_are_refused_before_connecting(site: Site) -> None:
    site.routes["/latest/meta-data/iam/security-credentials/"] = send(b"AKIA-SECRET")
    # `#` would move the rest of a path into the fragment; the address is what is judged.
    uri = site.url("/latest/meta-data/iam/security-credentials/#/model.onnx")
    e = refused("allowedNetworks", uri)
    assert "127.0.0.1 is a loopback address" in str(e)
    assert "AKIA" not in str(e)
    e = refused("allowedNetworks", uri, resolve=loopback({"models.example": "127.0.0.1"}))
    e = refused(
        "allowedNetworks",
        site.url("/m.onnx", "models.example"),
        resolve=loopback({"models.example": "127.0.0.1"}),
    )
    assert "models.example (127.0.0.1) is a loopback address" in str(e)
    assert site.seen == []


def test_redirects_are_checked_like_the_uri(site: Site) -> None:
    names = {"models.example": "127.0.0.1", "elsewhere.example": "127.0.0.1"}
    site.routes["/m.onnx"] = send(MODEL)
    site.routes["/ok"] = redirect("/m.onnx")
    site.routes["/out"] = redirect(site.url("/m.onnx", "elsewhere.example"))
    site.routes["/other-address"] = redirect(f"http://127.0.0.2:{site.port}/m.onnx")
    site.routes["/loop"] = redirect("/loop")
    allowed = policy(modelHosts=["models.example"], allowedNetworks=["127.0.0.1/32"])
    kw: dict[str, Any] = {"policy": allowed, "resolve": loopback(names)}
    # Within the allowlist a redirect is followed, and the Host header names the host.
    profile = profile_uri(site.url("/ok", "models.example"), cache=None, **kw)
    assert profile.parameter_count > 0
    assert site.seen == [f"models.example:{site.port}/ok", f"models.example:{site.port}/m.onnx"]
    e = refused("modelHosts", site.url("/out", "models.example"), **kw)
    assert "'elsewhere.example' is not in the allowed hosts" in str(e)
    # Another address: refused by the network rule without a host list, by the host list with.
    one_address = policy(allowedNetworks=["127.0.0.1/32"])
    e = refused("allowedNetworks", site.url("/other-address"), policy=one_address)
    assert "127.0.0.2 is a loopback address" in str(e)
    e = refused("modelHosts", site.url("/other-address", "models.example"), **kw)
    refused("maxRedirects", site.url("/loop", "models.example"), **kw)
    assert len([s for s in site.seen if s.endswith("/loop")]) == allowed.max_redirects + 1


def test_a_server_dripping_bytes_meets_the_whole_download_deadline(site: Site) -> None:
    def drip(h: Any) -> None:
        h.send_response(200)
        h.send_header("Content-Length", str(len(MODEL)))
        h.end_headers()
        for b in MODEL[:200]:  # bounded: 200 bytes, 20 s at most if never stopped
            try:
                h.wfile.write(bytes([b]))
                h.wfile.flush()
            except OSError:
                return
            time.sleep(0.1)

    site.routes["/m.onnx"] = drip
    local = policy(allowedNetworks=["127.0.0.0/8"], fetchDeadlineSeconds=0.6)
    start = time.monotonic()
    with pytest.raises(ModelUnreachableError, match=r"policy\.fetchDeadlineSeconds") as info:
        profile_uri(site.url("/m.onnx"), cache=None, policy=local)
    # Each read came within the 30 s read timeout; only the whole deadline stops it.
    assert time.monotonic() - start < 3
    assert info.value.reason == "ModelUnreachable"


def test_compressed_bodies_are_never_inflated(site: Site) -> None:
    bomb = gzip.compress(b"\0" * (64 << 20), compresslevel=9)  # 64 MiB in ~64 KiB
    site.routes["/m.onnx"] = send(bomb, Content_Encoding="gzip")
    site.routes["/plain"] = send(bomb)
    local = policy(allowedNetworks=["127.0.0.0/8"], maxModelBytes=1 << 20)
    with pytest.raises(ModelUnreachableError, match="does not decompress"):
        profile_uri(site.url("/m.onnx"), cache=None, policy=local)
    # Served without the header, the same bytes are just bytes: counted as sent, not inflated.
    with pytest.raises(ProfileError) as info:
        profile_uri(site.url("/plain"), cache=None, policy=local)
    assert not isinstance(info.value, ModelTooLargeError)


def test_credentials_and_upstream_text_never_reach_the_message(site: Site) -> None:
    def hostile(h: Any) -> None:
        body = b"<html>AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI</html>"
        h.send_response(403, "LEAKED-REASON")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    site.routes["/m.onnx"] = hostile
    uri = f"http://alice:hunter2@127.0.0.1:{site.port}/m.onnx?X-Amz-Signature=abc123&v=1"
    with pytest.raises(ModelUnreachableError) as info:
        profile_uri(uri, cache=None, policy=policy(allowedNetworks=["127.0.0.0/8"]))
    text = str(info.value)
    assert "HTTP 403 Forbidden" in text
    for secret in ("hunter2", "alice", "abc123", "LEAKED", "wJalr", "AWS_SECRET"):
        assert secret not in text
    assert text.startswith(f"http://127.0.0.1:{site.port}/m.onnx?X-Amz-Signature=REDACTED&v=")


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        ("https://u:p@h.example/m.onnx", "https://h.example/m.onnx"),
        (
            "https://h/m?X-Amz-Credential=a%2Fb&sig=x#frag",
            "https://h/m?X-Amz-Credential=REDACTED&sig=REDACTED",
        ),
        ("/models/m.onnx", "/models/m.onnx"),
        ("s3://bucket/k.onnx", "s3://bucket/k.onnx"),
    ],
)
def test_redact_uri(uri: str, shown: str) -> None:
    assert redact_uri(uri) == shown
