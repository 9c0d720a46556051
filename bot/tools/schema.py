"""A tool's JSON schema and argument validation, from its signature and docstring (pydantic).

Each parameter becomes a field of a pydantic model built for the function:
``Annotated[int, Field(ge=1, description=...)]`` keeps its constraint and
description, a ``BaseModel`` parameter is validated into that model, an
``Enum`` into its member, ``Literal``, ``Optional`` and lists as pydantic
reads them. An ``Args:`` section of the docstring (Google style) describes
the parameters it names. The schema the model sees is pydantic's, with every
``$ref`` inlined and the ``title`` noise left out.
"""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

_SECTION = re.compile(
    r"^\s*(Args|Arguments|Parameters|Returns|Raises|Yields|Examples?|Notes?):\s*$"
)
_ARG = re.compile(r"^\s*\*{0,2}(\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")


class ArgumentsError(ValueError):
    """The model's arguments do not fit the tool's signature; the message says how."""


class Signature:
    """A function's parameters as a pydantic model: the JSON schema and the validator."""

    def __init__(self, func: Callable[..., Any]) -> None:
        self.names: list[str] = []
        fields: dict[str, Any] = {}
        described = parse_args_section(inspect.getdoc(func) or "")
        hints = typing.get_type_hints(func, include_extras=True)
        for index, param in enumerate(inspect.signature(func).parameters.values()):
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                continue
            hint = hints.get(param.name, Any)
            default = ... if param.default is inspect.Parameter.empty else param.default
            info = Field(alias=param.name, description=described.get(param.name))
            # Fields get neutral names (the alias is the parameter's), so a parameter
            # called ``json`` or ``schema`` cannot shadow a BaseModel attribute.
            fields[f"p{index}"] = (_annotate(hint, info), default)
            self.names.append(param.name)
        self.model: type[BaseModel] = create_model(
            f"{func.__name__}_arguments",
            __config__=ConfigDict(extra="forbid", populate_by_name=False),
            **fields,
        )
        self._fields = list(fields)

    def json_schema(self) -> dict[str, Any]:
        raw = self.model.model_json_schema(by_alias=True)
        defs = raw.pop("$defs", {})
        schema = _clean(_inline(raw, defs, ()))
        schema.pop("description", None)
        schema["type"] = "object"
        schema.setdefault("properties", {})
        return dict(schema)

    def validate(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """``{parameter: value}`` validated and converted; ``ArgumentsError`` if they do not fit."""
        try:
            parsed = self.model.model_validate(arguments)
        except ValidationError as exc:
            raise ArgumentsError(describe_errors(exc)) from None
        pairs = zip(self.names, self._fields, strict=True)
        return {name: getattr(parsed, field) for name, field in pairs}


def _annotate(hint: Any, info: Any) -> Any:
    """``hint`` with ``info`` first, so the hint's own ``Field`` (a description) wins."""
    if typing.get_origin(hint) is Annotated:
        base, *metadata = typing.get_args(hint)
        return Annotated[(base, info, *metadata)]
    return Annotated[hint, info]


def describe_errors(exc: ValidationError) -> str:
    """One line per problem, as the model should read it: ``days: Input should be ...``."""
    lines = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(part) for part in error["loc"]) or "arguments"
        problem = error["msg"]
        if error["type"] == "extra_forbidden":
            problem = "unknown argument; leave it out"
        elif error["type"] == "missing":
            problem = "required argument is missing"
        lines.append(f"{where}: {problem}")
    return "; ".join(lines)


def parse_args_section(doc: str) -> dict[str, str]:
    """``{name: description}`` from a Google-style ``Args:`` section."""
    found: dict[str, str] = {}
    inside = False
    current: str | None = None
    indent = 0
    for line in doc.splitlines():
        section = _SECTION.match(line)
        if section:
            inside = section.group(1) in ("Args", "Arguments", "Parameters")
            current = None
            continue
        if not inside or not line.strip():
            continue
        depth = len(line) - len(line.lstrip())
        match = _ARG.match(line)
        if match and (current is None or depth <= indent):
            current, indent = match.group(1), depth
            found[current] = match.group(2).strip()
        elif current is not None and depth > indent:
            found[current] = f"{found[current]} {line.strip()}".strip()
        else:
            inside = False
    return {name: text for name, text in found.items() if text}


def description_of(func: Callable[..., Any]) -> str:
    """The docstring's first paragraph, on one line."""
    doc = inspect.getdoc(func) or ""
    return doc.split("\n\n", 1)[0].replace("\n", " ").strip()


def _inline(node: Any, defs: dict[str, Any], seen: tuple[str, ...]) -> Any:
    """Every ``#/$defs/X`` replaced by X itself (a recursive model keeps one level as ``{}``)."""
    if isinstance(node, list):
        return [_inline(item, defs, seen) for item in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        name = ref.removeprefix("#/$defs/")
        if name in seen or name not in defs:
            return {"type": "object"}
        target = dict(_inline(defs[name], defs, (*seen, name)))
        target.update({k: _inline(v, defs, seen) for k, v in node.items() if k != "$ref"})
        return target
    return {key: _inline(value, defs, seen) for key, value in node.items()}


def _clean(node: Any, *, in_properties: bool = False) -> Any:
    """Titles dropped; ``anyOf: [X, null]`` with a ``None`` default read as plain X."""
    if isinstance(node, list):
        return [_clean(item) for item in node]
    if not isinstance(node, dict):
        return node
    if in_properties:  # keys here are parameter names, not schema keywords
        return {key: _clean(value) for key, value in node.items()}
    cleaned = {
        key: _clean(value, in_properties=key in ("properties", "$defs"))
        for key, value in node.items()
        if key != "title"
    }
    options = cleaned.get("anyOf")
    if isinstance(options, list) and "default" in cleaned and cleaned["default"] is None:
        rest = [o for o in options if o != {"type": "null"}]
        if len(rest) == 1 and len(options) == 2:
            del cleaned["anyOf"], cleaned["default"]
            cleaned = {**rest[0], **cleaned}
    return cleaned


__all__ = [
    "ArgumentsError",
    "Signature",
    "describe_errors",
    "description_of",
    "parse_args_section",
]
