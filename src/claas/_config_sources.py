"""Where :class:`claas.config.Settings` values come from: TOML, ``CLAAS_*`` and strings.

Only reading and string coercion live here; which names exist and what each
field accepts are :mod:`claas.config`'s.
"""

from __future__ import annotations

import json
import string
import tomllib
from collections.abc import Mapping, Set
from pathlib import Path
from typing import Any

from claas.errors import InvalidConfig

__all__ = [
    "BOOL_TEXT",
    "check_template",
    "coerce",
    "error",
    "parse_api_keys",
    "read_env",
    "read_toml",
]

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
# How text reads as a bool, for fields that take a bool among other values.
BOOL_TEXT = {**dict.fromkeys(_TRUE, True), **dict.fromkeys(_FALSE, False)}


def error(field: str, value: object, rule: str) -> InvalidConfig:
    """The error for a bad setting, naming the (dotted) field, the value and the rule."""
    return InvalidConfig(f"Settings.{field}={value!r} is invalid: {rule}")


def read_toml(path: Path) -> dict[str, Any]:
    """The settings in a TOML file: its ``[claas]`` table, or the whole file without one.

    Raises:
        InvalidConfig: If the file cannot be read or is not TOML.
    """
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise InvalidConfig(f"cannot read config file {path}: {exc}") from exc
    return dict(data.get("claas", data))


def read_env(environ: Mapping[str, str], known: Set[str]) -> dict[str, str]:
    """``CLAAS_<NAME>`` for each name in ``known`` (lower case); other variables are ignored."""
    values: dict[str, str] = {}
    for key, raw in environ.items():
        if not key.startswith("CLAAS_") or key == "CLAAS_CONFIG":
            continue
        name = key[len("CLAAS_") :].lower()
        if name in known:
            values[name] = raw
    return values


def coerce(label: str, kind: str, value: Any) -> Any:
    """Turn a string (from the environment or TOML) into a field of type ``kind``.

    Args:
        label: The dotted field name, for messages (``vllm.max_loras``).
        kind: The field's annotation as written (``"int"``, ``"str | None"``).
        value: The value; anything but a string is returned unchanged.

    Raises:
        InvalidConfig: If the string does not read as that type.
    """
    if not isinstance(value, str):
        return value
    if kind == "bool":
        lowered = value.strip().lower()
        if lowered not in _TRUE + _FALSE:
            raise error(label, value, "must be true or false")
        return lowered in _TRUE
    if kind in ("int", "float"):
        try:
            return int(value) if kind == "int" else float(value)
        except ValueError as exc:
            rule = "must be an integer" if kind == "int" else "must be a number"
            raise error(label, value, rule) from exc
    if label == "server.api_keys":
        return parse_api_keys(value)
    if kind.endswith("| None") and value == "":
        return None
    return value


def parse_api_keys(value: str) -> dict[str, Any]:
    """Parse ``CLAAS_API_KEYS``: JSON ``{"key": ["ns", ...]}`` or ``key=ns1|ns2,key2=ns3``.

    Raises:
        InvalidConfig: On invalid JSON or an item without ``=`` (the keys are not shown).
    """
    text = value.strip()
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise error("server.api_keys", "<hidden>", f"invalid JSON: {exc.msg}") from exc
        if not isinstance(data, dict):
            raise error("server.api_keys", "<hidden>", "JSON must map each key to namespaces")
        return data
    keys: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, namespaces = item.partition("=")
        if not sep:
            raise error("server.api_keys", "<hidden>", "use key=namespace1|namespace2,...")
        keys[key.strip()] = tuple(n.strip() for n in namespaces.split("|") if n.strip())
    return keys


def check_template(field: str, value: Any) -> None:
    """Refuse a hindsight template that is not ``None`` or a format string of the
    fields ``{content}`` and ``{feedback}``, and optionally ``{response}`` (the answer
    the feedback is about), and no others.

    Raises:
        InvalidConfig: Naming ``field``, the value and the rule.
    """
    if value is None:
        return
    rule = (
        "must be a format string using the fields {content} and {feedback} "
        "(and optionally {response}), and no others"
    )
    if not isinstance(value, str):
        raise error(field, value, rule)
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(value) if name is not None}
        value.format(content="", feedback="", response="")
    except (ValueError, KeyError, IndexError) as exc:
        raise error(field, value, f"{rule} ({exc})") from exc
    if fields not in ({"content", "feedback"}, {"content", "feedback", "response"}):
        raise error(field, value, rule)
