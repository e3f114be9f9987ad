"""Image installs find a version on any configured index, as pip does; uv_pip_install keeps uv's rule."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from onshore.images.pythons import uv_binary
from onshore.runtimes.process.builder import uv_install_argv
from tests.indexes import simple_index

SETTINGS = {
    "index-url": ["https://mirror.example/simple"],
    "extra-index-url": ["https://other.example/simple"],
}


def _strategy(argv: list[str]) -> str | None:
    return argv[argv.index("--index-strategy") + 1] if "--index-strategy" in argv else None


def test_pip_install_considers_every_index() -> None:
    argv = uv_install_argv("uv", "/venv/bin/python", ["six==1.16.0"], SETTINGS, uv=False)
    assert _strategy(argv) == "unsafe-best-match", argv
    assert argv[argv.index("--index-url") + 1] == "https://mirror.example/simple"
    assert argv[argv.index("--extra-index-url") + 1] == "https://other.example/simple"
    # With no pip configuration at all (pip_install_from_requirements: -r FILE), the same rule.
    assert _strategy(uv_install_argv("uv", "py", ["-r", "/ctx/req.txt"], {}, uv=False)) == "unsafe-best-match"


def test_uv_pip_install_keeps_uvs_first_index_rule() -> None:
    argv = uv_install_argv("uv", "/venv/bin/python", ["--compile-bytecode", "six"], SETTINGS, uv=True)
    assert "--index-strategy" not in argv and "unsafe-best-match" not in argv, argv


def test_a_users_own_index_strategy_is_kept() -> None:
    for words in (["--index-strategy", "first-index", "six"], ["--index-strategy=first-index", "six"]):
        argv = uv_install_argv("uv", "py", words, SETTINGS, uv=False)
        assert "unsafe-best-match" not in argv, argv


def _install(argv: list[str], venv: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=venv)


def test_a_version_only_a_later_index_has_is_installed(tmp_path: Path) -> None:
    """The real failure: the index uv asks first knows the package, but only another version of it."""
    newer = simple_index(tmp_path / "newer", {"tinypkg": ["2.0"]})
    older = simple_index(tmp_path / "older", {"tinypkg": ["1.0"]})
    # uv asks the extra indexes before the main one: the extra one holds only 2.0.
    settings = {"index-url": [older], "extra-index-url": [newer]}
    venv = tmp_path / "venv"
    subprocess.run([uv_binary(), "venv", "--quiet", "--python", sys.executable, str(venv)], check=True)
    python = str(venv / "bin" / "python")

    as_uv = _install(uv_install_argv(uv_binary(), python, ["tinypkg==1.0"], settings, uv=True), venv)
    assert as_uv.returncode != 0 and "tinypkg" in as_uv.stderr, as_uv.stderr  # uv_pip_install: uv's rule

    as_pip = _install(uv_install_argv(uv_binary(), python, ["tinypkg==1.0"], settings, uv=False), venv)
    assert as_pip.returncode == 0, as_pip.stderr
    found = subprocess.run([python, "-c", "import tinypkg; print(tinypkg.__version__)"], capture_output=True)
    assert found.stdout.decode().strip() == "1.0"
