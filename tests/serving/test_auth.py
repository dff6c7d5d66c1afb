"""Bearer-token auth read from a file; probes and metrics stay open."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelserver.auth import TokenFile

from .conftest import Models, ServeFactory

BODY = {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 16], "data": [0.0] * 16}]}


async def test_token_required(serve: ServeFactory, models: Models, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret-token\n")  # Secrets often end in a newline
    s = await serve(model_uri=str(models.mlp), token_file=token)
    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": "s3cret-token"},
        {"Authorization": "Basic s3cret-token"},
        {"Authorization": "Bearer s3cret-tokenX"},
    ):
        for method, url in (
            ("GET", "/v2"),
            ("GET", "/v2/models/mlp"),
            ("GET", "/v2/models/mlp/ready"),
            ("POST", s.infer_url()),
        ):
            r = await s.client.request(
                method, url, headers=headers, json=BODY if method == "POST" else None
            )
            assert r.status_code == 401, (headers, url)
            assert r.json() == {"error": "missing or invalid bearer token"}
    good = {"Authorization": "Bearer s3cret-token"}
    assert (await s.client.get("/v2/models/mlp", headers=good)).status_code == 200
    assert (await s.client.post(s.infer_url(), json=BODY, headers=good)).status_code == 200
    # Probes need no token: the kubelet does not carry one.
    assert (await s.client.get("/v2/health/live")).status_code == 200
    assert (await s.client.get("/v2/health/ready")).status_code == 200
    # Metrics have their own port (scraped without a token); the main port does not serve them.
    assert (await s.client.get("/metrics", headers=good)).status_code == 404


async def test_metrics_on_the_main_port_need_the_token(
    serve: ServeFactory, models: Models, tmp_path: Path
) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret-token")
    s = await serve(model_uri=str(models.mlp), token_file=token, metrics_port=0)
    assert (await s.client.get("/metrics")).status_code == 401
    r = await s.client.get("/metrics", headers={"Authorization": "Bearer s3cret-token"})
    assert r.status_code == 200
    assert "modelserver_model_info" in r.text
    open_server = await serve(model_uri=str(models.mlp), metrics_port=0)
    assert (await open_server.client.get("/metrics")).status_code == 200


async def test_unknown_model_hidden_behind_auth(
    serve: ServeFactory, models: Models, tmp_path: Path
) -> None:
    token = tmp_path / "token"
    token.write_text("t")
    s = await serve(model_uri=str(models.mlp), token_file=token)
    r = await s.client.post("/v2/models/other/infer", json=BODY)
    assert r.status_code == 401  # no probing for model names without a token


def test_token_rotation_and_unreadable_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(TokenFile, "_RECHECK_S", -1.0)
    path = tmp_path / "token"
    path.write_text("one")
    tokens = TokenFile(path)
    assert tokens.allows(b"Bearer one")
    path.write_text("two")
    import os

    os.utime(path, (1, 1))  # a new mtime even on coarse-grained filesystems
    assert not tokens.allows(b"Bearer one")
    assert tokens.allows(b"Bearer two")
    path.write_text("")
    os.utime(path, (2, 2))
    assert not tokens.allows(b"Bearer ")  # an empty token file admits nobody
    path.unlink()
    assert not tokens.allows(b"Bearer two")  # fail closed
