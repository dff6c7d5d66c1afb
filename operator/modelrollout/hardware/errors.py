"""Errors raised while fetching or profiling a model.

Each class carries a `reason` suitable for a Kubernetes condition reason (CamelCase), and the
message says what was wrong in words a user can act on.
"""

from __future__ import annotations

from typing import ClassVar


class ProfileError(Exception):
    """Base class: the model could not be profiled."""

    reason: ClassVar[str] = "ProfileFailed"

    def __init__(self, message: str, *, uri: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.uri = uri

    def __str__(self) -> str:
        return f"{self.uri}: {self.message}" if self.uri else self.message


class ModelUnreachableError(ProfileError):
    """The model could not be fetched: missing file, HTTP error, timeout, refused connection."""

    reason = "ModelUnreachable"


class UnsupportedModelUriError(ProfileError):
    """The URI scheme is not one the profiler can read."""

    reason = "UnsupportedModelURI"


class ModelTooLargeError(ProfileError):
    """The model is larger than the configured size limit."""

    reason = "ModelTooLarge"


class CorruptModelError(ProfileError):
    """The bytes are not a well-formed protobuf message (truncated, bad varint, bad wire type)."""

    reason = "CorruptModel"

    def __init__(self, message: str, *, offset: int | None = None, uri: str | None = None) -> None:
        if offset is not None:
            message = f"{message} (at byte {offset})"
        super().__init__(message, uri=uri)
        self.offset = offset


class NotOnnxModelError(CorruptModelError):
    """Well-formed enough to read, but not an ONNX ModelProto (e.g. no graph)."""

    reason = "NotOnnxModel"


class ChecksumMismatchError(ProfileError):
    """The bytes read do not hash to the expected sha256."""

    reason = "ChecksumMismatch"

    def __init__(self, expected: str, actual: str, *, uri: str | None = None) -> None:
        super().__init__(
            f"sha256 mismatch: expected {expected}, got {actual}; the file changed or the "
            "checksum in the spec is wrong",
            uri=uri,
        )
        self.expected = expected
        self.actual = actual


class RefusedByPolicyError(ProfileError):
    """The platform's policy (operator settings) does not let tenants' models be read from
    there; `rule` names the setting, as the message does."""

    reason = "RefusedByPolicy"

    def __init__(self, rule: str, message: str, *, uri: str | None = None) -> None:
        super().__init__(message, uri=uri)
        self.rule = rule


class ProfileInterruptedError(ProfileError):
    """Earlier reads of this model never finished (the operator stopped during them)."""

    reason = "ProfileInterrupted"
