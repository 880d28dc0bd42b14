"""PostgREST's URL grammar turned into SQL: filters, `select`, `order`, `limit` and `offset`.

Names reach SQL only after they are found in the schema cache, and then quoted; values reach it
only as bind parameters, cast to the column's type in SQL.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_ARROW = re.compile(r"(->>?)")
_OPERATORS = {"eq": "=", "neq": "<>", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
_PATTERN_OPERATORS = {"like": "like", "ilike": "ilike", "match": "~", "imatch": "~*"}
_IS_VALUES = {"null": "null", "true": "true", "false": "false", "unknown": "unknown"}
RESERVED = {"select", "order", "limit", "offset", "columns", "on_conflict", "or", "and", "not.or", "not.and"}


class QueryError(Exception):
    """A request PostgREST refuses; `code`, `message`, `details`, `hint` and `status` as it sends them."""

    def __init__(
        self, code: str, message: str, status: int = 400, details: str | None = None, hint: str | None = None
    ) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status
        self.details, self.hint = details, hint


def content_range(offset: int, shown: int, total: int | None) -> str:
    """PostgREST's Content-Range for `shown` rows from `offset`; the total only when counted."""
    span = f"{offset}-{offset + shown - 1}" if shown else "*"
    return f"{span}/{'*' if total is None else total}"


def not_single(rows: int) -> QueryError:
    """What PostgREST answers when one object was asked for (Accept: ...object) and `rows` came."""
    return QueryError(
        "PGRST116",
        "Cannot coerce the result to a single JSON object",
        406,
        f"The result contains {rows} rows",
    )


def ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass
class Params:
    """Bind parameters collected while building one statement."""

    values: list[object] = field(default_factory=list)

    def add(self, value: object) -> str:
        self.values.append(value)
        return f"${len(self.values)}"


@dataclass
class Source:
    """Where rows come from: a table, or the rows of a set-returning function."""

    name: str  # for messages, e.g. "jobs"
    columns: dict[str, str]  # column -> SQL type

    def column(self, name: str) -> str:
        if name not in self.columns:
            raise QueryError("42703", f"column {self.name}.{name} does not exist")
        return ident(name)

    def path(self, name: str, params: Params) -> tuple[str, str, str]:
        """SQL, type and output name of a column or of a JSON path into one (`payload->>kind`,
        `payload->items->0`); the keys travel as bind parameters."""
        column, *steps = _ARROW.split(name)
        sql, kind, output = self.column(column), self.columns[column], column
        for arrow, key in zip(steps[::2], steps[1::2], strict=True):
            if not key or kind not in ("json", "jsonb"):
                raise QueryError(
                    "PGRST100",
                    f'"failed to parse json path ({name})"',
                    details="a JSON path needs a json or jsonb column and non-empty keys",
                )
            index = key.lstrip("-").isdigit()
            bound = f"{params.add(int(key))}::int" if index else f"{params.add(key)}::text"
            sql = f"({sql}::jsonb {arrow} {bound})"
            kind, output = ("text" if arrow == "->>" else "jsonb"), key
        return sql, kind, output


def split_top(text: str) -> list[str]:
    """Split on commas outside parentheses and double quotes."""
    parts, depth, quoted, current = [], 0, False, []
    chars = iter(text)
    for ch in chars:
        if quoted and ch == "\\":
            current += [ch, next(chars, "")]
            continue
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch == "(":
            depth += 1
        elif not quoted and ch == ")":
            depth -= 1
        if ch == "," and depth == 0 and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    if quoted or depth:
        raise QueryError(
            "PGRST100",
            f'"failed to parse ({text})" (line 1, column {len(text)})',
            details="unbalanced quotes or parentheses",
        )
    parts.append("".join(current))
    return parts


def unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value


def condition(source: Source, column: str, expr: str, params: Params) -> str:
    """SQL for one `column=[not.]op.value` filter."""
    negate = expr.startswith("not.")
    if negate:
        expr = expr[4:]
    op, dot, value = expr.partition(".")
    if not dot:
        raise QueryError(
            "PGRST100",
            f'"failed to parse filter ({expr})" (line 1, column 1)',
            details="unexpected end of input",
        )
    col, kind, _ = source.path(column, params)
    if op in _OPERATORS:
        sql = f"{col} {_OPERATORS[op]} cast({params.add(value)}::text as {kind})"
    elif op in _PATTERN_OPERATORS:
        pattern = value.replace("*", "%") if op in ("like", "ilike") else value
        sql = f"{col}::text {_PATTERN_OPERATORS[op]} {params.add(pattern)}::text"
    elif op == "is":
        if value.lower() not in _IS_VALUES:
            raise QueryError(
                "PGRST100",
                f'"failed to parse filter (is.{value})" (line 1, column 4)',
                details='unexpected "' + value[:1] + '" expecting null or trilean value',
            )
        sql = f"{col} is {_IS_VALUES[value.lower()]}"
    elif op == "in":
        if not (value.startswith("(") and value.endswith(")")):
            raise QueryError(
                "PGRST100",
                f'"failed to parse filter (in.{value})" (line 1, column 4)',
                details='unexpected end of input expecting "("',
            )
        items = [unquote(v.strip()) for v in split_top(value[1:-1])] if value[1:-1] else []
        sql = f"{col} = any(cast({params.add(items)}::text[] as {kind}[]))"
    else:
        raise QueryError(
            "PGRST100",
            f'"failed to parse filter ({op}.{value})" (line 1, column 1)',
            details=f"unknown operator {op!r}",
        )
    return f"not ({sql})" if negate else sql


def logic(source: Source, key: str, value: str, params: Params) -> str:
    """SQL for `or=(…)` / `and=(…)`, nested as PostgREST allows."""
    negate = key.startswith("not.")
    joiner = " or " if key.removeprefix("not.") == "or" else " and "
    if not (value.startswith("(") and value.endswith(")")):
        raise QueryError("PGRST100", f'"failed to parse logic tree ({value})" (line 1, column 1)')
    parts = []
    for item in split_top(value[1:-1]):
        head, _, rest = item.partition(".")
        inner_key = item.split("(", 1)[0]
        if inner_key in ("or", "and", "not.or", "not.and"):
            parts.append(logic(source, inner_key, item[len(inner_key) :], params))
        else:
            parts.append(condition(source, head, rest, params))
    sql = "(" + joiner.join(parts) + ")"
    return f"not {sql}" if negate else sql


_FILTER_OPERATORS = {
    *_OPERATORS,
    *_PATTERN_OPERATORS,
    "is",
    "in",
    "not",
    "cs",
    "cd",
    "ov",
    "sl",
    "sr",
    "nxr",
    "nxl",
    "adj",
    "fts",
    "plfts",
    "phfts",
    "wfts",
    "isdistinct",
}


def looks_like_filter(value: str) -> bool:
    """Whether a query value reads as `op.value` (a filter) rather than a plain function argument."""
    op, dot, _ = value.partition(".")
    return bool(dot) and op in _FILTER_OPERATORS


def where(
    source: Source, query: list[tuple[str, str]], params: Params, skip: frozenset[str] = frozenset()
) -> str:
    clauses = []
    for key, value in query:
        if key in skip or key in RESERVED - {"or", "and", "not.or", "not.and"}:
            continue
        if key in ("or", "and", "not.or", "not.and"):
            clauses.append(logic(source, key, value, params))
        else:
            clauses.append(condition(source, unquote(key), value, params))
    return " where " + " and ".join(clauses) if clauses else ""


def select_list(source: Source, select: str | None, params: Params) -> str:
    if not select or select == "*":
        return "*"
    out = []
    for item in split_top(select):
        item = item.strip()
        if item == "*":
            out.append("*")
            continue
        alias, _, name = item.rpartition(":")
        if "(" in name or "::" in item:
            raise QueryError(
                "PGRST100",
                f'"failed to parse select parameter ({select})"',
                details="only columns, JSON paths, `*` and `alias:column` are supported here",
            )
        sql, _, output = source.path(name, params)
        out.append(f"{sql} as {ident(alias or output)}")
    return ", ".join(out)


def returning_list(source: Source, select: str | None, primary_key: list[str]) -> str:
    """What a write returns for `select`, as PostgREST's RETURNING: the selected columns and the
    primary key, or every column when `*` is selected. Only these need the SELECT privilege, so a
    table with column privileges takes writes that select the columns the role may read."""
    if not select or select == "*":
        return "*"
    names = dict.fromkeys(primary_key)
    for item in split_top(select):
        name = item.strip().rpartition(":")[2]
        if name == "*":
            return "*"
        names[_ARROW.split(name)[0]] = None
    return ", ".join(source.column(name) for name in names)


def order_by(source: Source, order: str | None, params: Params) -> str:
    if not order:
        return ""
    terms = []
    for term in split_top(order):
        name, *modifiers = term.split(".")
        sql = source.path(name, params)[0]
        for mod in modifiers:
            if mod not in ("asc", "desc", "nullsfirst", "nullslast"):
                raise QueryError(
                    "PGRST100",
                    f'"failed to parse order ({order})" (line 1, column 1)',
                    details=f"unexpected {mod!r}",
                )
            sql += {"asc": " asc", "desc": " desc", "nullsfirst": " nulls first", "nullslast": " nulls last"}[
                mod
            ]
        terms.append(sql)
    return " order by " + ", ".join(terms)


def paging(limit: str | None, offset: str | None, params: Params, max_rows: int | None = None) -> str:
    """LIMIT and OFFSET; with PostgREST's db-max-rows (`max_rows`) the LIMIT is at most that
    many rows, whether the request asked for fewer, more or none (its restrictRange)."""
    sql = ""
    for word, value in (("limit", limit), ("offset", offset)):
        if value is None:
            if word == "limit" and max_rows is not None:
                sql += f" limit {params.add(max_rows)}::bigint"
            continue
        if not value.isdigit():
            raise QueryError("PGRST100", f'"failed to parse {word} parameter ({value})"')
        number = int(value) if word == "offset" or max_rows is None else min(int(value), max_rows)
        sql += f" {word} {params.add(number)}::bigint"
    return sql
