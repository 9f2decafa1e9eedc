"""Signed, expiring result URLs: HMAC-SHA256 over the generation id and the expiry time.

A result URL is a capability: whoever holds it may download that one file until it expires,
without an API key (Oxen's result URLs behave the same, and players and `<video>` tags cannot
send headers). The secret lives in `<data dir>/url-signing.key` (created 0600 on first start)
or `LTX_URL_SECRET`, so URLs survive restarts and several API processes agree.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from pathlib import Path
from urllib.parse import urlencode

from server.core.paths import DataPaths


class URLSigner:
    """Makes and checks `?expires=<unix>&signature=<hex>` for a generation id."""

    def __init__(self, secret: bytes, ttl_seconds: float):
        if len(secret) < 16:
            raise ValueError("URL signing secret must be at least 16 bytes")
        self._secret = secret
        self.ttl_seconds = ttl_seconds

    @classmethod
    def from_data_dir(cls, data_dir: Path, ttl_seconds: float) -> URLSigner:
        """Use `LTX_URL_SECRET`, else the key file under the data dir (created when missing)."""
        env = os.environ.get("LTX_URL_SECRET")
        if env:
            return cls(env.encode(), ttl_seconds)
        path = DataPaths(data_dir).signing_key
        if not path.exists():
            data_dir.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as handle:
                    handle.write(secrets.token_hex(32))
            except FileExistsError:  # another process won the race; use its key
                pass
        return cls(path.read_text().strip().encode(), ttl_seconds)

    def signature(self, generation_id: str, expires: int) -> str:
        message = f"{generation_id}:{expires}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def query(self, generation_id: str, now: float | None = None) -> str:
        """The query string for a fresh URL to this generation's result."""
        expires = int((time.time() if now is None else now) + self.ttl_seconds)
        return urlencode({"expires": expires, "signature": self.signature(generation_id, expires)})

    def verify(self, generation_id: str, expires: str | int, signature: str, now: float | None = None) -> bool:
        """True when the signature matches and the URL has not expired."""
        try:
            expires_at = int(expires)
        except (TypeError, ValueError):
            return False
        if expires_at < (time.time() if now is None else now):
            return False
        return hmac.compare_digest(self.signature(generation_id, expires_at), signature or "")
