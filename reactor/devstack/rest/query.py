"""PostgREST's URL grammar turned into SQL: filters, `select`, `order`, `limit` and `offset`.

Names reach SQL only after they are found in the schema cache, and then quoted; values reach it
only as bind parameters, cast to the column's type in SQL (as PostgREST's unknown-typed literals
take the column's type).

The grammar is PostgREST's (QueryParams.hs): every operator (its SqlFragment.hs gives the SQL of
each), `not.`, the `(any)`/`(all)` modifiers, full-text search with an optional language, and
logic trees parsed as it parses them: a value in `or=(…)`/`and=(…)` is a quoted string, an array
literal in braces, or text up to the next comma or closing parenthesis. The Accept header is
negotiated here too (negotiate()).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_ARROW = re.compile(r"(->>?)")
# Operators taking one value, compared with the value cast to the column's type.
_SIMPLE = {
    "neq": "<>",
    "cs": "@>",
    "cd": "<@",
    "ov": "&&",
    "sl": "<<",
    "sr": ">>",
    "nxr": "&<",
    "nxl": "&>",
    "adj": "-|-",
}
# Operators that also take `(any)` or `(all)` and then an array literal.
_QUANT = {"eq": "=", "gte": ">=", "gt": ">", "lte": "<=", "lt": "<"}
_PATTERN = {"like": "like", "ilike": "ilike", "match": "~", "imatch": "~*"}
_FTS = {
    "fts": "to_tsquery",
    "plfts": "plainto_tsquery",
    "phfts": "phraseto_tsquery",
    "wfts": "websearch_to_tsquery",
}
_IS_VALUES = {"null": "null", "not_null": "not null", "true": "true", "false": "false", "unknown": "unknown"}
LOGIC_KEYS = ("or", "and", "not.or", "not.and")
RESERVED = {"select", "order", "limit", "offset", "columns", "on_conflict", *LOGIC_KEYS}


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
    alias: str | None = None  # the FROM item's alias that qualifies its columns, if any

    def column(self, name: str) -> str:
        if name not in self.columns:
            raise QueryError("42703", f"column {self.name}.{name} does not exist")
        return ident(name) if self.alias is None else f"{self.alias}.{ident(name)}"

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


def split_top(text: str, what: str = "") -> list[str]:
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
        if depth < 0:
            break
    if quoted or depth:
        raise QueryError(
            "PGRST100",
            f'"failed to parse {what + " " if what else ""}({text})" (line 1, column {len(text)})',
            details="unbalanced quotes or parentheses",
        )
    parts.append("".join(current))
    return parts


def unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value


# -- filters ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class OpExpr:
    """One parsed `[not.]op[(modifier)].value`."""

    negate: bool
    op: str
    value: str = ""
    items: tuple[str, ...] = ()  # for `in`
    quant: str | None = None  # any or all
    lang: str | None = None  # for full-text search


class _Cursor:
    """A position in a text being parsed, and PostgREST's parse errors for it."""

    def __init__(self, text: str, what: str, shown: str | None = None) -> None:
        self.text, self.pos, self.what = text, 0, what
        self.shown = text if shown is None else shown
        self.offset = len(text) - len(self.shown)  # a logic tree is parsed with its operator

    def take(self, word: str) -> bool:
        if self.text.startswith(word, self.pos):
            self.pos += len(word)
            return True
        return False

    def peek(self) -> str:
        return self.text[self.pos : self.pos + 1]

    def word(self) -> str:
        start = self.pos
        while self.pos < len(self.text) and (self.text[self.pos].isalnum() or self.text[self.pos] == "_"):
            self.pos += 1
        return self.text[start : self.pos]

    def until(self, stops: str) -> str:
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] not in stops:
            self.pos += 1
        return self.text[start : self.pos]

    def quoted(self) -> str | None:
        """A double-quoted value with backslash escapes, or None (and no move) if there is none."""
        if self.peek() != '"':
            return None
        out, i = [], self.pos + 1
        while i < len(self.text):
            ch = self.text[i]
            if ch == "\\" and i + 1 < len(self.text):
                out.append(self.text[i + 1])
                i += 2
                continue
            if ch == '"':
                self.pos = i + 1
                return "".join(out)
            out.append(ch)
            i += 1
        return None

    def error(self, expecting: str) -> QueryError:
        found = self.text[self.pos : self.pos + 1]
        unexpected = f'unexpected "{found}"' if found else "unexpected end of input"
        column = self.pos - self.offset + 1
        return QueryError(
            "PGRST100",
            f'"failed to parse {self.what} ({self.shown})" (line 1, column {max(column, 1)})',
            details=f"{unexpected} expecting {expecting}",
        )

    def expect(self, char: str, expecting: str | None = None) -> None:
        if not self.take(char):
            raise self.error(expecting or f'"{char}"')


def _op_expr(cur: _Cursor, in_logic: bool) -> OpExpr:
    """PostgREST's pOpExpr: the value is the rest of the text, or in a logic tree pLogicSingleVal."""
    start = cur.pos
    negate = cur.take("not.")
    op = cur.word()
    if op == "in":
        cur.expect(".", "delimiter (.)")
        return OpExpr(negate, op, items=tuple(_list_value(cur)))
    if op == "is":
        cur.expect(".", "delimiter (.)")
        word = cur.word()
        if word.lower() not in _IS_VALUES:
            cur.pos -= len(word)
            raise cur.error("isVal: (null, not_null, true, false, unknown)")
        return OpExpr(negate, op, word.lower())
    if op in _FTS:
        lang = None
        if cur.take("("):
            lang = cur.until(")")
            cur.expect(")")
        cur.expect(".", "delimiter (.)")
        return OpExpr(negate, op, _single_value(cur, in_logic), lang=lang)
    if op in _SIMPLE or op == "isdistinct":
        cur.expect(".", "delimiter (.)")
        return OpExpr(negate, op, _single_value(cur, in_logic))
    if op in _QUANT or op in _PATTERN:
        quant = None
        if cur.take("("):
            quant = cur.word()
            if quant not in ("any", "all"):
                cur.pos -= len(quant)
                raise cur.error('"any" or "all"')
            cur.expect(")")
        cur.expect(".", "delimiter (.)")
        return OpExpr(negate, op, _single_value(cur, in_logic), quant=quant)
    cur.pos = start + (4 if negate else 0)
    raise cur.error('"not" or operator (eq, gt, ...)' if not negate else "operator (eq, gt, ...)")


def _single_value(cur: _Cursor, in_logic: bool) -> str:
    if not in_logic:
        value, cur.pos = cur.text[cur.pos :], len(cur.text)
        return value
    start = cur.pos
    quoted = cur.quoted()
    if quoted is not None and (cur.pos == len(cur.text) or cur.peek() in ",)"):
        return quoted
    cur.pos = start
    if cur.peek() == "{":
        value = cur.until("}")
        if cur.take("}"):
            return value + "}"
        cur.pos = start
    return cur.until(",)")


def _list_value(cur: _Cursor) -> list[str]:
    """PostgREST's pListVal: `(a,"b,c",d)`, elements quoted or up to a comma or parenthesis."""
    cur.expect("(")
    items = []
    while True:
        start = cur.pos
        quoted = cur.quoted()
        if quoted is None or (cur.peek() not in ",)" or not cur.peek()):
            cur.pos = start
            quoted = None
            items.append(cur.until(",)"))
        else:
            items.append(quoted)
        if not cur.take(","):
            break
    cur.expect(")", '"," or ")"')
    return items


def parse_filter(expr: str) -> OpExpr:
    """A query-string filter value, e.g. `not.cs.{a,b}` or `like(any).{a*,b*}`."""
    cur = _Cursor(expr, "filter")
    found = _op_expr(cur, in_logic=False)
    if found.op == "in" and cur.pos != len(cur.text):
        raise cur.error("end of input")
    if found.op == "is" and cur.pos != len(cur.text):
        raise cur.error("end of input")
    return found


def condition(source: Source, column: str, expr: str | OpExpr, params: Params) -> str:
    """SQL for one `column=[not.]op.value` filter."""
    found = parse_filter(expr) if isinstance(expr, str) else expr
    col, kind, _ = source.path(column, params)
    sql = _operation(col, kind, found, params)
    return f"not ({sql})" if found.negate else sql


def _operation(col: str, kind: str, e: OpExpr, params: Params) -> str:
    op, value = e.op, e.value
    if op == "is":
        return f"{col} is {_IS_VALUES[value]}"
    if op == "in":
        items = [] if e.items == ("",) else list(e.items)
        return f"{col} = any(cast({params.add(items)}::text[] as {kind}[]))"
    if op == "isdistinct":
        return f"{col} is distinct from cast({params.add(value)}::text as {kind})"
    if op in _FTS:
        language = f"{params.add(e.lang)}::regconfig, " if e.lang else ""
        return f"{col} @@ {_FTS[op]}({language}{params.add(value)}::text)"
    if op in _SIMPLE:
        return f"{col} {_SIMPLE[op]} cast({params.add(value)}::text as {kind})"
    if op in _PATTERN:
        pattern = value.replace("*", "%") if op in ("like", "ilike") else value
        if e.quant:
            return f"{col}::text {_PATTERN[op]} {e.quant}(cast({params.add(pattern)}::text as text[]))"
        return f"{col}::text {_PATTERN[op]} {params.add(pattern)}::text"
    if e.quant:
        return f"{col} {_QUANT[op]} {e.quant}(cast({params.add(value)}::text as {kind}[]))"
    return f"{col} {_QUANT[op]} cast({params.add(value)}::text as {kind})"


@dataclass(frozen=True)
class LogicTree:
    """`and`/`or` over filters and nested trees, as PostgREST's LogicTree."""

    negate: bool
    joiner: str  # "and" or "or"
    items: tuple[LogicTree | tuple[str, OpExpr], ...]  # a tree, or (field, operation)


def parse_logic(key: str, value: str) -> LogicTree:
    """`or=(…)`, `not.and=(…)`: parsed as PostgREST parses `or(…)`, its errors counted from it."""
    op = key.removeprefix("not.")
    prefix = "not." if key.startswith("not.") else ""
    cur = _Cursor(prefix + op + value, "logic tree", value)
    tree = _logic_tree(cur)
    if isinstance(tree, tuple) or cur.pos != len(cur.text):
        raise cur.error('"," or ")"')
    return tree


def _logic_tree(cur: _Cursor) -> LogicTree | tuple[str, OpExpr]:
    start = cur.pos
    try:
        return _logic_filter(cur)
    except QueryError:
        cur.pos = start
    negate = cur.take("not.")
    joiner = cur.word()
    if joiner not in ("and", "or"):
        cur.pos -= len(joiner)
        raise cur.error("logic operator (and, or)")
    cur.expect("(")
    items = [_logic_tree(cur)]
    while cur.take(","):
        items.append(_logic_tree(cur))
    cur.expect(")", '"," or ")"')
    return LogicTree(negate, joiner, tuple(items))


def _logic_filter(cur: _Cursor) -> tuple[str, OpExpr]:
    quoted = cur.quoted()
    field = quoted if quoted is not None else cur.until(".,()")
    if not field:
        raise cur.error("field name (* or [a..z0..9_$])")
    cur.expect(".", "delimiter (.)")
    found = _op_expr(cur, in_logic=True)
    if cur.pos < len(cur.text) and cur.peek() not in ",)":
        raise cur.error('"," or ")"')
    return field.strip(), found


def logic_sql(source: Source, tree: LogicTree, params: Params) -> str:
    parts = [
        logic_sql(source, item, params) if isinstance(item, LogicTree) else condition(source, *item, params)
        for item in tree.items
    ]
    sql = "(" + f" {tree.joiner} ".join(parts) + ")"
    return f"not {sql}" if tree.negate else sql


def logic(source: Source, key: str, value: str, params: Params) -> str:
    """SQL for `or=(…)` / `and=(…)`, nested as PostgREST allows."""
    return logic_sql(source, parse_logic(key, value), params)


_FILTER_OPERATORS = {*_SIMPLE, *_QUANT, *_PATTERN, *_FTS, "is", "in", "not", "isdistinct"}


def looks_like_filter(value: str) -> bool:
    """Whether a query value reads as `op.value` (a filter) rather than a plain function argument."""
    op = re.split(r"[.(]", value, maxsplit=1)[0]
    return op != value and op in _FILTER_OPERATORS


def where(
    source: Source, query: list[tuple[str, str]], params: Params, skip: frozenset[str] = frozenset()
) -> str:
    clauses = []
    for key, value in query:
        if key in skip or key in RESERVED - set(LOGIC_KEYS):
            continue
        if key in LOGIC_KEYS:
            clauses.append(logic(source, key, value, params))
        else:
            clauses.append(condition(source, unquote(key), value, params))
    return " where " + " and ".join(clauses) if clauses else ""


# -- select ----------------------------------------------------------------------------------

# Casts in `select` reach SQL as quoted type names: these SQL spellings become theirs.
_TYPE_ALIASES = {
    "int": "int4",
    "integer": "int4",
    "smallint": "int2",
    "bigint": "int8",
    "boolean": "bool",
    "real": "float4",
    "float": "float8",
    "decimal": "numeric",
    "varchar": "varchar",
    "timestamptz": "timestamptz",
}
_CAST = re.compile(r"^[a-z_][a-z0-9_]*$")
_AGGREGATE = re.compile(r"(^|\.)(count|sum|avg|max|min)$")


@dataclass(frozen=True)
class Field:
    """A column or JSON path in `select`, with its alias and cast."""

    name: str
    alias: str | None = None
    cast: str | None = None


@dataclass(frozen=True)
class Embed:
    """`alias:table!hint!inner(…)` or `...table(…)` in `select`."""

    name: str
    items: tuple[Field | Embed, ...]
    alias: str | None = None
    hint: str | None = None
    inner: bool = False
    spread: bool = False

    @property
    def key(self) -> str:
        return self.alias or self.name


def parse_select(select: str | None) -> list[Field | Embed]:
    if select is None or not select.strip():
        return [Field("*")]
    return _select_items(select, select)


def _select_error(select: str, details: str) -> QueryError:
    return QueryError("PGRST100", f'"failed to parse select parameter ({select})"', details=details)


def _select_items(text: str, select: str) -> list[Field | Embed]:
    if not text.strip():
        return []
    items: list[Field | Embed] = []
    for raw in split_top(text, "select parameter"):
        item = raw.strip(" \t")
        if not item:
            raise _select_error(select, "unexpected end of input expecting field name (* or [a..z0..9_$])")
        paren = _outside_quotes(item, "(")
        if paren < 0:
            items.append(_field(item, select))
            continue
        if not item.endswith(")"):
            raise _select_error(select, f'unexpected "{item[-1]}" expecting ")"')
        head, inner = item[:paren].strip(), item[paren + 1 : -1]
        if _AGGREGATE.search(head) and not inner.strip():
            raise QueryError("PGRST123", "Use of aggregate functions is not allowed", 400)
        items.append(_embed(head, inner, select))
    return items


def _outside_quotes(text: str, char: str) -> int:
    """Where `char` first occurs outside double quotes (backslash escapes inside them), or -1."""
    quoted, escaped = False, False
    for i, ch in enumerate(text):
        if escaped:
            escaped = False
        elif quoted and ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == char and not quoted:
            return i
    return -1


def _alias(text: str) -> tuple[str | None, str]:
    """`alias:name` (one colon, not a cast's `::`) split in two."""
    quoted = False
    for i, ch in enumerate(text):
        if ch == '"':
            quoted = not quoted
        elif ch == ":" and not quoted:
            if text[i + 1 : i + 2] == ":" or (i and text[i - 1] == ":"):
                return None, text
            return unquote(text[:i].strip()), text[i + 1 :].strip()
    return None, text


def _field(item: str, select: str) -> Field:
    if item == "*":
        return Field("*")
    alias, rest = _alias(item)
    name, cast = rest, None
    at = rest.find("::")
    if at >= 0 and _outside_quotes(rest, ":") == at:
        name, cast = rest[:at].strip(), rest[at + 2 :].strip().lower()
        cast = _TYPE_ALIASES.get(cast, cast)
        if not _CAST.match(cast):
            raise _select_error(select, f"unexpected cast type {cast!r}")
    if not name:
        raise _select_error(select, "unexpected end of input expecting field name (* or [a..z0..9_$])")
    return Field(unquote(name) if name.startswith('"') else name, alias, cast)


def _embed(head: str, inner: str, select: str) -> Embed:
    spread = head.startswith("...")
    if spread:
        head = head[3:]
        alias = None
    else:
        alias, head = _alias(head)
    name, *marks = head.split("!")
    name = unquote(name.strip())
    if not name:
        raise _select_error(select, 'unexpected "(" expecting field name (* or [a..z0..9_$])')
    hint, inner_join = None, False
    for mark in marks:
        mark = mark.strip()
        if mark == "inner":
            inner_join = True
        elif mark == "left":
            inner_join = False
        elif mark and hint is None:
            hint = unquote(mark)
        else:
            raise _select_error(select, f'unexpected "!{mark}"')
    return Embed(name, tuple(_select_items(inner, select)), alias, hint, inner_join, spread)


def field_sql(source: Source, item: Field, params: Params) -> str:
    """`column`, `alias:column`, a JSON path or a cast, as a select-list entry."""
    if item.name == "*":
        return "*" if source.alias is None else f"{source.alias}.*"
    sql, _, output = source.path(item.name, params)
    if item.cast:
        sql = f"cast({sql} as {ident(item.cast)})"
    return f"{sql} as {ident(item.alias or output)}"


def select_list(source: Source, select: str | None, params: Params) -> str:
    """The select list of a request without embedded resources (function results)."""
    out = []
    for item in parse_select(select):
        if isinstance(item, Embed):
            raise QueryError(
                "PGRST200",
                f"Could not find a relationship between '{source.name}' and '{item.name}' "
                "in the schema cache",
                400,
                "The local stack embeds resources in tables' rows only, not in a function's results.",
            )
        out.append(field_sql(source, item, params))
    return ", ".join(out)


def returning_list(source: Source, select: str | None, primary_key: list[str]) -> str:
    """What a write returns for `select`, as PostgREST's RETURNING: the selected columns and the
    primary key, or every column when `*` is selected or a resource is embedded (its join needs
    the keys). Only these need the SELECT privilege, so a table with column privileges takes
    writes that select the columns the role may read."""
    items = parse_select(select)
    if any(isinstance(i, Embed) or i.name == "*" for i in items):
        return "*"
    names = dict.fromkeys(primary_key)
    for item in items:
        assert isinstance(item, Field)
        names[_ARROW.split(item.name)[0]] = None
    return ", ".join(source.column(name) for name in names)


# -- order -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class OrderTerm:
    name: str  # a column or JSON path
    relation: str | None  # `relation(column)` orders by a to-one embedded resource's column
    modifiers: tuple[str, ...]


_IDENTIFIER = re.compile(r"^[\w $]+$")  # PostgREST's pIdentifier
_ORDER_SQL = {"asc": " asc", "desc": " desc", "nullsfirst": " nulls first", "nullslast": " nulls last"}


def parse_order(order: str) -> list[OrderTerm]:
    terms = []
    for raw in split_top(order, "order"):
        term = raw.strip()
        relation = None
        paren = _outside_quotes(term, "(")
        if paren >= 0:
            close = term.find(")", paren)
            if close < 0:
                raise QueryError("PGRST100", f'"failed to parse order ({order})" (line 1, column 1)')
            relation = unquote(term[:paren].strip())
            name, rest = term[paren + 1 : close].strip(), term[close + 1 :]
            modifiers = [m for m in rest.split(".") if m] if rest.startswith(".") or not rest else None
        else:
            name, *modifiers = term.split(".")
        column = _ARROW.split(name)[0]
        if column and not column.startswith('"') and not _IDENTIFIER.match(column):
            raise QueryError(
                "PGRST100",
                f'"failed to parse order ({order})" (line 1, column 1)',
                details="expecting field name (* or [a..z0..9_$])",
            )
        if not name or modifiers is None or any(m not in _ORDER_SQL for m in modifiers):
            bad = next((m for m in modifiers or [term] if m not in _ORDER_SQL), term)
            raise QueryError(
                "PGRST100",
                f'"failed to parse order ({order})" (line 1, column 1)',
                details=f"unexpected {bad!r}",
            )
        terms.append(OrderTerm(unquote(name), relation, tuple(modifiers)))
    return terms


def order_sql(sql: str, term: OrderTerm) -> str:
    return sql + "".join(_ORDER_SQL[m] for m in term.modifiers)


def order_by(source: Source, order: str | None, params: Params) -> str:
    if not order:
        return ""
    terms = []
    for term in parse_order(order):
        if term.relation is not None:
            raise QueryError(
                "PGRST108",
                f"'{term.relation}' is not an embedded resource in this request",
                400,
                hint=f"Verify that '{term.relation}' is included in the 'select' query parameter.",
            )
        terms.append(order_sql(source.path(term.name, params)[0], term))
    return " order by " + ", ".join(terms)


# -- content negotiation ---------------------------------------------------------------------

JSON = "application/json"
CSV = "text/csv"
OBJECT = "application/vnd.pgrst.object+json"
STRIPPED = ";nulls=stripped"
_ARRAY = ("application/vnd.pgrst.array+json", "application/vnd.pgrst.array")


def negotiate(accept: str | None, produces: tuple[str, ...] = (JSON, CSV, OBJECT)) -> tuple[str, bool]:
    """The media type PostgREST answers for an Accept header, and whether nulls are stripped:
    the first acceptable type by quality (its Negotiate.hs over wai's parseHttpAccept), else 406
    PGRST107. Plans (`application/vnd.pgrst.plan`) are off, as db-plan-enabled is on Supabase."""
    if accept is None or not accept.strip():
        return JSON, False
    wanted = []
    for n, part in enumerate(accept.split(",")):
        raw = part.replace(" ", "")
        raw, _, quality = raw.partition(";q=")
        try:
            q = float(quality.split(";")[0]) if quality else 1.0
        except ValueError:
            q = 1.0
        # wai's parseHttpAccept: by quality, then specificity (parameters less wildcards), stable.
        wanted.append((-q, raw.count("*") - raw.count(";"), n, raw))
    wanted.sort()
    mimes = []
    for *_, raw in wanted:
        kind, *parameters = raw.split(";")
        args = {}
        for p in parameters:
            key, _, value = p.partition("=")
            args[key.lower()] = value.strip('"')
        lowered = kind.lower()
        stripped = args.get("nulls") == "stripped"
        if lowered in ("*/*", "application/json") and JSON in produces:
            return JSON, False
        if lowered in _ARRAY and JSON in produces:
            return JSON, stripped
        if lowered == CSV and CSV in produces:
            return CSV, False
        if lowered in (OBJECT, "application/vnd.pgrst.object") and OBJECT in produces:
            return OBJECT, stripped
        mimes.append(_mime(lowered, raw, args))
    raise QueryError("PGRST107", f"None of these media types are available: {', '.join(mimes)}", 406)


def _mime(lowered: str, kind: str, args: dict[str, str]) -> str:
    """The media type as PostgREST names it back (MediaType.toMime)."""
    if lowered in ("application/vnd.pgrst.plan", "application/vnd.pgrst.plan+text"):
        fmt = "text"
    elif lowered == "application/vnd.pgrst.plan+json":
        fmt = "json"
    else:
        known = {
            "application/json",
            "text/csv",
            "text/plain",
            "text/xml",
            "application/octet-stream",
            "application/geo+json",
            "application/openapi+json",
            "application/x-www-form-urlencoded",
        }
        if lowered in _ARRAY:
            return _ARRAY[0] + STRIPPED if args.get("nulls") == "stripped" else JSON
        if lowered in (OBJECT, "application/vnd.pgrst.object"):
            return OBJECT + (STRIPPED if args.get("nulls") == "stripped" else "")
        return lowered if lowered in known else kind
    target = args.get("for", JSON)
    chosen = args.get("options", "").split("|")
    options = [o for o in ("analyze", "verbose", "settings", "buffers", "wal") if o in chosen]
    text = f'application/vnd.pgrst.plan+{fmt}; for="{target}"'
    return text + (f"; options={'|'.join(options)}" if options else "")


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
