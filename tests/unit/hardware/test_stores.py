"""Object stores: the requests (SigV4 checked against botocore's signer, GCS and Azure by their
documented shapes), listings, and the operator's reads from a real S3-compatible server under
its policy."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from hack.models import write_mlp
from hack.s3server import ACCESS_KEY, SECRET_KEY, S3Server
from modelrollout.hardware import stores
from modelrollout.hardware.errors import (
    ModelUnreachableError,
    RefusedByPolicyError,
    UnsupportedModelUriError,
)
from modelrollout.hardware.fetch import StoreAccess, profile_uri
from modelrollout.tenancy import TenantPolicy

REPO = Path(__file__).resolve().parents[3]
KEYS = {"AWS_ACCESS_KEY_ID": "AKID", "AWS_SECRET_ACCESS_KEY": "se/cret+key"}
LOOPBACK = TenantPolicy(allowed_networks=["127.0.0.0/8"])


def test_the_two_copies_are_the_same() -> None:
    operator = REPO / "operator" / "modelrollout" / "hardware" / "stores.py"
    server = REPO / "serving-image" / "modelserver" / "stores.py"
    assert operator.read_bytes() == server.read_bytes(), "copy one stores.py over the other"


def _botocore(url: str, credentials: dict[str, str]) -> tuple[str, datetime]:
    request = AWSRequest("GET", url, headers={"x-amz-content-sha256": stores.EMPTY_SHA256})
    creds = Credentials(
        credentials["AWS_ACCESS_KEY_ID"],
        credentials["AWS_SECRET_ACCESS_KEY"],
        credentials.get("AWS_SESSION_TOKEN"),
    )
    S3SigV4Auth(creds, "s3", "eu-west-3").add_auth(request)
    stamp = datetime.strptime(request.headers["X-Amz-Date"], "%Y%m%dT%H%M%SZ")
    return request.headers["Authorization"], stamp.replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("uri", "endpoint", "marker", "token"),
    [
        ("s3://bkt/dir/model v1.onnx", None, "", ""),
        ("s3://bkt/a/b~c+d.onnx", "http://127.0.0.1:9000", "", "session/token="),
        ("s3://bkt/dir/", "https://minio.example.com/base", "next page/1", ""),
    ],
)
def test_sigv4_matches_botocore(uri: str, endpoint: str | None, marker: str, token: str) -> None:
    credentials = KEYS | ({"AWS_SESSION_TOKEN": token} if token else {})
    loc = stores.locate(uri)

    def request(now: datetime | None = None) -> stores.Request:
        if loc.is_prefix:
            return stores.list_request(
                loc, credentials, endpoint=endpoint, region="eu-west-3", marker=marker, now=now
            )
        return stores.object_request(
            loc, credentials, endpoint=endpoint, region="eu-west-3", now=now
        )

    expected, stamp = _botocore(request().url, credentials)
    ours = request(stamp)
    assert ours.headers["Authorization"] == expected
    assert ours.headers.get("x-amz-security-token", "") == token
    if endpoint:
        assert ours.url.startswith(f"{endpoint}/bkt/")  # path style for compatible stores
    else:
        assert ours.url.startswith("https://bkt.s3.eu-west-3.amazonaws.com/")


def test_no_keys_no_signature() -> None:
    request = stores.object_request(stores.locate("s3://public/m.onnx"), {})
    assert request.headers == {}


def test_gcs_and_azure_requests() -> None:
    gs = stores.object_request(
        stores.locate("gs://bkt/dir/m.onnx"), {"GOOGLE_OAUTH_ACCESS_TOKEN": "ya29.x"}
    )
    assert gs.url == "https://storage.googleapis.com/storage/v1/b/bkt/o/dir%2Fm.onnx?alt=media"
    assert gs.headers == {"Authorization": "Bearer ya29.x"}
    az = stores.object_request(
        stores.locate("az://acct/models/dir/m.onnx"), {"AZURE_STORAGE_SAS_TOKEN": "?sv=1&sig=s"}
    )
    assert az.url == "https://acct.blob.core.windows.net/models/dir/m.onnx?sv=1&sig=s"
    assert az.headers == {"x-ms-version": stores.AZURE_VERSION}
    listing = stores.list_request(
        stores.locate("az://acct/models/dir/"),
        {"AZURE_STORAGE_ACCESS_TOKEN": "eyJ"},
        endpoint="http://127.0.0.1:10000/devstoreaccount1",
    )
    assert listing.url == (
        "http://127.0.0.1:10000/devstoreaccount1/models?restype=container&comp=list&prefix=dir%2F"
    )
    assert listing.headers["Authorization"] == "Bearer eyJ"


@pytest.mark.parametrize(
    "uri", ["s3://", "s3:///key", "gs://b/k?x=1", "az://acct", "http://h/m.onnx"]
)
def test_bad_store_uris(uri: str) -> None:
    with pytest.raises(stores.StoreError):
        stores.locate(uri)


def test_listings() -> None:
    s3 = (
        b'<?xml version="1.0"?><ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
        b"<IsTruncated>true</IsTruncated><NextContinuationToken>t2</NextContinuationToken>"
        b"<Contents><Key>d/m.onnx</Key><Size>10</Size></Contents>"
        b"<Contents><Key>d/w.bin</Key><Size>20</Size></Contents></ListBucketResult>"
    )
    assert stores.parse_listing("s3", s3) == ([("d/m.onnx", 10), ("d/w.bin", 20)], "t2")
    gs = b'{"items": [{"name": "d/m.onnx", "size": "7"}]}'
    assert stores.parse_listing("gs", gs) == ([("d/m.onnx", 7)], "")
    az = (
        b"<EnumerationResults><Blobs><Blob><Name>d/m.onnx</Name><Properties>"
        b"<Content-Length>5</Content-Length></Properties></Blob></Blobs><NextMarker/>"
        b"</EnumerationResults>"
    )
    assert stores.parse_listing("az", az) == ([("d/m.onnx", 5)], "")
    with pytest.raises(stores.StoreError, match="unreadable s3 listing"):
        stores.parse_listing("s3", b"<not xml")


# --- the operator reads a real S3-compatible server -----------------------------------------


@pytest.fixture(scope="module")
def s3_model(s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    path = tmp_path_factory.mktemp("s3model") / "model.onnx"
    sha = write_mlp(path, seed=7)
    uri = s3_server.put("profile", "fraud/v1/model.onnx", path.read_bytes())
    s3_server.put("profile", "fraud/v1/weights.bin", b"\0" * 64)
    s3_server.put("profile", "two/a.onnx", path.read_bytes())
    s3_server.put("profile", "two/b.onnx", path.read_bytes())
    return uri, sha


def _access(server: S3Server, secret: str = SECRET_KEY) -> StoreAccess:
    keys = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": secret}
    return StoreAccess(server.endpoint, None, keys)


def test_operator_profiles_from_s3(s3_server: S3Server, s3_model: tuple[str, str]) -> None:
    uri, sha = s3_model
    profile = profile_uri(uri, policy=LOOPBACK, store=_access(s3_server), cache=None)
    assert profile.sha256 == sha
    # A prefix: the one .onnx file under it (its external data is the server's to fetch).
    prefix = profile_uri("s3://profile/fraud/v1/", policy=LOOPBACK, store=_access(s3_server))
    assert prefix.sha256 == sha
    with pytest.raises(ModelUnreachableError, match=r"exactly one \.onnx .*a\.onnx, b\.onnx"):
        profile_uri("s3://profile/two/", policy=LOOPBACK, store=_access(s3_server), cache=None)


def test_unsigned_read_of_a_private_bucket_fails(
    s3_server: S3Server, s3_model: tuple[str, str]
) -> None:
    uri, _ = s3_model
    anonymous = StoreAccess(s3_server.endpoint)
    with pytest.raises(ModelUnreachableError, match="HTTP 403 Forbidden"):
        profile_uri(uri, policy=LOOPBACK, store=anonymous, cache=None)


def test_the_endpoint_is_checked_like_any_address(
    s3_server: S3Server, s3_model: tuple[str, str]
) -> None:
    """The endpoint is tenant input: a loopback (or private) store is reachable only where the
    platform's policy lists its network."""
    uri, _ = s3_model
    with pytest.raises(RefusedByPolicyError, match=r"allowedNetworks: 127\.0\.0\.1 is a loopback"):
        profile_uri(uri, policy=TenantPolicy(), store=_access(s3_server), cache=None)
    no_s3 = TenantPolicy(allowed_networks=["127.0.0.0/8"], model_uri_schemes=["https"])
    with pytest.raises(RefusedByPolicyError, match="scheme 's3' is not allowed"):
        profile_uri(uri, policy=no_s3, store=_access(s3_server), cache=None)


def test_mounted_stores_are_not_read_by_the_operator() -> None:
    with pytest.raises(UnsupportedModelUriError, match=r"set spec\.hardware\.mode"):
        profile_uri("oci://registry.example.com/models/fraud:v1", cache=None)


# --- GCS and Azure by their request shapes -------------------------------------------------


class _Recorder(BaseHTTPRequestHandler):
    body = b""
    seen: ClassVar[list[tuple[str, dict[str, str]]]] = []

    def do_GET(self) -> None:
        self.seen.append((self.path, dict(self.headers.items())))
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def recorder(tmp_path: Path) -> Iterator[tuple[str, list[tuple[str, dict[str, str]]], str]]:
    path = tmp_path / "m.onnx"
    sha = write_mlp(path)
    seen: list[tuple[str, dict[str, str]]] = []
    handler = type("H", (_Recorder,), {"body": path.read_bytes(), "seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen, sha
    finally:
        server.shutdown()
        server.server_close()


def test_gcs_and_azure_reads(recorder: tuple[str, list[tuple[str, dict[str, str]]], str]) -> None:
    base, seen, sha = recorder
    gs = StoreAccess(base, None, {"GOOGLE_OAUTH_ACCESS_TOKEN": "ya29.tok"})
    assert profile_uri("gs://bkt/d/m.onnx", policy=LOOPBACK, store=gs, cache=None).sha256 == sha
    path, headers = seen[-1]
    assert path == "/storage/v1/b/bkt/o/d%2Fm.onnx?alt=media"
    assert headers["Authorization"] == "Bearer ya29.tok"
    az = StoreAccess(f"{base}/acct", None, {"AZURE_STORAGE_SAS_TOKEN": "sv=2022&sig=abc"})
    assert profile_uri("az://acct/c/d/m.onnx", policy=LOOPBACK, store=az, cache=None).sha256 == sha
    path, headers = seen[-1]
    assert path == "/acct/c/d/m.onnx?sv=2022&sig=abc"
    assert headers["x-ms-version"] == stores.AZURE_VERSION
