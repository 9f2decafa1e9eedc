"""API keys: where they come from, and which owner a request belongs to.

Each key maps to an owner id; jobs, events and result files are scoped to that owner, so two
keys never see each other's work. Keys are held only as SHA-256 digests in memory, and owners
are either the name given in the key file (`name:key`) or a digest prefix -- never the key.

With no keys configured the server is single-user: every request is owner `local`, and only
clients on a loopback address are served (unless `--insecure`).
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass
from pathlib import Path

LOCAL_OWNER = "local"


class KeyConfigError(ValueError):
    """The key file or variable is unusable."""


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _parse_entry(entry: str) -> tuple[str, str] | None:
    entry = entry.strip()
    if not entry or entry.startswith("#"):
        return None
    name, sep, key = entry.partition(":")
    if sep and name and key and " " not in name:
        return name.strip(), key.strip()
    return "key-" + _digest(entry)[:12], entry


@dataclass(frozen=True)
class KeyRing:
    """The configured keys as digest -> owner."""

    owners_by_digest: dict[str, str]

    @classmethod
    def load(cls, keys_file: str = "", keys_env: str = "") -> KeyRing:
        """Keys from a file (one per line) and/or a comma-separated string."""
        entries: list[str] = []
        if keys_file:
            path = Path(keys_file).expanduser()
            try:
                entries += path.read_text().splitlines()
            except OSError as exc:
                raise KeyConfigError(f"cannot read the API keys file {path}: {exc.strerror}") from None
        if keys_env:
            entries += keys_env.split(",")
        owners: dict[str, str] = {}
        for entry in entries:
            parsed = _parse_entry(entry)
            if parsed is None:
                continue
            name, key = parsed
            if len(key) < 8:
                raise KeyConfigError(f"API key for {name!r} is shorter than 8 characters")
            owners[_digest(key)] = name
        return cls(owners)

    @property
    def enabled(self) -> bool:
        return bool(self.owners_by_digest)

    def owner_for(self, authorization: str | None) -> str | None:
        """The owner of a `Bearer <key>` header, or None when missing or unknown."""
        if not authorization:
            return None
        scheme, _, key = authorization.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            return None
        # A dict lookup on the digest: the secret itself is never compared byte by byte.
        return self.owners_by_digest.get(_digest(key.strip()))


def is_loopback(host: str | None) -> bool:
    """True for 127.0.0.0/8, ::1 and `localhost`; false for anything else or unknown."""
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback
