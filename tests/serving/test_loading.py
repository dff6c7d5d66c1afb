"""Model loading: checksums, http:// downloads, and failures that keep the server unready."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelserver import loader
from modelserver.loader import LoadError, fetch_model

from .conftest import Models, ServeFactory, sha256


class _Files:
    """A local HTTP server on 127.0.0.1 whose responses a test can script."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.failures: dict[str, list[int]] = {}  # path -> status codes to send first
        self.hits: dict[str, int] = {}
        files = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                files.hits[self.path] = files.hits.get(self.path, 0) + 1
                queued = files.failures.get(self.path)
                if queued:
                    self.send_error(queued.pop(0))
                    return
                target = files.root / self.path.lstrip("/")
                if not target.is_file():
                    self.send_error(404)
                    return
                data = target.read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def files(models: Models, monkeypatch: pytest.MonkeyPatch) -> Iterator[_Files]:
    monkeypatch.setattr(loader, "BACKOFF_S", 0.01)
    server = _Files(models.mlp.parent)
    yield server
    server.close()


async def test_checksum_mismatch_never_ready(serve: ServeFactory, models: Models) -> None:
    wrong = "0" * 64
    s = await serve(model_uri=str(models.mlp), model_sha256=wrong)
    assert s.plane.state == "failed"
    ready = await s.client.get("/v2/health/ready")
    assert ready.status_code == 503
    reason = ready.json()["error"]
    assert "sha256 mismatch" in reason
    assert wrong in reason
    assert sha256(models.mlp) in reason
    for url in ("/v2/models/mlp", "/v2/models/mlp/ready"):
        r = await s.client.get(url)
        assert r.status_code == 503
        assert "sha256 mismatch" in r.json()["error"]
    body = {
        "inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 16], "data": [0] * 16}]
    }
    r = await s.client.post(s.infer_url(), json=body)
    assert r.status_code == 503
    assert (await s.client.get("/v2/health/live")).status_code == 200


async def test_correct_checksum_and_file_uri(serve: ServeFactory, models: Models) -> None:
    s = await serve(model_uri=models.mlp.as_uri(), model_sha256=sha256(models.mlp).upper())
    assert (await s.client.get("/v2/health/ready")).status_code == 200


async def test_not_ready_while_loading(serve: ServeFactory, models: Models) -> None:
    s = await serve(model_uri=str(models.mlp), wait=False)
    r = await s.client.get("/v2/health/ready")
    assert r.status_code == 503
    assert r.json() == {"ready": False, "error": "model is loading"}
    await s.plane.wait_loaded()
    assert (await s.client.get("/v2/health/ready")).status_code == 200


async def test_http_download_verified_and_cached(
    serve: ServeFactory, models: Models, files: _Files, tmp_path: Path
) -> None:
    uri = f"{files.url}/mlp.onnx"
    s = await serve(model_uri=uri, model_sha256=sha256(models.mlp), model_dir=tmp_path / "c")
    assert s.plane.state == "ready", s.plane.reason
    assert files.hits["/mlp.onnx"] == 1
    body = {
        "inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 16], "data": [1] * 16}]
    }
    assert (await s.client.post(s.infer_url(), json=body)).status_code == 200
    # A restart with the same checksum finds the verified file in the cache.
    again = await serve(model_uri=uri, model_sha256=sha256(models.mlp), model_dir=tmp_path / "c")
    assert again.plane.state == "ready"
    assert files.hits["/mlp.onnx"] == 1
    assert not list((tmp_path / "c").glob("*.part"))


async def test_http_retries_then_succeeds(
    serve: ServeFactory, files: _Files, tmp_path: Path
) -> None:
    files.failures["/mlp.onnx"] = [503, 500]
    s = await serve(model_uri=f"{files.url}/mlp.onnx", model_dir=tmp_path / "c", download_retries=2)
    assert s.plane.state == "ready", s.plane.reason
    assert files.hits["/mlp.onnx"] == 3


async def test_http_failures_are_reported(
    serve: ServeFactory, files: _Files, tmp_path: Path
) -> None:
    s = await serve(model_uri=f"{files.url}/missing.onnx", model_dir=tmp_path / "c")
    assert s.plane.state == "failed"
    assert files.hits["/missing.onnx"] == 1  # a 404 is not retried
    r = await s.client.get("/v2/health/ready")
    assert "HTTP 404" in r.json()["error"]

    files.failures["/mlp.onnx"] = [503] * 5
    s = await serve(model_uri=f"{files.url}/mlp.onnx", model_dir=tmp_path / "c", download_retries=1)
    assert s.plane.state == "failed"
    assert "after 2 attempts" in s.plane.reason


def test_http_size_limit(models: Models, files: _Files, tmp_path: Path) -> None:
    with pytest.raises(LoadError, match="over the 100 limit"):
        fetch_model(f"{files.url}/mlp.onnx", sha256=None, model_dir=tmp_path, max_bytes=100)
    assert not list(tmp_path.glob("*"))


def test_http_checksum_mismatch_removes_download(files: _Files, tmp_path: Path) -> None:
    with pytest.raises(LoadError, match="sha256 mismatch"):
        fetch_model(f"{files.url}/mlp.onnx", sha256="1" * 64, model_dir=tmp_path, max_bytes=10**9)
    assert not list(tmp_path.glob("*"))


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("", "no model URI configured"),
        ("/nonexistent/model.onnx", "does not exist"),
        ("ftp://host/model.onnx", "unsupported model URI scheme 'ftp'"),
    ],
)
def test_bad_uris(uri: str, message: str, tmp_path: Path) -> None:
    with pytest.raises(LoadError, match=message):
        fetch_model(uri, sha256=None, model_dir=tmp_path, max_bytes=10**9)


async def test_corrupt_model_fails_with_reason(serve: ServeFactory, tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not a protobuf")
    s = await serve(model_uri=str(bad))
    assert s.plane.state == "failed"
    r = await s.client.get("/v2/health/ready")
    assert r.status_code == 503
    assert "onnxruntime cannot load the model" in r.json()["error"]


async def test_a_gpu_tier_without_cuda_is_never_ready(serve: ServeFactory, models: Models) -> None:
    """The CPU build on a GPU tier: the server stays unready and says why, rather than serving
    on CPU while holding a GPU."""
    s = await serve(model_uri=str(models.mlp), execution_provider="cuda")
    assert s.plane.state == "failed"
    r = await s.client.get("/v2/health/ready")
    assert r.status_code == 503
    assert (
        "load failed: the GPU tier asks for CUDA but this onnxruntime has no" in r.json()["error"]
    )
    assert "MODELROLLOUT_SERVING_IMAGE_GPU" in r.json()["error"]
