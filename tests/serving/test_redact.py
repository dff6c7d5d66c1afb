"""Credentials never shown: the URI forms a model store uses."""

from __future__ import annotations

import pytest

from modelserver.redact import redact_uri, scrub


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        ("https://models.example/m.onnx", "https://models.example/m.onnx"),
        ("https://u:p4ss@models.example/m.onnx", "https://u:REDACTED@models.example/m.onnx"),
        ("https://t0ken@models.example/m.onnx", "https://REDACTED@models.example/m.onnx"),
        (
            "https://b.s3.amazonaws.com/m.onnx?X-Amz-Credential=AKIA1&X-Amz-Signature=abcd",
            "https://b.s3.amazonaws.com/m.onnx?X-Amz-Credential=REDACTED&X-Amz-Signature=REDACTED",
        ),
        ("https://a.blob.core.windows.net/c/m.onnx?sv=2020&sig=zzz%2Fq", None),
        ("s3://bucket/key/m.onnx", "s3://bucket/key/m.onnx"),
        ("/models/m.onnx", "/models/m.onnx"),
    ],
)
def test_redact_uri(uri: str, shown: str | None) -> None:
    redacted = redact_uri(uri)
    if shown is not None:
        assert redacted == shown
    assert "p4ss" not in redacted
    assert "zzz" not in redacted
    assert "abcd" not in redacted


def test_scrub_finds_the_secrets_in_any_form() -> None:
    uri = "https://alice:s%40cret@h.example/m.onnx?X-Amz-Signature=deadbeef01"
    message = (
        f"failed for url '{uri}'; decoded password s@cret; signature deadbeef01 "
        "at h.example (1 attempt)"
    )
    out = scrub(message, uri)
    for secret in ("s%40cret", "s@cret", "deadbeef01"):
        assert secret not in out
    assert "alice:REDACTED@h.example" in out
    assert "(1 attempt)" in out  # short query values and ordinary text are left alone
