"""API tokens: creation, verification (cached briefly on the hot path) and revocation."""

from __future__ import annotations

import hashlib
import hmac

from onshore import ids
from onshore.errors import NotFound, Unauthenticated
from onshore.models import Token
from onshore.services.clock import Clock
from onshore.store.base import TokenStore

# A verified token is trusted for this long before the store is asked again, so a revocation made by
# another process (`onshore token revoke`) takes effect within about a second.
VERIFY_CACHE_SECONDS = 1.0


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class TokenService:
    def __init__(self, store: TokenStore, clock: Clock) -> None:
        self._store = store
        self._clock = clock
        self._verified: dict[tuple[str, str, str], float] = {}

    def create(self, label: str = "", proxy: bool = False) -> tuple[Token, str]:
        """A new token (a proxy token, for web endpoints' Modal-Key/Modal-Secret headers, if proxy) and its
        secret, which only its hash is stored for."""
        token_id = ids.new_id("proxy_token" if proxy else "token")
        secret = ("ws-" + ids.new_secret()[3:]) if proxy else ids.new_secret()
        token = Token(
            token_id, _hash(secret), self._clock.now(), label=label, kind="proxy" if proxy else "api"
        )
        self._store.put_token(token)
        return token, secret

    def ensure_initial(self) -> tuple[Token, str] | None:
        """Create the first token on a fresh data dir; returns it (with its secret) if it was created."""
        if self._store.list_tokens():
            return None
        return self.create("initial")

    def verify(self, token_id: str, secret: str, kind: str = "api") -> None:
        """Unauthenticated unless the token exists, is of this kind, matches the secret and is not revoked."""
        key = (token_id, secret, kind)
        now = self._clock.monotonic()
        checked = self._verified.get(key)
        if checked is not None and now - checked < VERIFY_CACHE_SECONDS:
            return
        token = self._store.get_token(token_id) if token_id else None
        if token is None or token.kind != kind or not hmac.compare_digest(token.secret_hash, _hash(secret)):
            self._verified.pop(key, None)
            raise Unauthenticated("Invalid token: the token id or secret is wrong (see `onshore token list`)")
        if token.revoked_at is not None:
            self._verified.pop(key, None)
            raise Unauthenticated(f"Token {token_id} has been revoked")
        if len(self._verified) > 10_000:
            self._verified.clear()
        self._verified[key] = now

    def proxy_allowed(self, token_id: str, secret: str) -> bool:
        """Whether a web request's Modal-Key and Modal-Secret are a valid proxy token."""
        try:
            self.verify(token_id, secret, kind="proxy")
        except Unauthenticated:
            return False
        return True

    def active(self, token_id: str, kind: str = "api") -> bool:
        """Whether the token exists, is of this kind and is not revoked (a page session's token)."""
        token = self._store.get_token(token_id) if token_id else None
        return token is not None and token.kind == kind and token.revoked_at is None

    def list(self) -> list[Token]:
        return self._store.list_tokens()

    def revoke(self, token_id: str) -> Token:
        token = self._store.get_token(token_id)
        if token is None:
            raise NotFound(f"Token {token_id} not found")
        if token.revoked_at is None:
            token.revoked_at = self._clock.now()
            self._store.put_token(token)
        self._verified = {k: v for k, v in self._verified.items() if k[0] != token_id}
        return token
