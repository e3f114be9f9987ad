"""Secrets: named and anonymous sets of environment variables injected into containers."""

from __future__ import annotations

import re

from onshore import ids
from onshore.errors import AlreadyExists, InvalidArgument, NotFound
from onshore.models import Secret
from onshore.services.clock import Clock
from onshore.store.base import SecretStore

_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9._-]{0,63}$")
_ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _check_env(env: dict[str, str]) -> None:
    for key in env:
        if not _ENV_KEY_RE.match(key):
            # The message names the key, never a value.
            raise InvalidArgument(f"Secret key {key!r} is not a valid environment variable name")


class SecretService:
    def __init__(self, store: SecretStore, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    def create_anonymous(self, app_id: str, env: dict[str, str], environment: str) -> Secret:
        _check_env(env)
        secret = Secret(
            ids.new_id("secret"), dict(env), self._clock.now(), app_id=app_id, environment=environment
        )
        self._store.put_secret(secret)
        return secret

    def create_named(self, name: str, env: dict[str, str], environment: str, overwrite: bool) -> Secret:
        if not _NAME_RE.match(name):
            raise InvalidArgument(f"Invalid secret name {name!r}: use letters, digits, '.', '-' and '_'")
        _check_env(env)
        existing = self._store.find_secret(name, environment)
        if existing is not None:
            if not overwrite:
                raise AlreadyExists(f"Secret '{name}' already exists")
            existing.env = dict(env)
            self._store.put_secret(existing)
            return existing
        secret = Secret(
            ids.new_id("secret"), dict(env), self._clock.now(), name=name, environment=environment
        )
        self._store.put_secret(secret)
        return secret

    def by_name(self, name: str, environment: str, required_keys: list[str] | None = None) -> Secret:
        secret = self._store.find_secret(name, environment)
        if secret is None:
            raise NotFound(f"Secret '{name}' not found in environment '{environment}'")
        missing = [k for k in (required_keys or []) if k not in secret.env]
        if missing:
            raise NotFound(f"Secret '{name}' is missing required keys: {', '.join(missing)}")
        return secret

    def get(self, secret_id: str) -> Secret:
        secret = self._store.get_secret(secret_id)
        if secret is None:
            raise NotFound(f"Secret {secret_id} not found")
        return secret

    def env_for(self, secret_ids: list[str]) -> dict[str, str]:
        env: dict[str, str] = {}
        for secret_id in secret_ids:
            env.update(self.get(secret_id).env)
        return env

    def list(self, environment: str) -> list[Secret]:
        return self._store.list_secrets(environment)

    def delete(self, secret_id: str) -> None:
        self.get(secret_id)
        self._store.delete_secret(secret_id)
