"""`onshore token create|list|revoke`: manage API tokens directly in the data dir's SQLite store."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from onshore.cli.embedded import CliError
from onshore.config import DataDir
from onshore.errors import NotFound
from onshore.services.clock import SystemClock
from onshore.services.tokens import TokenService
from onshore.store.sqlite import SqliteStore


@contextlib.contextmanager
def _tokens(data: DataDir, create: bool = False) -> Iterator[TokenService]:
    """The token service on the data dir's store (WAL: safe while a server runs on it)."""
    if not data.database.exists():
        if not create:
            raise CliError(f"No Onshore data in {data.root} yet: start a server there (`onshore server`)")
        data.ensure()
    store = SqliteStore(data.database)
    try:
        service = TokenService(store, SystemClock())
        # Like the server's first start: the first token goes to token.json, for `onshore env` and `run`.
        created = service.ensure_initial()
        if created is not None:
            token, secret = created
            data.write_json(data.token_file, {"token_id": token.token_id, "token_secret": secret})
        yield service
    finally:
        store.close()


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def _default_token_id(data: DataDir) -> str:
    info = data.read_json(data.token_file)
    return str(info.get("token_id", "")) if info else ""


def cmd_create(data: DataDir, label: str, proxy: bool = False) -> int:
    with _tokens(data, create=True) as tokens:
        token, secret = tokens.create(label, proxy=proxy)
    what = "proxy token" if proxy else "token"
    print(f"Created {what} {token.token_id}" + (f" ({label})" if label else "") + ".")
    print("Its secret is shown only this once; to use it:")
    if proxy:
        print("send these headers to web endpoints that have requires_proxy_auth=True:")
        print(f"Modal-Key: {token.token_id}")
        print(f"Modal-Secret: {secret}")
    else:
        print(f"export MODAL_TOKEN_ID={token.token_id}")
        print(f"export MODAL_TOKEN_SECRET={secret}")
    return 0


def cmd_list(data: DataDir) -> int:
    with _tokens(data) as tokens:
        rows = tokens.list()
    default = _default_token_id(data)
    table = [("TOKEN ID", "KIND", "LABEL", "CREATED", "REVOKED")]
    for token in rows:
        label = token.label + (" (token.json)" if token.token_id == default else "")
        table.append(
            (token.token_id, token.kind, label or "-", _when(token.created_at), _when(token.revoked_at))
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return 0


def cmd_revoke(data: DataDir, token_id: str) -> int:
    with _tokens(data) as tokens:
        try:
            before = next((t for t in tokens.list() if t.token_id == token_id), None)
            token = tokens.revoke(token_id)
        except NotFound:
            raise CliError(f"No token {token_id!r} in {data.root} (see `onshore token list`)") from None
    if before is not None and before.revoked_at is not None:
        print(f"Token {token_id} was already revoked (at {_when(token.revoked_at)}).")
    else:
        print(f"Revoked token {token_id}; a running server refuses it within a few seconds.")
    if token_id == _default_token_id(data):
        print(
            f"Note: this is the token in {data.token_file} that `onshore env` and `onshore run` use; "
            "they will be refused until you put a valid token there."
        )
    return 0
