"""A local S3-compatible store: moto's server mode (`moto[server]` from PyPI), on 127.0.0.1.

`make demo` serves the examples' models from it and the tests read s3:// models from it, so the
s3:// path (the operator's SigV4 requests, the model server's download) runs against a real
S3 API rather than a rewritten file:// URI. Uploads go through boto3 (installed with moto):
the operator and the model server never use it.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from hack.processes import die_with_parent, free_port

ACCESS_KEY = "modelrollout-demo"
SECRET_KEY = "modelrollout-demo-secret"
REGION = "us-east-1"


class S3Server:
    """`python -m moto.server` on a free loopback port, stopped on exit."""

    def __init__(self, log_path: Path, port: int | None = None, host: str = "127.0.0.1") -> None:
        self.log_path = log_path
        self.host = host
        self.port = port or free_port()
        self.popen: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> S3Server:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self, timeout: float = 60.0) -> None:
        with self.log_path.open("ab") as out:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", self.host, "-p", str(self.port)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=die_with_parent,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"moto server exited: see {self.log_path}")
            try:
                httpx.get(f"{self.endpoint}/moto-api/", timeout=1.0)
                return
            except httpx.HTTPError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"moto server did not answer within {timeout:g}s")

    def stop(self) -> None:
        if self.popen is None:
            return
        self.popen.terminate()
        try:
            self.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
        self.popen = None

    def client(self) -> Any:
        return client(self.endpoint)

    def put(self, bucket: str, key: str, body: bytes) -> str:
        """Store `body` at s3://bucket/key (the bucket is created when missing); return the URI."""
        return put(self.endpoint, f"s3://{bucket}/{key}", body)


def client(endpoint: str) -> Any:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
    )


def put(endpoint: str, uri: str, body: bytes) -> str:
    """Store `body` at the s3:// `uri` on the server at `endpoint` (its bucket created when
    missing); return the URI. Anonymous reads are refused, as by a real private bucket."""
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    s3 = client(endpoint)
    if bucket not in {b["Name"] for b in s3.list_buckets().get("Buckets", [])}:
        s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key=key, Body=body)
    return uri
