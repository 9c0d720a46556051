"""Config keys from the environment: ``CHATLANE__SECTION__KEY=value``.

A value is read by the type of the key it sets, so what a PaaS dashboard
holds means what it says:

- a text key keeps the value as written (``CHATLANE__AGENT__SYSTEM_PROMPT='Rules: be
  brief.'`` is that sentence, ``"42"`` stays ``"42"``);
- a list key takes a JSON list (``'["+15550001111", "+15550002222"]'``), or
  the same without quotes (``[+15550001111, 0012345]``: each item kept as the
  text written, no number or octal reading), or comma-separated items;
- a mapping or section takes a JSON object;
- numbers and booleans are left to the config model (``5``, ``0.8``, ``true``);
- a key the models do not know is read as JSON when it looks like JSON, else as
  text, and validation then names it as unknown.

``EnvError`` names the variable and the fix; ``apply`` returns which variable
set which key path, so a validation error can name the variable too.
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Literal

from pydantic import BaseModel

Shape = Literal["text", "list", "object", "scalar", "unknown"]
ModelFor = Callable[[tuple[str, ...]], type[BaseModel] | None]
"""The model of a dynamic section (``channels.<name>``), by its path; None: not dynamic."""

_LISTS = (list, tuple, set, frozenset)


class EnvError(ValueError):
    """An environment value that cannot be read; the message names the variable."""


def apply(
    raw: dict[str, Any],
    env: Mapping[str, str],
    root: type[BaseModel],
    *,
    prefix: str,
    model_for: ModelFor | None = None,
) -> dict[tuple[str, ...], str]:
    """Merge every ``{prefix}A__B__C`` variable of ``env`` into ``raw`` (as ``a.b.c``).

    Returns ``{key path: variable name}`` for the keys set."""
    origins: dict[tuple[str, ...], str] = {}
    for name in sorted(env):
        if not name.upper().startswith(prefix) or len(name) == len(prefix):
            continue
        path = tuple(part.lower() for part in name[len(prefix) :].split("__") if part)
        if not path:
            continue
        value = parse(env[name], shape_of(root, path, model_for), name)
        node = raw
        for part in path[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[path[-1]] = value
        origins[path] = name
    return origins


def parse(value: str, shape: Shape, name: str) -> Any:
    text = value.strip()
    if shape == "text":
        return value
    if shape == "scalar":
        return text if text else None
    if shape == "list":
        return _list(text, name)
    if shape == "object":
        if not text:
            return {}
        loaded = _json(text)
        if not isinstance(loaded, dict):
            raise EnvError(
                f'{name}: expected a JSON object such as \'{{"key": "value"}}\', got {value!r}'
            )
        return loaded
    if text[:1] in '[{"' or text in ("true", "false", "null"):
        loaded = _json(text)
        return text if loaded is _INVALID else loaded
    return value


def shape_of(root: type[BaseModel], path: tuple[str, ...], model_for: ModelFor | None) -> Shape:
    """How the key at ``path`` under ``root`` is to be read."""
    annotation: Any = root
    for depth, part in enumerate(path):
        model = _model(annotation)
        if model is not None:
            field = model.model_fields.get(part)
            if field is None:
                return "unknown"
            annotation = field.annotation
            continue
        mapping = _mapping_value(annotation)
        if mapping is None:
            return "unknown"
        dynamic = model_for(path[: depth + 1]) if model_for else None
        annotation = dynamic or mapping
    return _leaf(annotation)


def _leaf(annotation: Any) -> Shape:
    annotation = _optional(annotation)
    origin = typing.get_origin(annotation) or annotation
    if annotation is str:
        return "text"
    if origin in _LISTS:
        return "list"
    if _model(annotation) is not None or _mapping_value(annotation) is not None:
        return "object"
    if origin is Literal or annotation in (int, float, bool) or isinstance(annotation, type):
        return "scalar"
    return "unknown"


def _optional(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        rest = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return annotation


def _model(annotation: Any) -> type[BaseModel] | None:
    annotation = _optional(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _mapping_value(annotation: Any) -> Any | None:
    annotation = _optional(annotation)
    if typing.get_origin(annotation) in (dict, Mapping, typing.Mapping):
        args = typing.get_args(annotation)
        return args[1] if len(args) == 2 else Any
    return None


_INVALID = object()


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return _INVALID


def _list(text: str, name: str) -> list[Any]:
    """A JSON list; else ``[a, b]`` or ``a, b`` with each item kept as written."""
    if not text or text == "[]":
        return []
    if text.startswith("["):
        loaded = _json(text)
        if isinstance(loaded, list):
            return loaded
        if not text.endswith("]"):
            raise EnvError(
                f"{name}: a list must end with ']'; write it as JSON, "
                f'for example \'["a/b", "c/d"]\' (got {text!r})'
            )
        if "{" in text or "[" in text[1:]:
            raise EnvError(
                f"{name}: not valid JSON; write nested values as JSON, "
                f'for example \'[{{"id": "main"}}]\' (got {text!r})'
            )
        text = text[1:-1]
    return [_unquote(item.strip()) for item in text.split(",") if item.strip()]


def _unquote(item: str) -> str:
    if len(item) >= 2 and item[0] == item[-1] and item[0] in "'\"":
        return item[1:-1]
    return item
