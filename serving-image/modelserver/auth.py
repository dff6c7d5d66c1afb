"""Bearer-token authentication shared by every transport."""

from __future__ import annotations

import hmac
import logging
import os
import time
from pathlib import Path

log = logging.getLogger(__name__)


class TokenFile:
    """A bearer token kept in a file (a mounted Secret) and re-read when the file changes."""

    _RECHECK_S = 1.0

    def __init__(self, path: Path) -> None:
        self.path = path
        self._token: bytes | None = None
        self._mtime: float | None = None
        self._checked = 0.0
        self._reload()

    def _reload(self) -> None:
        try:
            mtime = os.stat(self.path).st_mtime
            if mtime != self._mtime:
                token = self.path.read_bytes().strip()
                self._token = token or None
                self._mtime = mtime
        except OSError as exc:
            log.error("cannot read token file %s: %s; refusing all requests", self.path, exc)
            self._token, self._mtime = None, None

    def allows(self, header: bytes | None) -> bool:
        now = time.monotonic()
        if now - self._checked > self._RECHECK_S:
            self._checked = now
            self._reload()
        token = self._token
        if token is None or header is None or not header.startswith(b"Bearer "):
            return False  # an unreadable or empty token file admits nobody
        return hmac.compare_digest(header[7:].strip(), token)
