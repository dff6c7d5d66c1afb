"""Model bytes fetched under the platform's policy: the I/O edge that feeds the profiler.

The profiler (`profiler.profile_stream`) is a pure parser of chunks; this module decides what
may be read and how long it may take. A tenant writes the URI, so everything here assumes it
is hostile (tenancy.TenantPolicy holds the rules):

- the scheme and host must be allowed; a bare path or `file://` opens a file in the operator's
  own pod, so it is off unless the policy lists `file` (an operator run outside a cluster);
- every address a host resolves to must be public or inside `allowedNetworks` (no cloud
  metadata, no loopback, no cluster-internal services), and the connection goes to the address
  that was checked, so a second DNS answer cannot swap it;
- redirects are followed by hand, each target checked like the first URI;
- the bytes counted are the bytes on the wire: nothing is decompressed (a compressed body is
  refused), and the whole download has one deadline however slowly the server sends;
- messages carry the URI with credentials removed, and never the server's reply body.
"""

from __future__ import annotations

import http
import ipaddress
import os
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import unquote, urljoin, urlsplit

from modelrollout.redact import redact_uri
from modelrollout.tenancy import IPAddress, PolicyError, TenantPolicy

from . import stores
from .errors import (
    ChecksumMismatchError,
    ModelTooLargeError,
    ModelUnreachableError,
    ProfileError,
    RefusedByPolicyError,
    UnsupportedModelUriError,
)
from .profiler import (
    DEFAULT_CACHE,
    DEFAULT_CHUNK_SIZE,
    ModelProfile,
    ProfileCache,
    ProfileLimits,
    normalize_sha256,
    profile_stream,
)

if TYPE_CHECKING:
    import httpx

__all__ = ["StoreAccess", "open_model", "pin", "profile_uri", "redact_uri"]

Resolver = Callable[[str, int], list[IPAddress]]

# Listing a prefix (a model with external data): pages read, and bytes per page.
MAX_LIST_PAGES = 10
MAX_LIST_BYTES = 4 << 20
# Stores the operator cannot read: a volume in the tenant's namespace, an image in a registry.
MOUNTED_SCHEMES = ("pvc", "oci")


@dataclass(frozen=True)
class StoreAccess:
    """How to reach an object store (s3, gs, az): the spec's endpoint and region (tenant
    input, checked like any URI) and the credentials of the spec's Secret, when the policy
    lets the operator read it (policy.readModelCredentials)."""

    endpoint: str | None = None
    region: str | None = None
    credentials: Mapping[str, str] = field(default_factory=dict)


def _resolve(host: str, port: int) -> list[IPAddress]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise ModelUnreachableError(f"cannot resolve host {host!r}: {e.strerror}") from None
    return list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))


def _policy(check: Callable[..., None], *args: object) -> None:
    """Run one of the policy's checks, its refusal as the profiler's error."""
    try:
        check(*args)
    except PolicyError as e:
        raise RefusedByPolicyError(e.rule, str(e)) from None


@contextmanager
def open_model(
    uri: str,
    policy: TenantPolicy,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    headers: Mapping[str, str] | None = None,
    resolve: Resolver = _resolve,
    store: StoreAccess | None = None,
) -> Iterator[Iterator[bytes]]:
    """The model's bytes as chunks, within the policy's limits; raises ProfileError subclasses.

    `resolve` maps a host to its addresses (tests give a fixed answer)."""
    parts = urlsplit(uri)
    scheme = parts.scheme.lower() or "file"
    if scheme in MOUNTED_SCHEMES:
        raise UnsupportedModelUriError(
            f"the operator does not read {scheme}:// models (the pods mount them): "
            "set spec.hardware.mode to cpu or gpu"
        )
    _policy(policy.check_scheme, scheme)
    deadline = time.monotonic() + policy.fetch_deadline_seconds
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise UnsupportedModelUriError(f"file URI with remote host {parts.netloc!r}")
        path = unquote(parts.path) if parts.scheme else uri
        with _open_file(path, policy.max_model_bytes, chunk_size) as chunks:
            yield _bounded(chunks, policy, deadline)
    elif scheme in ("http", "https"):
        with _open_http(uri, policy, headers or {}, resolve) as chunks:
            yield _bounded(chunks, policy, deadline)
    elif scheme in stores.STORE_SCHEMES:
        request = _store_request(uri, policy, store or StoreAccess(), resolve)
        with _open_http(request.url, policy, request.headers, resolve) as chunks:
            yield _bounded(chunks, policy, deadline)
    else:
        raise UnsupportedModelUriError(
            f"unsupported URI scheme {scheme!r}: the profiler reads file://, paths, http(s)://, "
            "s3://, gs:// and az://"
        )


def _store_request(
    uri: str, policy: TenantPolicy, store: StoreAccess, resolve: Resolver
) -> stores.Request:
    """The signed GET of the model in an object store; for a prefix (a model with external
    data), of the one .onnx file listed under it."""
    try:
        loc = stores.locate(uri)
        if loc.is_prefix:
            loc = loc.child(_only_model(loc, policy, store, resolve))
        return stores.object_request(
            loc, store.credentials, endpoint=store.endpoint, region=store.region
        )
    except stores.StoreError as e:
        raise UnsupportedModelUriError(str(e)) from None


def _only_model(
    loc: stores.StoreLocation, policy: TenantPolicy, store: StoreAccess, resolve: Resolver
) -> str:
    keys: list[str] = []
    marker = ""
    for _ in range(MAX_LIST_PAGES):
        request = stores.list_request(
            loc, store.credentials, endpoint=store.endpoint, region=store.region, marker=marker
        )
        body = bytearray()
        with _open_http(request.url, policy, request.headers, resolve) as chunks:
            for chunk in chunks:
                body += chunk
                if len(body) > MAX_LIST_BYTES:
                    raise ModelTooLargeError(f"the listing of {loc.key} is too long")
        items, marker = stores.parse_listing(loc.scheme, bytes(body))
        keys += [
            key for key, _ in items if key.endswith(".onnx") and "/" not in key[len(loc.key) :]
        ]
        if not marker:
            break
    if len(keys) != 1:
        found = ", ".join(k.rsplit("/", 1)[-1] for k in keys[:5]) or "none"
        raise ModelUnreachableError(
            f"want exactly one .onnx file under the prefix {loc.key or '/'} (found: {found})"
        )
    return keys[0]


def _bounded(chunks: Iterator[bytes], policy: TenantPolicy, deadline: float) -> Iterator[bytes]:
    """Byte limit and whole-download deadline, checked as each piece arrives."""
    seen = 0
    for chunk in chunks:
        seen += len(chunk)
        if seen > policy.max_model_bytes:
            raise ModelTooLargeError(
                f"model is over the {policy.max_model_bytes}-byte limit (policy.maxModelBytes)"
            )
        if time.monotonic() > deadline:
            raise ModelUnreachableError(
                f"not done after {policy.fetch_deadline_seconds:g}s "
                f"(policy.fetchDeadlineSeconds; {seen} bytes read)"
            )
        yield chunk


@contextmanager
def _open_file(path: str, max_bytes: int, chunk_size: int) -> Iterator[Iterator[bytes]]:
    try:
        f = open(path, "rb", buffering=0)  # noqa: SIM115 - closed below, after streaming
    except FileNotFoundError:
        raise ModelUnreachableError(f"model file {path} does not exist") from None
    except IsADirectoryError:
        raise ModelUnreachableError(f"model path {path} is a directory, not a file") from None
    except OSError as e:
        raise ModelUnreachableError(f"cannot open model file {path}: {e.strerror}") from None
    with f:
        size = os.fstat(f.fileno()).st_size
        if size > max_bytes:
            raise ModelTooLargeError(f"model is {size} bytes, over the {max_bytes}-byte limit")
        yield _read_chunks(f.read, chunk_size)


def _read_chunks(read: Callable[[int], bytes], chunk_size: int) -> Iterator[bytes]:
    # A generator, not iter(callable, b""): measured 3x faster end to end on large models.
    while chunk := read(chunk_size):
        yield chunk


def _pinned(url: str, policy: TenantPolicy, resolve: Resolver) -> tuple[str, str, str]:
    """Check scheme, host and every address of `url`; return (URL to the checked address,
    Host header, TLS server name)."""
    import httpx

    parts = httpx.URL(url)
    scheme, host = parts.scheme, parts.host
    _policy(policy.check_scheme, scheme)
    if scheme not in ("http", "https") or not host:
        raise RefusedByPolicyError(
            "modelUriSchemes", f"refused by policy.modelUriSchemes: cannot fetch {scheme}"
        )
    _policy(policy.check_host, host)
    return pin(url, policy, resolve)


def pin(url: str, policy: TenantPolicy, resolve: Resolver = _resolve) -> tuple[str, str, str]:
    """Every address `url`'s host resolves to must be public or in `allowedNetworks`; return
    (URL to the checked address, Host header, TLS server name), so the connection goes where
    the check looked. The caller checked the scheme and host against its own rule. Blocking
    (name resolution)."""
    import httpx

    parts = httpx.URL(url)
    host = parts.host
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        addresses = resolve(host, port)
    if not addresses:
        raise ModelUnreachableError(f"host {host!r} has no address")
    for address in addresses:
        _policy(policy.check_address, host, address)
    header = host if parts.port is None else f"{host}:{parts.port}"
    if ":" in host:
        header = f"[{host}]" if parts.port is None else f"[{host}]:{parts.port}"
    return str(parts.copy_with(host=str(addresses[0]))), header, host


@contextmanager
def _open_http(
    uri: str, policy: TenantPolicy, headers: Mapping[str, str], resolve: Resolver
) -> Iterator[Iterator[bytes]]:
    import httpx  # the pure parser and file path need no HTTP stack

    timeout = httpx.Timeout(policy.read_timeout_seconds)
    # No proxies from the environment: the address checked must be the one connected to.
    with ExitStack() as stack:
        client = stack.enter_context(httpx.Client(timeout=timeout, trust_env=False))
        url = uri
        try:
            for hop in range(policy.max_redirects + 1):
                target, host_header, sni = _pinned(url, policy, resolve)
                request = client.build_request(
                    "GET",
                    target,
                    headers={**headers, "Host": host_header, "Accept-Encoding": "identity"},
                    extensions={"sni_hostname": sni},
                )
                response = client.send(request, stream=True)
                stack.callback(response.close)
                location = response.headers.get("location")
                if response.is_redirect and location:
                    if hop == policy.max_redirects:
                        raise RefusedByPolicyError(
                            "maxRedirects",
                            f"refused by policy.maxRedirects: more than {policy.max_redirects} "
                            "redirects",
                        )
                    url = urljoin(url, location)
                    headers = {}  # credentials meant for one host are not sent to the next
                    continue
                yield _body(response, policy)
                return
        except httpx.TimeoutException as e:
            raise ModelUnreachableError(
                f"no answer within {policy.read_timeout_seconds:g}s "
                f"(policy.readTimeoutSeconds; {type(e).__name__})"
            ) from None
        except httpx.HTTPError as e:
            raise ModelUnreachableError(f"cannot fetch model: {type(e).__name__}") from None


def _body(response: httpx.Response, policy: TenantPolicy) -> Iterator[bytes]:
    status = response.status_code
    if status >= 300:
        # The server's own reason phrase and body are never repeated: they are its text.
        try:
            phrase = http.HTTPStatus(status).phrase
        except ValueError:
            phrase = "unknown status"
        raise ModelUnreachableError(f"HTTP {status} {phrase} from {response.url.host}")
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        shown = encoding if encoding in ("gzip", "deflate", "br", "zstd", "compress") else "?"
        raise ModelUnreachableError(
            f"the server sent the model compressed (Content-Encoding {shown}); the operator "
            "does not decompress downloads: serve the file as stored"
        )
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > policy.max_model_bytes:
        raise ModelTooLargeError(
            f"server declares {declared} bytes, over the {policy.max_model_bytes}-byte limit "
            "(policy.maxModelBytes)"
        )
    return _raw_chunks(response)


def _raw_chunks(response: httpx.Response) -> Iterator[bytes]:
    import httpx

    try:
        # iter_raw without a chunk size yields each read as it arrives, so the deadline is
        # checked even when the server sends a byte at a time.
        yield from response.iter_raw()
    except httpx.TimeoutException:
        raise ModelUnreachableError("the server went silent while sending the model") from None
    except httpx.HTTPError as e:
        raise ModelUnreachableError(f"download failed: {type(e).__name__}") from None


def profile_uri(
    uri: str,
    expected_sha256: str | None = None,
    *,
    policy: TenantPolicy | None = None,
    headers: Mapping[str, str] | None = None,
    dim_overrides: Mapping[str, int] | None = None,
    cache: ProfileCache | None = DEFAULT_CACHE,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    resolve: Resolver = _resolve,
    store: StoreAccess | None = None,
) -> ModelProfile:
    """Fetch and profile the model at `uri` under `policy` (the secure defaults when None).

    With `expected_sha256`, a cached profile is returned without reading anything, and the
    bytes read must hash to it (ChecksumMismatchError otherwise). Blocking: call it from a
    worker thread in async code. Errors carry the URI with its credentials removed.
    """
    policy = policy or TenantPolicy()
    expected = normalize_sha256(expected_sha256) if expected_sha256 else None
    if cache is not None and expected is not None:
        hit = cache.get(expected, dim_overrides)
        if hit is not None:
            return hit
    limits = ProfileLimits(
        max_nodes=policy.profile_max_nodes, memory_bytes=policy.profile_memory_bytes
    )
    try:
        with open_model(
            uri, policy, chunk_size=chunk_size, headers=headers, resolve=resolve, store=store
        ) as c:
            profile = profile_stream(c, dim_overrides=dim_overrides, limits=limits)
        if expected is not None and profile.sha256 != expected:
            raise ChecksumMismatchError(expected, profile.sha256)
    except ProfileError as e:
        e.uri = e.uri or redact_uri(uri)
        raise
    if cache is not None:
        cache.put(profile)
    return profile
