"""Which reconcile errors mean the API server could not serve (retried once a cache lists
again) rather than something about the object."""

from __future__ import annotations

import httpx2
import pytest
from lightkube import ApiError
from lightkube.models.meta_v1 import Status

from modelrollout.k8s.errors import api_unavailable


def api_error(code: int) -> ApiError:
    return ApiError(status=Status(code=code, message="x"))


def plain(code: int) -> httpx2.HTTPStatusError:
    request = httpx2.Request("GET", "https://127.0.0.1/apis")
    return httpx2.HTTPStatusError("x", request=request, response=httpx2.Response(code))


@pytest.mark.parametrize(
    ("error", "unavailable"),
    [
        (api_error(429), True),  # "storage is (re)initializing", or overload
        (api_error(500), True),  # etcd unreachable behind it
        (api_error(503), True),  # paths not installed yet
        (api_error(504), True),  # etcd timing out
        (api_error(404), False),
        (api_error(409), False),
        (api_error(422), False),
        (api_error(403), False),
        (httpx2.ConnectError("connection refused"), True),
        (plain(503), True),  # an answer that is not a Status object
        (plain(404), False),
        (httpx2.RemoteProtocolError("peer closed connection"), True),
        (ValueError("a bug"), False),
    ],
)
def test_api_unavailable(error: BaseException, unavailable: bool) -> None:
    assert api_unavailable(error) is unavailable
