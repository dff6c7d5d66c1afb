"""The model server reads s3:// models from a real S3-compatible server (moto): one object, a
prefix holding a model with external data, credentials from a Secret's keys or exchanged from a
workload identity token at STS; and a mounted directory (a PVC or an OCI image volume)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from hack.models import write_mlp
from hack.s3server import ACCESS_KEY, SECRET_KEY, S3Server
from modelserver import identity
from modelserver.loader import LoadError, fetch_model
from modelserver.runtime import Runtime

KEYS = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}


def _external_data_model(directory: Path) -> Path:
    """y = x @ W with W (64 x 8 floats) stored in weights.bin beside the model."""
    weights = numpy_helper.from_array(np.ones((64, 8), dtype=np.float32), "W")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])],
        "ext",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])],
        initializer=[weights],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = directory / "model.onnx"
    onnx.save_model(
        model, str(path), save_as_external_data=True, location="weights.bin", size_threshold=0
    )
    return path


def _load(uri: str, tmp_path: Path, env: dict[str, str], sha256: str | None = None) -> Path:
    path, _ = fetch_model(
        uri,
        sha256=sha256,
        model_dir=tmp_path / "cache",
        max_bytes=1 << 20,
        retries=0,
        endpoint=None if not uri.startswith("s3") else env.pop("_ENDPOINT"),
        env=env,
    )
    return path


def test_one_object_signed(s3_server: S3Server, tmp_path: Path) -> None:
    source = tmp_path / "m.onnx"
    sha = write_mlp(source, seed=3)
    uri = s3_server.put("serving", "one/model.onnx", source.read_bytes())
    env = KEYS | {"_ENDPOINT": s3_server.endpoint}
    path = _load(uri, tmp_path, env, sha)
    assert path.read_bytes() == source.read_bytes()
    with pytest.raises(LoadError, match="HTTP 403") as info:
        _load(uri, tmp_path / "anonymous", {"_ENDPOINT": s3_server.endpoint})
    assert SECRET_KEY not in str(info.value)


def test_a_prefix_with_external_data_is_fetched_whole(s3_server: S3Server, tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    model = _external_data_model(source)
    for f in source.iterdir():
        s3_server.put("serving", f"ext/v1/{f.name}", f.read_bytes())
    env = KEYS | {"_ENDPOINT": s3_server.endpoint}
    path = _load("s3://serving/ext/v1/", tmp_path, env)
    assert path.name == model.name
    assert (path.parent / "weights.bin").is_file()
    runtime = Runtime(path)
    (y,) = runtime.session.run(None, {"x": np.ones((1, 64), dtype=np.float32)})
    assert y.tolist() == [[64.0] * 8]


def test_workload_identity_exchanged_at_sts(s3_server: S3Server, tmp_path: Path) -> None:
    """IRSA: a projected token and a role, exchanged at STS (moto's) for session keys."""
    token = tmp_path / "token"
    token.write_text("eyJhbGciOiJSUzI1NiJ9.e30.sig")
    env = {
        "AWS_WEB_IDENTITY_TOKEN_FILE": str(token),
        "AWS_ROLE_ARN": "arn:aws:iam::123456789012:role/model-reader",
        "AWS_ENDPOINT_URL_STS": s3_server.endpoint,
    }
    found = identity.credentials("s3", env)
    assert found["AWS_ACCESS_KEY_ID"]
    assert found["AWS_SESSION_TOKEN"]
    source = tmp_path / "m.onnx"
    write_mlp(source, seed=4)
    uri = s3_server.put("serving", "irsa/model.onnx", source.read_bytes())
    path = _load(uri, tmp_path, env | {"_ENDPOINT": s3_server.endpoint})
    assert path.read_bytes() == source.read_bytes()
    with pytest.raises(identity.IdentityError, match="cannot read the projected token"):
        identity.credentials("s3", env | {"AWS_WEB_IDENTITY_TOKEN_FILE": str(tmp_path / "no")})


def test_a_mounted_directory(tmp_path: Path) -> None:
    """pvc:// and oci:// models reach the server as a directory holding one .onnx file."""
    mounted = tmp_path / "mnt"
    mounted.mkdir()
    model = _external_data_model(mounted)
    path = _load(f"file://{mounted}/", tmp_path, {})
    assert path == model
    (mounted / "other.onnx").write_bytes(model.read_bytes())
    with pytest.raises(LoadError, match=r"exactly one \.onnx file .*model\.onnx, other\.onnx"):
        _load(f"file://{mounted}/", tmp_path, {})
