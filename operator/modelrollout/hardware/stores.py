"""Object stores as plain HTTP requests: which URL to GET and which headers sign it. Pure.

The operator (hardware/fetch.py) and the model server (modelserver/loader.py) both read models
from s3://, gs:// and az:// URIs. Each store is an HTTP API, so no SDK is needed: this module
turns a URI, an optional endpoint and credentials into a request (URL and headers), and parses
the store's listing of a prefix. Sending it is the caller's business (the operator pins
addresses and bounds the download; the server retries). The module uses the standard library
only and is kept byte-identical in both packages (a unit test compares them).

- s3://bucket/key: AWS S3 or any S3-compatible endpoint (MinIO, Ceph, R2...), signed with
  Signature Version 4 from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (/ AWS_SESSION_TOKEN),
  anonymous without them. With an endpoint, path-style addressing (what compatible stores
  expect); without, virtual-hosted at AWS.
- gs://bucket/object: Google Cloud Storage's JSON API, with a bearer token
  (GOOGLE_OAUTH_ACCESS_TOKEN) or anonymous.
- az://account/container/blob: Azure Blob Storage, with a SAS token (AZURE_STORAGE_SAS_TOKEN)
  or a bearer token (AZURE_STORAGE_ACCESS_TOKEN, e.g. from workload identity), or anonymous.
  With an endpoint (Azurite: http://127.0.0.1:10000/devstoreaccount1) the account is in it.

A URI ending in `/` names a directory (a prefix): an ONNX model with its external data files.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import quote, unquote, urlencode, urlsplit

__all__ = [
    "STORE_SCHEMES",
    "Request",
    "StoreError",
    "StoreLocation",
    "list_request",
    "locate",
    "object_request",
    "parse_listing",
    "sign_v4",
]

STORE_SCHEMES = ("s3", "gs", "az")
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
AZURE_VERSION = "2021-08-06"
DEFAULT_REGION = "us-east-1"


class StoreError(ValueError):
    """A store URI, endpoint or listing that cannot be used; the message says why."""


@dataclass(frozen=True, slots=True)
class Request:
    url: str
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StoreLocation:
    """Where a store URI points: the scheme, its container (bucket, or account/container) and
    the key (an object, or a prefix when it ends in `/`)."""

    scheme: str
    bucket: str
    key: str
    account: str = ""

    @property
    def is_prefix(self) -> bool:
        return self.key == "" or self.key.endswith("/")

    def child(self, key: str) -> StoreLocation:
        return StoreLocation(self.scheme, self.bucket, key, self.account)


def locate(uri: str) -> StoreLocation:
    """Split an s3://, gs:// or az:// URI; StoreError when it names no object or prefix."""
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme not in STORE_SCHEMES:
        raise StoreError(f"not an object store URI: {scheme}://")
    if parts.query or parts.fragment:
        raise StoreError(f"{scheme}:// URIs take no query or fragment")
    path = parts.path.lstrip("/")
    if scheme == "az":
        container, _, key = path.partition("/")
        if not parts.netloc or not container:
            raise StoreError("want az://ACCOUNT/CONTAINER/BLOB")
        return StoreLocation(scheme, container, key, account=parts.netloc)
    if not parts.netloc:
        raise StoreError(f"want {scheme}://BUCKET/KEY")
    return StoreLocation(scheme, parts.netloc, path)


def _base(loc: StoreLocation, endpoint: str | None, region: str) -> str:
    """The URL of the bucket (or container), without a trailing slash."""
    if endpoint:
        return endpoint.rstrip("/") + "/" + quote(loc.bucket, safe="")
    if loc.scheme == "s3":
        return f"https://{loc.bucket}.s3.{region}.amazonaws.com"
    if loc.scheme == "gs":
        return "https://storage.googleapis.com"
    return f"https://{loc.account}.blob.core.windows.net/{quote(loc.bucket, safe='')}"


def object_request(
    loc: StoreLocation,
    credentials: Mapping[str, str],
    *,
    endpoint: str | None = None,
    region: str | None = None,
    now: datetime | None = None,
) -> Request:
    """The GET that reads one object."""
    region = region or credentials.get("AWS_REGION") or DEFAULT_REGION
    if loc.scheme == "gs":
        base = endpoint.rstrip("/") if endpoint else _base(loc, None, region)
        url = (
            f"{base}/storage/v1/b/{quote(loc.bucket, safe='')}/o/"
            f"{quote(loc.key, safe='')}?alt=media"
        )
        return Request(url, _bearer(credentials.get("GOOGLE_OAUTH_ACCESS_TOKEN")))
    url = _base(loc, endpoint, region) + "/" + quote(loc.key, safe="/~")
    if loc.scheme == "s3":
        return sign_v4("GET", url, credentials, region=region, now=now)
    return _azure(url, {}, credentials)


def list_request(
    loc: StoreLocation,
    credentials: Mapping[str, str],
    *,
    endpoint: str | None = None,
    region: str | None = None,
    marker: str = "",
    now: datetime | None = None,
) -> Request:
    """The GET that lists the objects under a prefix (one page; `marker` asks for the next)."""
    region = region or credentials.get("AWS_REGION") or DEFAULT_REGION
    if loc.scheme == "gs":
        base = endpoint.rstrip("/") if endpoint else _base(loc, None, region)
        query = {"prefix": loc.key} | ({"pageToken": marker} if marker else {})
        query_text = urlencode(query, quote_via=quote)
        url = f"{base}/storage/v1/b/{quote(loc.bucket, safe='')}/o?{query_text}"
        return Request(url, _bearer(credentials.get("GOOGLE_OAUTH_ACCESS_TOKEN")))
    if loc.scheme == "s3":
        query = {"list-type": "2", "prefix": loc.key}
        if marker:
            query["continuation-token"] = marker
        query_text = urlencode(sorted(query.items()), quote_via=quote)
        url = f"{_base(loc, endpoint, region)}/?{query_text}"
        return sign_v4("GET", url, credentials, region=region, now=now)
    query = {"restype": "container", "comp": "list", "prefix": loc.key}
    if marker:
        query["marker"] = marker
    return _azure(_base(loc, endpoint, region), query, credentials)


def parse_listing(scheme: str, body: bytes) -> tuple[list[tuple[str, int]], str]:
    """(key, size) of each object in one page of a listing, and the marker of the next page
    ("" when it was the last)."""
    try:
        if scheme == "gs":
            doc = json.loads(body)
            items = [(str(i["name"]), int(i.get("size", 0))) for i in doc.get("items", [])]
            return items, str(doc.get("nextPageToken", ""))
        # Bounded by the caller; expat (2.4+) refuses entity-expansion bombs.
        root = ET.fromstring(body)
    except (ValueError, KeyError, TypeError, ET.ParseError) as e:
        raise StoreError(f"unreadable {scheme} listing: {type(e).__name__}") from None
    for el in root.iter():  # namespaces differ by store and version
        el.tag = el.tag.rsplit("}", 1)[-1]
    if scheme == "s3":
        items = [
            (c.findtext("Key", ""), int(c.findtext("Size", "0") or 0))
            for c in root.iter("Contents")
        ]
        token = root.findtext("NextContinuationToken", "")
        return items, token if root.findtext("IsTruncated", "") == "true" else ""
    items = [
        (b.findtext("Name", ""), int(b.findtext("Properties/Content-Length", "0") or 0))
        for b in root.iter("Blob")
    ]
    return items, root.findtext("NextMarker", "") or ""


def _bearer(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def _azure(url: str, query: dict[str, str], credentials: Mapping[str, str]) -> Request:
    headers = {"x-ms-version": AZURE_VERSION}
    sas = credentials.get("AZURE_STORAGE_SAS_TOKEN", "").lstrip("?")
    parts = [urlencode(query, quote_via=quote)] if query else []
    if sas:
        parts.append(sas)
    else:
        headers |= _bearer(credentials.get("AZURE_STORAGE_ACCESS_TOKEN"))
    return Request(url + ("?" + "&".join(parts) if parts else ""), headers)


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def _canonical_query(query: str) -> str:
    pairs = []
    for item in query.split("&") if query else []:
        key, _, value = item.partition("=")
        pairs.append((_aws_quote(key), _aws_quote(value)))
    return "&".join(f"{k}={v}" for k, v in sorted(pairs))


def _aws_quote(text: str) -> str:
    return quote(unquote(text), safe="-_.~")


def sign_v4(
    method: str,
    url: str,
    credentials: Mapping[str, str],
    *,
    region: str,
    service: str = "s3",
    now: datetime | None = None,
) -> Request:
    """The request with AWS Signature Version 4 headers; unsigned without an access key (a
    public bucket). The payload is empty (GET), so its hash is the empty string's."""
    access_key = credentials.get("AWS_ACCESS_KEY_ID", "")
    secret_key = credentials.get("AWS_SECRET_ACCESS_KEY", "")
    if not access_key or not secret_key:
        return Request(url, {})
    parts = urlsplit(url)
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    day = stamp[:8]
    headers = {
        "host": parts.netloc,
        "x-amz-content-sha256": EMPTY_SHA256,
        "x-amz-date": stamp,
    }
    if token := credentials.get("AWS_SESSION_TOKEN"):
        headers["x-amz-security-token"] = token
    names = sorted(headers)
    canonical = "\n".join(
        [
            method,
            parts.path or "/",
            _canonical_query(parts.query),
            "".join(f"{n}:{headers[n].strip()}\n" for n in names),
            ";".join(names),
            EMPTY_SHA256,
        ]
    )
    scope = f"{day}/{region}/{service}/aws4_request"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = _hmac(("AWS4" + secret_key).encode(), day)
    for part in (region, service, "aws4_request"):
        key = _hmac(key, part)
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["Authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, "
        f"SignedHeaders={';'.join(names)}, Signature={signature}"
    )
    del headers["host"]  # the HTTP client sends it (the operator sets it to the pinned host)
    return Request(url, headers)
