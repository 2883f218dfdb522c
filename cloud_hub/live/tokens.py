"""Short-lived tokens that let a browser open ``/v1/live/events``.

A browser's ``EventSource`` cannot send headers, so it cannot present an API key the
way every other client does. Instead a page (or its backend) that holds a ``read`` key
calls ``POST /v1/live/token`` with it and gets a token valid for ``HUB_LIVE_TOKEN_TTL_S``
(60 s by default); the token goes in the stream's URL (``?token=...``) or, for a page
served from the hub's own origin, in the ``HttpOnly`` cookie the same call sets. Only the
live stream accepts it, and only when it is opened: a stream runs until either side
closes it. A token in a URL may end up in proxy logs and browser history, which is why
it lives a minute and opens nothing else, and why the API key itself never goes in a URL.

A token is ``hlt_`` + base64url(JSON ``{"k": key name, "f": first 8 bytes of the key's
SHA-256, "e": expiry}``) + ``.`` + base64url(HMAC-SHA-256 of that part). It is checked
against the configured keys when it is used, so removing or rotating the key that
minted it revokes it too. The HMAC key is ``HUB_LIVE_TOKEN_SECRET``: hubs behind one
load balancer need the same one; unset, each process picks a random one (then a token
opens streams only on the hub that minted it).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time

from cloud_hub.security.apikeys import ApiKey, Scope, allows

PREFIX = "hlt_"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class LiveTokens:
    """Mints and checks live tokens with one HMAC key."""

    def __init__(self, secret: str | None, ttl_s: int) -> None:
        self._secret = secret.encode() if secret else secrets.token_bytes(32)
        self.ttl_s = ttl_s

    def _sign(self, body: str) -> str:
        return _b64(hmac.new(self._secret, body.encode(), hashlib.sha256).digest())

    def mint(self, key: ApiKey, now: float | None = None) -> tuple[str, int]:
        """A token for ``key`` and its expiry (Unix seconds)."""
        expires = int(now if now is not None else time.time()) + self.ttl_s
        claims = {"k": key.name, "f": key.digest[:8].hex(), "e": expires}
        body = _b64(json.dumps(claims, separators=(",", ":")).encode())
        return f"{PREFIX}{body}.{self._sign(body)}", expires

    def verify(
        self,
        token: str,
        keys: tuple[ApiKey, ...],
        needed: Scope = "read",
        now: float | None = None,
    ) -> ApiKey | None:
        """The key a valid, unexpired token stands for, if it still allows ``needed``."""
        if not token.startswith(PREFIX) or token.count(".") != 1:
            return None
        body, signature = token[len(PREFIX) :].split(".")
        if not hmac.compare_digest(self._sign(body).encode(), signature.encode()):
            return None
        try:
            claims = json.loads(_unb64(body))
            name, fingerprint, expires = str(claims["k"]), str(claims["f"]), int(claims["e"])
        except (ValueError, KeyError, TypeError):
            return None
        if expires <= (now if now is not None else time.time()):
            return None
        for key in keys:
            if key.name == name and hmac.compare_digest(key.digest[:8].hex(), fingerprint):
                return key if allows(key.scope, needed) else None
        return None
