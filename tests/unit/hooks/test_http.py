"""HTTP hook calls against a real local server: 2xx passes, anything else fails with the
answer's first line (redacted, cut short), a slow answer times out, and the platform's policy
decides what may be called at all."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Iterator

import pytest

from hack.receiver import Receiver
from modelrollout.hooks.http import MAX_MESSAGE, call, first_line
from modelrollout.tenancy import TenantPolicy

LOOPBACK = TenantPolicy.model_validate(
    {"hookUrls": ["http://127.0.0.1:*/*"], "allowedNetworks": ["127.0.0.0/8"]}
)
PAYLOAD = {"hook": "smoke", "at": "preRollout"}


@pytest.fixture(scope="module")
def rx() -> Iterator[Receiver]:
    with Receiver() as receiver:
        yield receiver


def run(
    url: str, policy: TenantPolicy = LOOPBACK, limit: float = 5.0, **headers: str
) -> tuple[bool, str]:
    return asyncio.run(call(url, "POST", PAYLOAD, headers, limit, policy))


def test_2xx_passes_and_sends_the_payload_and_headers(rx: Receiver) -> None:
    passed, message = run(rx.url("/status/204/a"), Authorization="Bearer s3cret-value")
    assert (passed, message) == (True, "HTTP 204")
    (got,) = rx.requests_to("/status/204/a")
    assert got.body == PAYLOAD
    assert got.headers["Authorization"] == "Bearer s3cret-value"


def test_an_error_fails_with_the_first_line(rx: Receiver) -> None:
    passed, message = run(rx.url("/status/503/b"))
    assert not passed
    assert message == "HTTP 503: 503 from the receiver"


def test_a_slow_answer_times_out(rx: Receiver) -> None:
    passed, message = run(rx.url("/slow/3/c"), limit=0.5)
    assert (passed, message) == (False, "no answer within 0.5s")


def test_policy_decides_what_may_be_called(rx: Receiver) -> None:
    passed, message = run(rx.url("/status/200/d"), TenantPolicy())
    assert not passed
    assert "policy.hookUrls" in message
    only_urls = TenantPolicy.model_validate({"hookUrls": ["http://127.0.0.1:*/*"]})
    passed, message = run(rx.url("/status/200/d"), only_urls)
    assert not passed
    assert "policy.allowedNetworks" in message
    assert "loopback" in message
    other = TenantPolicy.model_validate(
        {"hookUrls": ["https://ci.example.com/*"], "allowedNetworks": ["127.0.0.0/8"]}
    )
    passed, message = run(rx.url("/status/200/d"), other)
    assert not passed
    assert "is not an allowed hook URL" in message
    assert not rx.requests_to("/status/200/d")


def test_the_checked_address_is_the_one_connected_to(rx: Receiver) -> None:
    """A name resolving to a refused address is refused before any connection."""
    policy = TenantPolicy.model_validate({"hookUrls": ["http://hooks.example.test:*/*"]})

    def resolve(host: str, port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
        return [ipaddress.ip_address("169.254.169.254")]

    url = f"http://hooks.example.test:{rx.port}/status/200/e"
    passed, message = asyncio.run(call(url, "GET", {}, {}, 2.0, policy, resolve))
    assert not passed
    assert "link-local" in message


def test_first_line_is_redacted_and_short() -> None:
    body = (
        b"\n  denied for token abcdefghijklmnopqrstuvwxyz0123456789ABCD and key hunter22\x07\nmore"
    )
    line = first_line(body, ["hunter22"])
    assert line == "denied for token REDACTED and key REDACTED"
    assert len(first_line(b"x " * 1000)) == MAX_MESSAGE
