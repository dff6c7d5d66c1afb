"""Domain errors of the data plane, free of any protocol.

Each transport maps them once: REST to HTTP status codes (rest.py), gRPC to status codes.
"""

from __future__ import annotations


class ServingError(Exception):
    """A request that cannot be answered; ``message`` is safe to send to the client."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequestError(ServingError):
    """The request is malformed or does not fit the model (the client's fault)."""


class UnauthenticatedError(ServingError):
    """No valid credentials."""


class NotFoundError(ServingError):
    """Unknown model, version or route."""


class TooLargeError(ServingError):
    """The request exceeds a size or memory limit."""


class OverloadedError(ServingError):
    """Too many requests in flight; the client should retry later."""


class NotReadyError(ServingError):
    """The model is loading, failed to load, or the server is shutting down."""


class InferenceFailedError(ServingError):
    """The server failed to run a valid request (ours, not the client's fault)."""
