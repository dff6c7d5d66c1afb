"""Fetch the model file and verify its checksum before anything loads it."""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import httpx

from .redact import redact_uri, scrub

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
BACKOFF_S = 0.5  # doubled per retry, capped at 5 s


class LoadError(Exception):
    """The model cannot be fetched or does not match its checksum; the message says why."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify(path: Path, expected: str | None) -> str:
    """Return the file's sha256; raise LoadError when it differs from ``expected``."""
    actual = sha256_file(path)
    if expected is not None and actual != expected:
        raise LoadError(f"sha256 mismatch for {path.name}: expected {expected}, got {actual}")
    return actual


def _cache_path(model_dir: Path, uri: str, sha256: str | None) -> Path:
    key = sha256 or hashlib.sha256(uri.encode()).hexdigest()
    name = Path(urlparse(uri).path).name or "model.onnx"
    return model_dir / f"{key[:16]}-{name}"


def _download_http(uri: str, dest: Path, *, max_bytes: int, retries: int, timeout_s: float) -> None:
    last: Exception | None = None
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(min(BACKOFF_S * 2 ** (attempt - 1), 5.0))
        try:
            _download_http_once(uri, dest, max_bytes=max_bytes, timeout_s=timeout_s)
            return
        except _PermanentError as exc:
            raise LoadError(str(exc)) from None
        except (httpx.HTTPError, OSError) as exc:
            last = exc
            log.warning(
                "download attempt %d of %s failed: %s",
                attempt + 1,
                redact_uri(uri),
                scrub(str(exc), uri),
            )
    raise LoadError(f"download of {uri} failed after {retries + 1} attempts: {last}")


class _PermanentError(Exception):
    """A failure that retrying cannot fix (4xx, size limit)."""


def _download_http_once(uri: str, dest: Path, *, max_bytes: int, timeout_s: float) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    with httpx.stream("GET", uri, timeout=timeout_s, follow_redirects=True) as resp:
        if 400 <= resp.status_code < 500:
            raise _PermanentError(f"download of {uri} failed: HTTP {resp.status_code}")
        resp.raise_for_status()
        declared = resp.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_bytes:
            raise _PermanentError(f"model at {uri} is {declared} bytes, over the {max_bytes} limit")
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, suffix=".part")
        tmp = Path(tmp_name)
        try:
            size = 0
            with os.fdopen(fd, "wb") as out:
                for chunk in resp.iter_bytes(_CHUNK):
                    size += len(chunk)
                    if size > max_bytes:
                        raise _PermanentError(f"model at {uri} exceeds the {max_bytes} byte limit")
                    out.write(chunk)
            tmp.replace(dest)  # atomic: a half-written file is never mistaken for the model
        finally:
            tmp.unlink(missing_ok=True)


def _download_s3(uri: str, dest: Path) -> None:
    try:
        import boto3  # type: ignore[import-not-found, import-untyped, unused-ignore]
    except ImportError:
        raise LoadError(
            "s3:// model URIs need boto3: install modelserver[s3] in the image"
        ) from None
    parsed = urlparse(uri)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(dest.suffix + ".part")
    try:
        boto3.client("s3").download_file(parsed.netloc, parsed.path.lstrip("/"), str(tmp))
        tmp.replace(dest)
    except Exception as exc:  # boto3 raises many unrelated types
        raise LoadError(f"download of {uri} failed: {exc}") from None
    finally:
        tmp.unlink(missing_ok=True)


def fetch_model(
    uri: str,
    *,
    sha256: str | None,
    model_dir: Path,
    max_bytes: int,
    retries: int = 3,
    timeout_s: float = 60.0,
) -> tuple[Path, str]:
    """Return a local path to the verified model and its sha256.

    Failures never show the URI's credentials: the message may reach /v2/health/ready.
    """
    try:
        return _fetch_model(uri, sha256, model_dir, max_bytes, retries, timeout_s)
    except LoadError as exc:
        raise LoadError(scrub(str(exc), uri)) from None


def _fetch_model(
    uri: str, sha256: str | None, model_dir: Path, max_bytes: int, retries: int, timeout_s: float
) -> tuple[Path, str]:
    if not uri:
        raise LoadError("no model URI configured (MODELSERVER_MODEL_URI)")
    parsed = urlparse(uri)
    scheme = parsed.scheme.lower()
    if scheme in ("", "file"):
        path = Path(unquote(parsed.path) if scheme == "file" else uri)
        if not path.is_file():
            raise LoadError(f"model file {path} does not exist")
        return path, verify(path, sha256)
    if scheme in ("http", "https", "s3"):
        dest = _cache_path(model_dir, uri, sha256)
        if sha256 is not None and dest.is_file():
            try:
                return dest, verify(dest, sha256)
            except LoadError:
                dest.unlink(missing_ok=True)  # stale or corrupt cache entry: fetch again
        if scheme == "s3":
            _download_s3(uri, dest)
        else:
            _download_http(uri, dest, max_bytes=max_bytes, retries=retries, timeout_s=timeout_s)
        try:
            return dest, verify(dest, sha256)
        except LoadError:
            dest.unlink(missing_ok=True)
            raise
    raise LoadError(f"unsupported model URI scheme {scheme!r} in {uri}")


def fetch_reference(uri: str, **kwargs: Any) -> tuple[Path, str]:
    """The reference profile, fetched and verified like the model; errors say which file."""
    try:
        return fetch_model(uri, **kwargs)
    except LoadError as exc:
        raise LoadError(f"reference profile: {exc}") from None
