"""An HTTP hook call, under the platform's policy: the URL must match `policy.hookUrls`, every
address its host resolves to must pass `allowedNetworks` (the model fetcher's address pinning:
the connection goes to the address that was checked), no proxies from the environment, no
redirects followed, one deadline for the whole call. What comes back for status is the HTTP
status and the first line of the answer, redacted and cut short."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable, Mapping
from typing import Any

import httpx

from modelrollout.hardware.errors import ProfileError
from modelrollout.hardware.fetch import Resolver, pin
from modelrollout.redact import REDACTED
from modelrollout.tenancy import PolicyError, TenantPolicy

__all__ = ["MAX_MESSAGE", "call", "first_line"]

# Characters of the answer's first line kept for status; bytes of the answer read at most.
MAX_MESSAGE = 200
_MAX_BODY = 4096
# Long runs of token characters (API keys, JWTs, signatures) are hidden whatever they are.
_TOKENISH = re.compile(r"[A-Za-z0-9+/_=.-]{32,}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def first_line(body: bytes, secrets: Iterable[str] = ()) -> str:
    """The first non-blank line of an answer, safe for status: the request's own header values
    and anything token-like replaced, control characters dropped, at most MAX_MESSAGE long."""
    text = body[:_MAX_BODY].decode("utf-8", errors="replace")
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    for secret in sorted((s for s in secrets if len(s) >= 4), key=len, reverse=True):
        line = line.replace(secret, REDACTED)
    line = _CONTROL.sub("", _TOKENISH.sub(REDACTED, line))
    return line if len(line) <= MAX_MESSAGE else line[: MAX_MESSAGE - 3] + "..."


async def call(
    url: str,
    method: str,
    payload: Mapping[str, Any],
    headers: Mapping[str, str],
    limit: float,
    policy: TenantPolicy,
    resolve: Resolver | None = None,
) -> tuple[bool, str]:
    """(passed, message): any 2xx passes; anything else, a refusal or no answer in time fails."""
    try:
        policy.check_hook_url(url)
        args = (url, policy) if resolve is None else (url, policy, resolve)
        target, host_header, sni = await asyncio.wait_for(asyncio.to_thread(pin, *args), limit)
    except PolicyError as e:
        return False, str(e)
    except ProfileError as e:
        return False, str(e).replace("model", "hook")
    except TimeoutError:
        return False, f"no answer within {limit:g}s (resolving the host)"
    sent = {
        **headers,
        "Host": host_header,
        "User-Agent": "modelrollout-hook",
        "Accept-Encoding": "identity",
    }
    try:
        async with (
            asyncio.timeout(limit),
            httpx.AsyncClient(timeout=limit, trust_env=False) as client,
        ):
            request = client.build_request(
                method,
                target,
                headers=sent,
                json=None if method == "GET" else dict(payload),
                extensions={"sni_hostname": sni},
            )
            response = await client.send(request, stream=True)
            try:
                body = await _head(response)
            finally:
                await response.aclose()
    except (TimeoutError, httpx.TimeoutException):
        return False, f"no answer within {limit:g}s"
    except httpx.HTTPError as e:
        return False, f"cannot call the hook: {type(e).__name__}"
    status = response.status_code
    if 200 <= status < 300:
        return True, f"HTTP {status}"
    line = first_line(body, headers.values())
    return False, f"HTTP {status}: {line}" if line else f"HTTP {status}"


async def _head(response: httpx.Response) -> bytes:
    """At most _MAX_BODY bytes of the answer: an endless body costs nothing more."""
    body = b""
    async for chunk in response.aiter_raw():
        body += chunk
        if len(body) >= _MAX_BODY:
            break
    return body[:_MAX_BODY]
