"""API keys: ``X-API-Key: KEY`` or ``Authorization: Bearer KEY`` (or Basic, password = KEY).

Two scopes: ``score`` (score, feedback, model info, console, OpenAPI) and ``admin``
(reload, feedback export; admin implies score). With no keys configured every
endpoint is open (development). With keys, only /healthz, /readyz and /metrics
answer without one: 401 for a missing or unknown key, 403 for the wrong scope.

Keys are compared through SHA-256 digests with ``hmac.compare_digest`` against every
configured key, so neither the key nor its position leaks through timing, and a key
is never logged or echoed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

from serve.errors import ApiError

OPEN_ENDPOINTS = frozenset({"api.healthz", "api.readyz", "api.metrics"})
RANK = {"score": 1, "admin": 2}


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()


class KeyRing:
    """The configured keys as digests, and the check a request must pass."""

    def __init__(self, keys: dict[str, str]):
        self._keys = [(_digest(k), scope) for k, scope in keys.items()]

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def scope_of(self, presented: str | None) -> str | None:
        """The scope of a presented key, or None; constant time in the key."""
        if presented is None:
            return None
        digest = _digest(presented)
        found = None
        for known, scope in self._keys:  # no early exit
            if hmac.compare_digest(digest, known):
                found = scope
        return found

    def require(self, headers, needed: str, challenge: str = "Bearer") -> str | None:
        """Raise 401/403 unless ``headers`` carry a key of scope ``needed`` (or higher)."""
        if not self.enabled:
            return None
        presented = presented_key(headers)
        www = {"WWW-Authenticate": f'{challenge} realm="triage"'}
        if presented is None:
            raise ApiError(401, "missing_api_key",
                           "an API key is required: send it in X-API-Key or Authorization: Bearer", None, www)
        scope = self.scope_of(presented)
        if scope is None:
            raise ApiError(401, "invalid_api_key", "the API key is not valid", None, www)
        if RANK[scope] < RANK[needed]:
            raise ApiError(403, "insufficient_scope", f"this endpoint needs a key with scope '{needed}'")
        return scope


def presented_key(headers) -> str | None:
    """The key from X-API-Key, or ``Authorization: Bearer``/``Basic`` (password part)."""
    key = headers.get("X-API-Key")
    if key:
        return key.strip()
    auth = headers.get("Authorization", "")
    scheme, _, value = auth.strip().partition(" ")
    scheme = scheme.lower()
    value = value.strip()
    if scheme == "bearer" and value:
        return value
    if scheme == "basic" and value:
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return None
        _, sep, password = decoded.partition(":")
        return password if sep and password else None
    return None
