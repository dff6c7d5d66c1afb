"""The checked-in messages are what grpcio-tools generates from the checked-in proto."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PROTO_DIR = Path(__file__).parents[2] / "serving-image" / "modelserver" / "proto"
GENERATED = ("grpc_predict_v2_pb2.py", "grpc_predict_v2_pb2.pyi")


def test_generated_messages_match_the_proto(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{PROTO_DIR}",
            f"--python_out={tmp_path}",
            f"--pyi_out={tmp_path}",
            "grpc_predict_v2.proto",
        ],
        check=True,
        capture_output=True,
    )
    for name in GENERATED:
        assert (tmp_path / name).read_text() == (PROTO_DIR / name).read_text(), (
            f"{name} is stale: run `make protos` (grpcio-tools as pinned in requirements-dev.txt)"
        )
