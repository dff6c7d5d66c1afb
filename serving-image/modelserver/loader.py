"""Fetch the model file and verify its checksum before anything loads it."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import httpx

from . import identity, stores
from .redact import redact_uri, scrub

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
BACKOFF_S = 0.5  # doubled per retry, capped at 5 s
MAX_LIST_PAGES = 100  # of a store prefix: up to 100,000 objects


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
    """Where a download is kept: a file, or a directory for a prefix (ends in `/`)."""
    key = sha256 or hashlib.sha256(uri.encode()).hexdigest()
    path = urlparse(uri).path
    name = Path(path).name or ("model" if path.endswith("/") else "model.onnx")
    return model_dir / f"{key[:16]}-{name}"


def _download_http(
    uri: str,
    dest: Path,
    *,
    max_bytes: int,
    retries: int,
    timeout_s: float,
    headers: Mapping[str, str] | None = None,
    shown: str | None = None,
) -> None:
    """GET `uri` into `dest`, with retries; `shown` is the URI messages name (a store URI
    rather than the signed URL sent)."""
    shown = shown or uri
    last: Exception | None = None
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(min(BACKOFF_S * 2 ** (attempt - 1), 5.0))
        try:
            _download_http_once(
                uri, dest, max_bytes=max_bytes, timeout_s=timeout_s, headers=headers, shown=shown
            )
            return
        except _PermanentError as exc:
            raise LoadError(str(exc)) from None
        except (httpx.HTTPError, OSError) as exc:
            last = exc
            log.warning(
                "download attempt %d of %s failed: %s",
                attempt + 1,
                redact_uri(shown),
                scrub(scrub(str(exc), uri), shown),
            )
    reason = scrub(str(last), uri) if last else ""
    raise LoadError(f"download of {shown} failed after {retries + 1} attempts: {reason}")


class _PermanentError(Exception):
    """A failure that retrying cannot fix (4xx, size limit)."""


def _download_http_once(
    uri: str,
    dest: Path,
    *,
    max_bytes: int,
    timeout_s: float,
    headers: Mapping[str, str] | None = None,
    shown: str | None = None,
) -> None:
    shown = shown or uri
    dest.parent.mkdir(parents=True, exist_ok=True)
    with httpx.stream(
        "GET", uri, headers=headers, timeout=timeout_s, follow_redirects=True
    ) as resp:
        if 400 <= resp.status_code < 500:
            raise _PermanentError(f"download of {shown} failed: HTTP {resp.status_code}")
        if resp.status_code >= 500:
            raise httpx.HTTPStatusError(
                f"HTTP {resp.status_code}", request=resp.request, response=resp
            )
        declared = resp.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_bytes:
            raise _PermanentError(
                f"model at {shown} is {declared} bytes, over the {max_bytes} limit"
            )
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, suffix=".part")
        tmp = Path(tmp_name)
        try:
            size = 0
            with os.fdopen(fd, "wb") as out:
                for chunk in resp.iter_bytes(_CHUNK):
                    size += len(chunk)
                    if size > max_bytes:
                        raise _PermanentError(
                            f"model at {shown} exceeds the {max_bytes} byte limit"
                        )
                    out.write(chunk)
            tmp.replace(dest)  # atomic: a half-written file is never mistaken for the model
        finally:
            tmp.unlink(missing_ok=True)


def _store_get(
    loc: stores.StoreLocation,
    dest: Path,
    store: _Store,
    *,
    max_bytes: int,
    retries: int,
    timeout_s: float,
) -> None:
    request = stores.object_request(
        loc, store.credentials, endpoint=store.endpoint, region=store.region
    )
    _download_http(
        request.url,
        dest,
        max_bytes=max_bytes,
        retries=retries,
        timeout_s=timeout_s,
        headers=request.headers,
        shown=store.uri,
    )


def _store_list(
    loc: stores.StoreLocation, store: _Store, timeout_s: float
) -> list[tuple[str, int]]:
    items: list[tuple[str, int]] = []
    marker = ""
    for _ in range(MAX_LIST_PAGES):
        request = stores.list_request(
            loc, store.credentials, endpoint=store.endpoint, region=store.region, marker=marker
        )
        try:
            response = httpx.get(request.url, headers=request.headers, timeout=timeout_s)
        except httpx.HTTPError as exc:
            raise LoadError(f"listing {store.uri} failed: {type(exc).__name__}") from None
        if response.status_code != 200:
            raise LoadError(f"listing {store.uri} failed: HTTP {response.status_code}")
        page, marker = stores.parse_listing(loc.scheme, response.content)
        items += page
        if not marker:
            return items
    raise LoadError(f"{store.uri} lists more than {MAX_LIST_PAGES} pages of objects")


def _download_store(
    store: _Store, dest: Path, *, max_bytes: int, retries: int, timeout_s: float
) -> Path:
    """Download an object, or every object under a prefix (a model with its external data
    files, laid out as in the store); return the model file."""
    try:
        loc = stores.locate(store.uri)
        if not loc.is_prefix:
            _store_get(loc, dest, store, max_bytes=max_bytes, retries=retries, timeout_s=timeout_s)
            return dest
        items = [(k, n) for k, n in _store_list(loc, store, timeout_s) if not k.endswith("/")]
    except stores.StoreError as exc:
        raise LoadError(str(exc)) from None
    if sum(n for _, n in items) > max_bytes:
        raise LoadError(f"the objects under {store.uri} are over the {max_bytes} byte limit")
    for key, _ in items:
        relative = key[len(loc.key) :]
        target = (dest / relative).resolve()
        if not target.is_relative_to(dest.resolve()):  # a key like ../../etc stays inside
            raise LoadError(f"object {key!r} would land outside the model directory")
        _store_get(
            loc.child(key),
            target,
            store,
            max_bytes=max_bytes,
            retries=retries,
            timeout_s=timeout_s,
        )
    return _only_model(dest)


def _only_model(directory: Path) -> Path:
    """The one .onnx file at the top of a model directory."""
    found = sorted(directory.glob("*.onnx"))
    if len(found) != 1:
        names = ", ".join(p.name for p in found[:5]) or "none"
        raise LoadError(f"want exactly one .onnx file in {directory.name}/ (found: {names})")
    return found[0]


@dataclass(frozen=True)
class _Store:
    uri: str
    endpoint: str | None
    region: str | None
    credentials: dict[str, str]


def fetch_model(
    uri: str,
    *,
    sha256: str | None,
    model_dir: Path,
    max_bytes: int,
    retries: int = 3,
    timeout_s: float = 60.0,
    endpoint: str | None = None,
    region: str | None = None,
    env: Mapping[str, str] | None = None,
) -> tuple[Path, str]:
    """Return a local path to the verified model and its sha256.

    A directory (a path or a store prefix ending in `/`) holds one .onnx file and its external
    data. Store credentials come from `env` (the process environment by default).
    Failures never show the URI's credentials: the message may reach /v2/health/ready.
    """
    try:
        if not uri:
            raise LoadError("no model URI configured (MODELSERVER_MODEL_URI)")
        scheme = urlparse(uri).scheme.lower()
        if scheme in stores.STORE_SCHEMES:
            try:
                creds = identity.credentials(scheme, os.environ if env is None else env)
            except identity.IdentityError as exc:
                raise LoadError(str(exc)) from None
            store = _Store(uri, endpoint, region, creds)
            return _fetch_cached(uri, sha256, model_dir, store, max_bytes, retries, timeout_s)
        return _fetch_model(uri, sha256, model_dir, max_bytes, retries, timeout_s)
    except LoadError as exc:
        raise LoadError(scrub(str(exc), uri)) from None


def _fetch_model(
    uri: str, sha256: str | None, model_dir: Path, max_bytes: int, retries: int, timeout_s: float
) -> tuple[Path, str]:
    parsed = urlparse(uri)
    scheme = parsed.scheme.lower()
    if scheme in ("", "file"):
        path = Path(unquote(parsed.path) if scheme == "file" else uri)
        if path.is_dir():  # a mounted volume or image: the model with its external data
            path = _only_model(path)
        if not path.is_file():
            raise LoadError(f"model file {path} does not exist")
        return path, verify(path, sha256)
    if scheme in ("http", "https"):
        return _fetch_cached(uri, sha256, model_dir, None, max_bytes, retries, timeout_s)
    raise LoadError(f"unsupported model URI scheme {scheme!r} in {uri}")


def _fetch_cached(
    uri: str,
    sha256: str | None,
    model_dir: Path,
    store: _Store | None,
    max_bytes: int,
    retries: int,
    timeout_s: float,
) -> tuple[Path, str]:
    dest = _cache_path(model_dir, uri, sha256)
    if sha256 is not None and dest.exists():
        try:
            cached = _only_model(dest) if dest.is_dir() else dest
            return cached, verify(cached, sha256)
        except LoadError:
            _remove(dest)  # stale or corrupt cache entry: fetch again
    if store is not None:
        path = _download_store(
            store, dest, max_bytes=max_bytes, retries=retries, timeout_s=timeout_s
        )
    else:
        _download_http(uri, dest, max_bytes=max_bytes, retries=retries, timeout_s=timeout_s)
        path = dest
    try:
        return path, verify(path, sha256)
    except LoadError:
        _remove(dest)
        raise


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def fetch_reference(uri: str, **kwargs: Any) -> tuple[Path, str]:
    """The reference profile, fetched and verified like the model; errors say which file."""
    try:
        return fetch_model(uri, **kwargs)
    except LoadError as exc:
        raise LoadError(f"reference profile: {exc}") from None
