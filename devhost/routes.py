"""HTTP trigger route templates, matched the way ASP.NET Core routing does for the Functions host.

Supported: literal segments (case-insensitive), ``{name}``, ``{name?}``, ``{name=default}``,
``{name:constraint[:constraint...]}`` (int, long, bool, guid, alpha, datetime, decimal, double,
float, min(n), max(n), range(a,b), minlength(n), maxlength(n), length(n[,m]), regex(...)) and a
final catch-all ``{*rest}``. When several templates match, the most specific wins (literal
segments over constrained parameters over plain, optional and catch-all ones).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import unquote

_PARAM = re.compile(r"\{([^{}]*(?:\([^()]*\)[^{}]*)*)\}")


class RouteTemplateError(ValueError):
    """A route template the host would refuse at startup."""


def _split_constraints(text: str) -> list[str]:
    """Split ``int:min(1):regex(a:b)`` on colons that are outside parentheses."""
    parts, depth, current = [], 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == ":" and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return [p for p in parts if p]


def _is_number(value: str, kind: type) -> bool:
    try:
        kind(value)
    except (ValueError, InvalidOperation):
        return False
    return True


def _int_value(value: str) -> int | None:
    return int(value) if re.fullmatch(r"-?\d+", value) else None


def _constraint_check(spec: str) -> Callable[[str], bool]:
    name, _, arg_text = spec.partition("(")
    name = name.strip().lower()
    args = arg_text[:-1] if arg_text.endswith(")") else arg_text
    numbers = [int(a) for a in args.split(",") if a.strip().lstrip("-").isdigit()]
    simple: dict[str, Callable[[str], bool]] = {
        "int": lambda v: _int_value(v) is not None and -(2**31) <= int(v) < 2**31,
        "long": lambda v: _int_value(v) is not None and -(2**63) <= int(v) < 2**63,
        "bool": lambda v: v.lower() in ("true", "false"),
        "alpha": lambda v: bool(re.fullmatch(r"[A-Za-z]+", v)),
        "guid": lambda v: _is_number(v, uuid.UUID),
        "decimal": lambda v: _is_number(v, Decimal),
        "double": lambda v: _is_number(v, float),
        "float": lambda v: _is_number(v, float),
        "datetime": lambda v: _is_number(v, datetime.fromisoformat),
        "required": lambda v: bool(v),
    }
    if name in simple:
        return simple[name]
    if name == "min" and numbers:
        return lambda v: _int_value(v) is not None and int(v) >= numbers[0]
    if name == "max" and numbers:
        return lambda v: _int_value(v) is not None and int(v) <= numbers[0]
    if name == "range" and len(numbers) == 2:
        return lambda v: _int_value(v) is not None and numbers[0] <= int(v) <= numbers[1]
    if name == "minlength" and numbers:
        return lambda v: len(v) >= numbers[0]
    if name == "maxlength" and numbers:
        return lambda v: len(v) <= numbers[0]
    if name == "length" and numbers:
        low, high = (numbers[0], numbers[0]) if len(numbers) == 1 else (numbers[0], numbers[1])
        return lambda v: low <= len(v) <= high
    if name == "regex":
        pattern = re.compile(args.replace("{{", "{").replace("}}", "}"), re.IGNORECASE)  # braces are doubled
        return lambda v: bool(pattern.search(v))
    raise RouteTemplateError(f"unknown route constraint '{spec}'")


@dataclass
class _Param:
    name: str
    optional: bool = False
    catch_all: bool = False
    default: str | None = None
    checks: list[Callable[[str], bool]] = field(default_factory=list)


def _parse_param(body: str) -> _Param:
    catch_all = body.startswith("*")
    body = body.lstrip("*")
    name_part, _, constraint_text = body.partition(":")
    default = None
    if "=" in name_part:
        name_part, default = name_part.split("=", 1)
    optional = False
    if constraint_text.endswith("?"):
        constraint_text, optional = constraint_text[:-1], True
    if name_part.endswith("?"):
        name_part, optional = name_part[:-1], True
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name_part):
        raise RouteTemplateError(f"invalid route parameter name '{name_part}'")
    checks = [_constraint_check(c) for c in _split_constraints(constraint_text)]
    return _Param(name_part, optional or default is not None, catch_all, default, checks)


@dataclass
class RouteTemplate:
    """One compiled template; ``match`` returns route params or None."""

    template: str
    regex: re.Pattern[str]
    params: list[_Param]
    precedence: tuple[int, ...]

    def match(self, raw_path: str) -> dict[str, str] | None:
        found = self.regex.fullmatch(raw_path.strip("/"))
        if not found:
            return None
        values: dict[str, str] = {}
        for index, param in enumerate(self.params):
            raw = found.group(f"p{index}")
            if raw is None or raw == "":
                if param.default is not None:
                    values[param.name] = param.default
                elif not param.optional and not param.catch_all:
                    return None
                continue
            value = unquote(raw)
            if not all(check(value) for check in param.checks):
                return None
            values[param.name] = value
        return values


def compile_route(template: str) -> RouteTemplate:
    """Compile a function's route template (without the host's route prefix)."""
    text = template.strip().strip("/")
    segments = text.split("/") if text else []
    pieces: list[str] = []
    params: list[_Param] = []
    precedence: list[int] = []
    for position, segment in enumerate(segments):
        if not segment:
            raise RouteTemplateError(f"route '{template}' has an empty segment")
        whole = _PARAM.fullmatch(segment)
        if whole:
            param = _parse_param(whole.group(1))
            group = f"(?P<p{len(params)}>{'.*' if param.catch_all else '[^/]+'})"
            params.append(param)
            if param.catch_all and position != len(segments) - 1:
                raise RouteTemplateError(f"catch-all parameter must be last in route '{template}'")
            lead = "/" if position else ""
            if param.optional or param.catch_all:
                pieces.append(f"(?:{lead}{group})?")
            else:
                pieces.append(f"{lead}{group}")
            precedence.append(4 if param.catch_all else 3 if param.optional else 1 if param.checks else 2)
            continue
        # literal segment, possibly with embedded parameters such as "{name}.json"
        regex, last = "", 0
        for found in _PARAM.finditer(segment):
            regex += re.escape(segment[last : found.start()])
            param = _parse_param(found.group(1))
            regex += f"(?P<p{len(params)}>[^/]+?)"
            params.append(param)
            last = found.end()
        regex += re.escape(segment[last:])
        pieces.append(("/" if position else "") + regex)
        precedence.append(0 if last == 0 else 1)
    pattern = re.compile("".join(pieces), re.IGNORECASE)
    return RouteTemplate(template, pattern, params, tuple(precedence))


def precedence_key(route: RouteTemplate) -> tuple[Any, ...]:
    """Sort key: more specific templates first; ties keep more segments first."""
    return (route.precedence, -len(route.precedence))
