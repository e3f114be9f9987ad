"""Parse the Dockerfile commands of one image layer into typed instructions; refuse what cannot be built."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field

from onshore.errors import InvalidArgument

# Instructions a layer may hold; the others are refused by name.
KNOWN = frozenset(
    {"FROM", "RUN", "ENV", "WORKDIR", "COPY", "ADD", "ARG", "CMD", "ENTRYPOINT", "SHELL", "USER", "LABEL"}
    | {"EXPOSE"}
)
_UNSUPPORTED = {
    "ONBUILD": "ONBUILD triggers are not supported",
    "HEALTHCHECK": "HEALTHCHECK has no meaning for Modal containers",
    "VOLUME": "VOLUME is not supported: use modal.Volume",
    "STOPSIGNAL": "STOPSIGNAL is not supported: containers stop on SIGINT, as on Modal",
    "MAINTAINER": "MAINTAINER is not supported",
}
_VAR = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction: its keyword, its raw argument text, and the parsed parts."""

    keyword: str
    text: str  # the argument text, as written (continuations joined)
    args: list[str] = field(default_factory=list)  # exec-form list, or shell words where that is the meaning
    flags: dict[str, str] = field(default_factory=dict)  # --from=..., --chown=..., --chmod=...
    exec_form: bool = False

    @property
    def line(self) -> str:
        return f"{self.keyword} {self.text}".rstrip()


def _join_continuations(commands: list[str]) -> list[str]:
    """One entry per instruction: a trailing backslash continues onto the next line, as in a Dockerfile."""
    lines: list[str] = []
    for command in commands:
        lines.extend(command.splitlines() or [""])
    out: list[str] = []
    pending = ""
    for raw in lines:
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1].rstrip() + " "
            continue
        out.append((pending + stripped).strip())
        pending = ""
    if pending.strip():
        out.append(pending.strip())
    return out


def _exec_form(text: str) -> list[str] | None:
    if not text.startswith("["):
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return None
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    return None


def _split_flags(text: str) -> tuple[dict[str, str], str]:
    flags: dict[str, str] = {}
    rest = text
    while rest.startswith("--"):
        word, _, rest = rest.partition(" ")
        name, _, value = word[2:].partition("=")
        flags[name] = value
        rest = rest.lstrip()
    return flags, rest


def _env_pairs(keyword: str, text: str) -> list[str]:
    """ENV/ARG/LABEL arguments as KEY=VALUE words (the legacy `ENV KEY value` form included)."""
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise InvalidArgument(f"Cannot parse '{keyword} {text}': {exc}") from None
    if keyword == "ENV" and words and "=" not in words[0]:
        key, _, value = text.partition(" ")
        if not value.strip():
            raise InvalidArgument(f"'ENV {text}': ENV takes KEY=VALUE pairs")
        return [f"{key}={value.strip()}"]
    return words


def parse_line(line: str) -> Instruction:
    keyword, _, text = line.partition(" ")
    keyword = keyword.upper()
    text = text.strip()
    if keyword in _UNSUPPORTED:
        raise InvalidArgument(f"Dockerfile instruction '{line}': {_UNSUPPORTED[keyword]}")
    if keyword not in KNOWN:
        raise InvalidArgument(f"Unknown Dockerfile instruction '{keyword}' in '{line}'")
    if keyword in ("RUN", "CMD", "ENTRYPOINT", "SHELL"):
        flags: dict[str, str] = {}
        if keyword == "RUN":
            flags, text = _split_flags(text)
            if flags:
                raise InvalidArgument(f"'{line}': RUN options ({', '.join(flags)}) are not supported")
        exec_args = _exec_form(text)
        if keyword == "SHELL" and exec_args is None:
            raise InvalidArgument(f'\'{line}\': SHELL takes a JSON list, e.g. SHELL ["/bin/bash", "-c"]')
        return Instruction(keyword, text, exec_args or [], flags, exec_form=exec_args is not None)
    if keyword in ("COPY", "ADD"):
        flags, rest = _split_flags(text)
        args = _exec_form(rest)
        if args is None:
            try:
                args = shlex.split(rest)
            except ValueError as exc:
                raise InvalidArgument(f"Cannot parse '{line}': {exc}") from None
        if len(args) < 2:
            raise InvalidArgument(f"'{line}': {keyword} needs at least one source and a destination")
        return Instruction(keyword, text, args, flags)
    if keyword in ("ENV", "ARG", "LABEL"):
        pairs = _env_pairs(keyword, text)
        if keyword == "ENV" and any("=" not in p for p in pairs):
            raise InvalidArgument(f"'{line}': ENV takes KEY=VALUE pairs")
        return Instruction(keyword, text, pairs)
    if keyword == "FROM":
        words = text.split()
        if not words:
            raise InvalidArgument("FROM needs an image reference")
        flags, rest = _split_flags(text)
        words = rest.split()
        if flags:
            raise InvalidArgument(f"'{line}': FROM options ({', '.join(flags)}) are not supported")
        if len(words) == 3 and words[1].upper() == "AS":
            raise InvalidArgument(f"'{line}': multi-stage builds (FROM ... AS ...) are not supported")
        return Instruction(keyword, text, words[:1])
    if keyword in ("WORKDIR", "USER") and not text:
        raise InvalidArgument(f"{keyword} needs an argument")
    return Instruction(keyword, text, [text] if text else [])


def parse(commands: list[str]) -> list[Instruction]:
    """Every instruction of a layer, in order. Raises InvalidArgument naming the offending line."""
    return [parse_line(line) for line in _join_continuations(commands)]


def expand(text: str, variables: dict[str, str]) -> str:
    """Substitute $VAR and ${VAR} as Docker does for ENV/WORKDIR/COPY (unknown variables become empty)."""
    return _VAR.sub(lambda m: variables.get(m.group(1) or m.group(2) or "", ""), text)


def split_pair(pair: str) -> tuple[str, str]:
    key, _, value = pair.partition("=")
    return key, value
