"""Credentials out of URIs before a URI is shown or stored (status, events, logs). Pure."""

from __future__ import annotations

from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

__all__ = ["REDACTED", "redact_uri"]

REDACTED = "REDACTED"


def redact_uri(uri: str) -> str:
    """The URI without user:password and with every query value hidden (signed URLs carry
    their secret there: X-Amz-Signature, sig, token...). Safe for status, events and logs."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return "<unparseable URI>"
    netloc = parts.netloc.rsplit("@", 1)[1] if "@" in parts.netloc else parts.netloc
    query = "&".join(f"{quote(k)}={REDACTED}" for k, _ in parse_qsl(parts.query, True))
    return urlunsplit(parts._replace(netloc=netloc, query=query, fragment=""))
