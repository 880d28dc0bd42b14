"""A postgres_changes binding as Realtime reads it: event, schema, table and the `filter` grammar.

The grammar is the one the current Realtime server reads: `column=op.value`, op one of
eq, neq, lt, lte, gt, gte, in, like, ilike, is, match, imatch, isdistinct, optionally negated with
`not.`; several conditions separated by top-level commas are ANDed; values may be double-quoted
with backslash escapes; `in` takes `(a,b)`. Errors carry Realtime's messages. Conditions are
evaluated later, in SQL (see changes.sql `_realtime.filter_holds`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

OPERATORS = frozenset(
    {"eq", "neq", "lt", "lte", "gt", "gte", "in", "like", "ilike", "is", "match", "imatch", "isdistinct"}
)


class BindingError(ValueError):
    """A binding the server refuses; the message is what Realtime's system error says."""


@dataclass(frozen=True)
class Condition:
    column: str
    op: str
    value: str
    negate: bool


@dataclass(frozen=True)
class Binding:
    event: str  # INSERT, UPDATE, DELETE or *
    schema: str
    table: str
    conditions: tuple[Condition, ...]

    def describe(self) -> str:
        """The parameters as Realtime writes them into its subscription error messages."""
        filters = ", ".join(
            f"{{{_inspect(c.column)}, {_inspect(c.op)}, {_inspect(c.value)}, {str(c.negate).lower()}}}"
            for c in self.conditions
        )
        return (
            f"event: {self.event}, schema: {self.schema}, table: {self.table}, "
            f"filters: [{filters}], select: nil"
        )


def parse_binding(params: Any) -> Binding:
    if not isinstance(params, dict):
        raise BindingError(
            f"No subscription params provided. Please provide at least a `schema` or "
            f"`table` to subscribe to: {_inspect(params)}"
        )
    event = _action(params.get("event"))
    schema, table, filt = params.get("schema"), params.get("table"), params.get("filter")
    if isinstance(schema, str) and isinstance(table, str) and isinstance(filt, str):
        try:
            return Binding(event, schema, table, parse_filter(filt))
        except BindingError as exc:
            raise BindingError(f"Error parsing `filter` params: {exc}") from None
    if isinstance(schema, str) and isinstance(table, str) and "filter" not in params:
        return Binding(event, schema, table, ())
    if isinstance(schema, str) and "table" not in params and "filter" not in params:
        return Binding(event, schema, "*", ())
    if isinstance(table, str) and "schema" not in params and "filter" not in params:
        return Binding(event, "public", table, ())
    raise BindingError(
        "No subscription params provided. Please provide at least a `schema` or `table` to "
        f"subscribe to: {_inspect(params)}"
    )


def _action(event: Any) -> str:
    if isinstance(event, str) and event.upper() in ("INSERT", "UPDATE", "DELETE"):
        return event.upper()
    return "*"


def parse_filter(text: str) -> tuple[Condition, ...]:
    if not text.strip():
        return ()
    return tuple(_condition(segment) for segment in _split_top_level(text.strip()))


def _split_top_level(text: str) -> list[str]:
    segments, current, depth, quoted, prev = [], "", 0, False, ""
    i = 0
    while i < len(text):
        char = text[i]
        if quoted and char == "\\" and i + 1 < len(text):
            current += text[i : i + 2]
            prev, i = text[i + 1], i + 2
            continue
        if quoted:
            quoted = char != '"'
        elif char == '"' and prev in (".", "(", ","):
            quoted = True
        elif char == "(":
            depth += 1
        elif char == ")":
            depth = max(0, depth - 1)
        elif char == "," and depth == 0:
            segments.append(current)
            current, prev, i = "", "", i + 1
            continue
        current += char
        prev, i = char, i + 1
    segments.append(current)
    return segments


def _condition(segment: str) -> Condition:
    trimmed = segment.strip()
    if not trimmed:
        raise BindingError("filter must not contain empty segments (check for extra commas)")
    parts = trimmed.split("=", 1)
    if len(parts) != 2:
        raise BindingError(_inspect(parts))
    column, rest = parts
    negate = rest.startswith("not.")
    op_value = rest[4:] if negate else rest
    op_parts = op_value.split(".", 1)
    if len(op_parts) != 2:
        raise BindingError(_inspect(op_parts))
    op, value = op_parts
    if op not in OPERATORS:
        raise BindingError(_inspect(op_parts))
    return Condition(column, op, _value(op, value), negate)


def _value(op: str, value: str) -> str:
    if op == "in":
        if len(value) >= 2 and value.startswith("(") and value.endswith(")"):
            return "{" + value[1:-1] + "}"
        raise BindingError("`in` filter value must be wrapped by parentheses")
    if value.startswith('"'):
        return _unquote(value)
    return value


def _unquote(value: str) -> str:
    out, i = "", 1
    while i < len(value):
        char = value[i]
        if char == '"':
            return out if i == len(value) - 1 else value
        if char == "\\" and i + 1 < len(value):
            out += value[i + 1]
            i += 2
            continue
        out += char
        i += 1
    return value


def _inspect(value: Any) -> str:
    """Roughly Elixir's `inspect/1`, which Realtime uses to quote bad parameters."""
    if isinstance(value, dict):
        return "%{" + ", ".join(f"{_inspect(k)} => {_inspect(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_inspect(v) for v in value) + "]"
    if value is None:
        return "nil"
    return json.dumps(value, ensure_ascii=False)
