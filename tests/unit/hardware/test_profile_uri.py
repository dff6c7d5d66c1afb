"""profile_uri: file and HTTP sources, size limits, checksum verification and the cache."""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelrollout.hardware.errors import (
    ChecksumMismatchError,
    ModelTooLargeError,
    ModelUnreachableError,
    NotOnnxModelError,
    ProfileError,
    UnsupportedModelUriError,
)
from modelrollout.hardware.profiler import ProfileCache, normalize_sha256

from . import onnxgen
from .conftest import HttpServer, profile_uri


@pytest.fixture
def mlp_file(tmp_path: Path) -> tuple[Path, str]:
    data = onnxgen.mlp().model().SerializeToString()
    path = tmp_path / "mlp.onnx"
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.fixture
def silent_port() -> Iterator[int]:
    """Accepts connections (via the backlog) and never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(4)
        yield s.getsockname()[1]


def test_plain_path_and_file_uri(mlp_file: tuple[Path, str]) -> None:
    path, sha = mlp_file
    a = profile_uri(str(path), sha, cache=None)
    b = profile_uri(path.as_uri(), sha.upper(), cache=None)
    c = profile_uri(f"file://localhost{path}", f"sha256:{sha}", cache=None)
    assert a == b == c
    assert a.sha256 == sha


def test_http(http_server: HttpServer, mlp_file: tuple[Path, str]) -> None:
    path, sha = mlp_file
    (http_server.root / "m.onnx").write_bytes(path.read_bytes())
    p = profile_uri(f"{http_server.base}/m.onnx", sha, cache=None)
    assert p.sha256 == sha
    assert p.parameter_count == 784 * 256 + 256 + 256 * 10 + 10


def test_http_without_content_length(http_server: HttpServer, mlp_file: tuple[Path, str]) -> None:
    path, sha = mlp_file
    (http_server.root / "m.onnx").write_bytes(path.read_bytes())
    assert profile_uri(f"{http_server.base}/unsized/m.onnx", sha, cache=None).sha256 == sha
    with pytest.raises(ModelTooLargeError, match="over the 1000-byte limit"):
        profile_uri(f"{http_server.base}/unsized/m.onnx", cache=None, max_bytes=1000)


def test_cache_hit_reads_nothing(http_server: HttpServer, mlp_file: tuple[Path, str]) -> None:
    path, sha = mlp_file
    (http_server.root / "m.onnx").write_bytes(path.read_bytes())
    cache = ProfileCache()
    uri = f"{http_server.base}/m.onnx"
    first = profile_uri(uri, sha, cache=cache)
    assert profile_uri(uri, sha, cache=cache) is first
    assert http_server.requests == ["/m.onnx"]
    # Another sequence length is another estimate: profiled again.
    assert profile_uri(uri, sha, cache=cache, dim_overrides={"batch": 4}) is not first
    assert len(http_server.requests) == 2
    # Without an expected checksum nothing can be looked up before reading.
    profile_uri(uri, cache=cache)
    assert len(http_server.requests) == 3


def test_cache_is_a_bounded_lru(mlp_file: tuple[Path, str], tmp_path: Path) -> None:
    cache = ProfileCache(maxsize=2)
    shas = []
    for name, builder in (("a", onnxgen.mlp), ("b", onnxgen.small_conv), ("c", onnxgen.mlp)):
        data = builder(*(("N",) if name == "c" else ())).model().SerializeToString()
        (tmp_path / name).write_bytes(data)
        shas.append(hashlib.sha256(data).hexdigest())
    profile_uri(str(tmp_path / "a"), shas[0], cache=cache)
    profile_uri(str(tmp_path / "b"), shas[1], cache=cache)
    assert cache.get(shas[0]) is not None  # touch a: b is now the oldest
    profile_uri(str(tmp_path / "c"), shas[2], cache=cache)
    assert len(cache) == 2
    assert cache.get(shas[1]) is None
    assert cache.get(shas[0]) is not None
    assert cache.get(shas[2]) is not None


def test_checksum_mismatch(mlp_file: tuple[Path, str]) -> None:
    path, sha = mlp_file
    cache = ProfileCache()
    with pytest.raises(ChecksumMismatchError) as info:
        profile_uri(str(path), "0" * 64, cache=cache)
    e = info.value
    assert (e.expected, e.actual, e.reason) == ("0" * 64, sha, "ChecksumMismatch")
    assert str(path) in str(e)
    assert sha in str(e)
    assert len(cache) == 0  # a model that failed verification is not remembered


@pytest.mark.parametrize("value", ["abc", "sha256:" + "g" * 64, "md5:" + "0" * 32, ""])
def test_malformed_expected_checksum(value: str) -> None:
    with pytest.raises(ValueError, match="sha256"):
        normalize_sha256(value)


ERROR_CASES = [
    ("missing-file", ModelUnreachableError, "does not exist"),
    ("directory", ModelUnreachableError, "is a directory"),
    ("http-404", ModelUnreachableError, "HTTP 404"),
    ("refused", ModelUnreachableError, "ConnectError"),
    ("timeout", ModelUnreachableError, "no answer within 0.3s"),
    ("too-large-file", ModelTooLargeError, "over the 100-byte limit"),
    ("too-large-http", ModelTooLargeError, "server declares"),
    ("pvc", UnsupportedModelUriError, "does not read pvc:// models"),
    ("remote-file-host", UnsupportedModelUriError, "remote host"),
    ("not-onnx-http", NotOnnxModelError, "not an ONNX model"),
]


@pytest.mark.parametrize(("case", "error", "message"), ERROR_CASES, ids=[c[0] for c in ERROR_CASES])
def test_errors_carry_reason_and_uri(
    case: str,
    error: type[ProfileError],
    message: str,
    http_server: HttpServer,
    mlp_file: tuple[Path, str],
    closed_port: int,
    silent_port: int,
    tmp_path: Path,
) -> None:
    path, _ = mlp_file
    (http_server.root / "m.onnx").write_bytes(path.read_bytes())
    (http_server.root / "index.txt").write_text("this is text, not a model\n" * 10)
    kwargs: dict[str, float | int] = {}
    uri = {
        "missing-file": str(tmp_path / "nope.onnx"),
        "directory": str(tmp_path),
        "http-404": f"{http_server.base}/nope.onnx",
        "refused": f"http://127.0.0.1:{closed_port}/m.onnx",
        "timeout": f"http://127.0.0.1:{silent_port}/m.onnx",
        "too-large-file": str(path),
        "too-large-http": f"{http_server.base}/m.onnx",
        "pvc": "pvc://claim/model.onnx",
        "remote-file-host": "file://otherhost/model.onnx",
        "not-onnx-http": f"{http_server.base}/index.txt",
    }[case]
    if case == "timeout":
        kwargs["timeout"] = 0.3
    if case.startswith("too-large"):
        kwargs["max_bytes"] = 100
    with pytest.raises(error, match=message) as info:
        profile_uri(uri, cache=None, **kwargs)  # type: ignore[arg-type]
    assert info.value.uri == uri
    assert str(info.value).startswith(uri)
    assert info.value.reason == error.reason
    assert error.reason[0].isupper()
    assert " " not in error.reason
