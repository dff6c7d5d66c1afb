"""Credentials out of model URIs before they reach a log line or a response.

A model URI may carry a password (``https://user:pass@host/...``) or a signed query
(``?X-Amz-Signature=...``, Azure ``sig=``, GCS ``X-Goog-Signature=``): every query value is
treated as a secret, since which parameters sign a URL differs by store.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

MASK = "REDACTED"


def redact_uri(uri: str) -> str:
    """The URI with its password and every query value replaced by ``REDACTED``."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return MASK  # not parseable: nothing of it can be shown safely
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:{MASK}@{host}" if ":" in userinfo else f"{MASK}@{host}"
    query = "&".join(f"{key}={MASK}" for key, _ in parse_qsl(parts.query, keep_blank_values=True))
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def secrets_of(uri: str) -> list[str]:
    """The substrings of ``uri`` that must never be shown, longest first."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return [uri]
    found: list[str] = []
    if "@" in parts.netloc:
        userinfo = parts.netloc.rsplit("@", 1)[0]
        found.append(userinfo)
        if ":" in userinfo:
            found.append(userinfo.split(":", 1)[1])
    if parts.query:
        found.append(parts.query)
        # Short values (a date part, a flag) are no secret, and masking them would garble text.
        found.extend(v for _, v in parse_qsl(parts.query) if len(v) >= 4)
    found.extend([unquote(s) for s in found])  # error messages may show the decoded form
    return sorted({s for s in found if s}, key=len, reverse=True)


def scrub(text: str, uri: str) -> str:
    """``text`` (an error message, perhaps quoting the URI in some form) without its secrets."""
    if not uri:
        return text
    text = text.replace(uri, redact_uri(uri))
    for secret in secrets_of(uri):
        text = text.replace(secret, MASK)
    return text
