"""The machine's pip configuration (config files, PIP_* variables), carried over to uv for image installs.

pip_install layers run with uv, which does not read pip's configuration. A machine that points pip at a local
wheel cache, a mirror or a constraints file expects image builds to use them too.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from urllib.parse import urlparse

# pip's own precedence: environment variables, then the site, user and global config files.
_SCOPES = (":env:", "site", "user", "global")
_LIST_KEYS = {"find-links", "extra-index-url", "constraint"}


@functools.cache
def pip_settings() -> dict[str, list[str]]:
    """Each pip setting that matters to installs, from the scope that wins, as pip would apply it."""
    try:
        out = subprocess.run(
            [sys.executable, "-m", "pip", "config", "list"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
            env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    found: dict[str, tuple[int, list[str]]] = {}
    for line in out.splitlines():
        name, sep, raw = line.partition("=")
        scope, _, key = name.rpartition(".")
        if not sep or scope.split(".")[0] not in _SCOPES:
            continue
        rank = _SCOPES.index(scope.split(".")[0])
        value = raw.strip().strip("'\"")
        values = value.split() if key in _LIST_KEYS else [value]
        if key not in found or rank < found[key][0]:
            found[key] = (rank, values)
    return {key: values for key, (_, values) in found.items()}


def _local_missing(location: str) -> bool:
    parsed = urlparse(location)
    path = parsed.path if parsed.scheme == "file" else location if not parsed.scheme else ""
    return bool(path) and not os.path.exists(path)


def uv_options(settings: dict[str, list[str]], user_args: list[str], pip_semantics: bool = True) -> list[str]:
    """uv pip install options for these pip settings; the user's own index options take precedence.

    With `pip_semantics` (pip_install and pip commands, not uv_pip_install) a version on any index is found,
    as pip finds it: uv by default takes a package from the first index that has it at all.
    """
    options: list[str] = []
    if pip_semantics and not any(a.split("=", 1)[0] == "--index-strategy" for a in user_args):
        options += ["--index-strategy", "unsafe-best-match"]
    if "--index-url" not in user_args and "-i" not in user_args:
        for url in settings.get("index-url", [])[:1]:
            options += ["--index-url", url]
    for url in settings.get("extra-index-url", []):
        if not _local_missing(url):
            options += ["--extra-index-url", url]
    for location in settings.get("find-links", []):
        if not _local_missing(location):
            options += ["--find-links", location]
    for path in settings.get("constraint", []):
        if os.path.exists(path):
            options += ["--constraint", path]
    if settings.get("no-index", [""])[0].lower() in ("1", "true", "yes", "on"):
        options.append("--no-index")
    return options


def uv_env(settings: dict[str, list[str]]) -> dict[str, str]:
    """Environment for uv: pip's certificate bundle, when pip has one and uv was given none."""
    cert = settings.get("cert", [""])[0]
    if cert and os.path.exists(cert) and "SSL_CERT_FILE" not in os.environ:
        return {"SSL_CERT_FILE": cert}
    return {}
