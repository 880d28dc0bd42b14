"""A table read as PostgREST plans it: the `select` tree with embedded resources, each query
parameter given to the resource its path names, and one SQL statement for the whole tree.

Embedding follows PostgREST's ReadPlan and QueryBuilder: each embedded resource is a LATERAL
subquery correlated with its parent row over the relationship's columns, a to-many one
aggregated with json_agg into an array (`[]` when empty), a to-one one turned into an object
(null when there is no row); `!inner` makes the join an inner one, `...` spreads a resource's
columns into its parent (arrays of them for a to-many one). It is all one statement, run by the
caller in the request's transaction under its role and claims, so every embedded table (and a
many-to-many junction) is read under its own grants and row-level security, never as more.
Relationships come from the catalog and are chosen by name and hint as PostgREST's findRel does.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field

from reactor.devstack.rest.catalog import SCHEMA, Catalog, Relationship, closest
from reactor.devstack.rest.query import (
    CSV,
    LOGIC_KEYS,
    Embed,
    Field,
    LogicTree,
    OpExpr,
    OrderTerm,
    Params,
    QueryError,
    Source,
    condition,
    field_sql,
    ident,
    logic_sql,
    order_sql,
    paging,
    parse_filter,
    parse_logic,
    parse_order,
    parse_select,
    unquote,
)

_NOT_FILTERS = {"select", "columns", "on_conflict"}
_PAGE_KEYS = ("order", "limit", "offset")


@dataclass
class Node:
    """One resource of the tree: the request's table, or an embedded one."""

    table: str
    source: Source  # qualified by this node's FROM alias
    items: list[Field | Embed]
    embed: Embed | None = None  # how its parent named it
    rel: Relationship | None = None  # to its parent
    lateral: str = ""  # the alias of its LATERAL subquery in the parent
    parent_alias: str = ""  # the parent's FROM alias, which its join conditions refer to
    children: list[Node] = field(default_factory=list)
    filters: list[tuple[str, OpExpr]] = field(default_factory=list)
    trees: list[LogicTree] = field(default_factory=list)
    null_filters: list[tuple[Node, bool]] = field(default_factory=list)  # (child, is null)
    order: list[OrderTerm] = field(default_factory=list)
    limit: str | None = None
    offset: str | None = None

    @property
    def key(self) -> str:
        assert self.embed is not None
        return self.embed.key

    def child(self, key: str) -> Node | None:
        return next((c for c in self.children if c.key == key), None)


class Planner:
    """Builds the tree for one request from the catalog; aliases are numbered per request."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self._numbers = itertools.count(1)

    def plan(self, table: str, query: list[tuple[str, str]], source: Source | None = None) -> Node:
        """The tree for `table` (or, for a write's returned rows, `source`) and the query's
        filters, logic trees, orders and pages, each on the resource its path names."""
        root = self._node(table, parse_select(dict(query).get("select")), None, None, source)
        for key, value in query:
            if key in _NOT_FILTERS:
                continue
            path, last = _key_path(key)
            if last in _PAGE_KEYS or (last in LOGIC_KEYS and path) or key in LOGIC_KEYS:
                node = self._find(root, path)
                if last == "order":
                    node.order = parse_order(value)
                elif last == "limit":
                    node.limit = value
                elif last == "offset":
                    node.offset = value
                else:
                    node.trees.append(parse_logic(last, value))
                continue
            node = self._find(root, path)
            name = unquote(last)
            operation = parse_filter(value)
            embedded = node.child(name)
            if name not in node.source.columns and embedded is not None:
                if operation.op != "is" or operation.value != "null":
                    raise QueryError(
                        "PGRST120",
                        f"Bad operator on the '{name}' embedded resource",
                        400,
                        "Only is null or not is null filters are allowed on embedded resources",
                    )
                node.null_filters.append((embedded, not operation.negate))
            else:
                node.filters.append((name, operation))
        return root

    def _node(
        self,
        table: str,
        items: list[Field | Embed],
        embed: Embed | None,
        rel: Relationship | None,
        source: Source | None = None,
    ) -> Node:
        alias = f"_t{next(self._numbers)}"
        if source is None:
            source = Source(table, self.catalog.columns[table], alias)
        node = Node(table, source, items, embed, rel)
        for item in items:
            if isinstance(item, Embed):
                found = self.find_rel(table, item.name, item.hint)
                child = self._node(found.ftable, list(item.items), item, found)
                child.lateral = f"_a{next(self._numbers)}"
                child.parent_alias = alias
                node.children.append(child)
        return node

    def _find(self, root: Node, path: list[str]) -> Node:
        node = root
        for name in path:
            child = node.child(name)
            if child is None:
                aliased = next((c for c in node.children if c.embed and c.embed.name == name), None)
                if aliased is not None:
                    raise QueryError(
                        "PGRST108",
                        f"'{name}' is not an embedded resource in this request",
                        400,
                        "Target names are not allowed in filters if they have an alias",
                        f"Change '{name}' to '{aliased.key}' in filters, orders or limits.",
                    )
                raise QueryError(
                    "PGRST108",
                    f"'{name}' is not an embedded resource in this request",
                    400,
                    hint=f"Verify that '{name}' is included in the 'select' query parameter.",
                )
            node = child
        return node

    def find_rel(self, origin: str, target: str, hint: str | None) -> Relationship:
        """PostgREST's findRel: by table name, foreign key name or column, narrowed by the hint."""
        rels = self.catalog.relationships.get(origin, [])
        found = [r for r in rels if _matches(r, target, hint)]
        if len(found) == 1:
            return found[0]
        if not found:
            raise QueryError(
                "PGRST200",
                f"Could not find a relationship between '{origin}' and '{target}' in the schema cache",
                400,
                f"Searched for a foreign key relationship between '{origin}' and '{target}'"
                + (f" using the hint '{hint}'" if hint else "")
                + f" in the schema '{SCHEMA}', but no matches were found.",
                self._no_rel_hint(origin, target),
            )
        hints = ", ".join(f"'{r.ftable}!{r.junction.table if r.junction else r.constraint}'" for r in found)
        raise QueryError(
            "PGRST201",
            f"Could not embed because more than one relationship was found for '{origin}' and '{target}'",
            300,
            [r.describe() for r in found],  # type: ignore[arg-type]  # a JSON list, as PostgREST's
            f"Try changing '{target}' to one of the following: {hints}. "
            "Find the desired relationship in the 'details' key.",
        )

    def _no_rel_hint(self, origin: str, target: str) -> str | None:
        """Error.hs noRelBetweenHint: the closest origin if it has none, else the closest target."""
        if origin not in self.catalog.relationships:
            found = closest(list(self.catalog.relationships), origin, 0.33)
            return None if found is None else f"Perhaps you meant '{found}' instead of '{origin}'."
        targets = [r.ftable for r in self.catalog.relationships[origin]]
        found = closest(targets, target, 0.33)
        if found is None or found == target:
            return None
        return f"Perhaps you meant '{found}' instead of '{target}'."


def _key_path(key: str) -> tuple[list[str], str]:
    """`a.b.col` as (["a", "b"], "col"); a quoted part may hold dots; `a.not.or` ends in `not.or`."""
    parts, current, quoted = [], [], False
    for ch in key:
        if ch == '"':
            quoted = not quoted
        if ch == "." and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    if len(parts) >= 2 and parts[-2] == "not" and parts[-1] in ("or", "and"):
        return parts[:-2], "not." + parts[-1]
    return parts[:-1], parts[-1]


def _matches(rel: Relationship, target: str, hint: str | None) -> bool:
    one_column = len(rel.columns) == 1
    column = rel.columns[0][0] if one_column else None
    fcolumn = rel.columns[0][1] if one_column else None
    if rel.is_self and rel.junction is None:
        if hint is None:
            return (target == rel.ftable and rel.cardinality == "one-to-many") or (
                target == column and rel.cardinality == "many-to-one"
            )
        return target == rel.ftable and rel.cardinality == "one-to-many" and hint == fcolumn
    if hint is None:
        return target == rel.ftable or (
            rel.junction is None and (target == rel.constraint or target == column)
        )
    if target != rel.ftable:
        return False
    if rel.junction is not None:
        return hint == rel.junction.table
    return hint in (rel.constraint, column, fcolumn)


# -- SQL -------------------------------------------------------------------------------------


def node_sql(
    node: Node,
    params: Params,
    max_rows: int | None = None,
    from_sql: str | None = None,
    paged: bool = True,
) -> str:
    """The SELECT for `node` and everything embedded in it; a child's is correlated with the
    parent's FROM alias. `from_sql` replaces the root's table (a write's returned rows)."""
    src = node.source
    alias = src.alias
    selects = [field_sql(src, item, params) for item in node.items if isinstance(item, Field)]
    joins = []
    for child in node.children:
        embed = child.embed
        assert embed is not None and child.rel is not None
        lat = child.lateral
        child_sql = node_sql(child, params)
        outputs = _outputs(child)
        kind = "inner" if embed.inner else "left"
        if child.rel.to_one:
            joins.append(f" {kind} join lateral ({child_sql}) as {lat} on true")
            if embed.spread:
                selects += [f"{lat}.{ident(name)}" for name in outputs]
            elif embed.items:
                selects.append(f"row_to_json({lat}.*)::jsonb as {ident(embed.key)}")
            continue
        row = f"{lat}_r"
        if embed.spread:
            aggregates = ", ".join(
                f"json_agg({row}.{ident(name)})::jsonb as {ident(name)}" for name in outputs
            )
            marker = f"count(*) as {lat}_n"
            on = f"{lat}.{lat}_n > 0" if embed.inner else "true"
            joins.append(
                f" {kind} join lateral (select {marker}{', ' if aggregates else ''}{aggregates} "
                f"from ({child_sql}) as {row}) as {lat} on {on}"
            )
            selects += [f"coalesce({lat}.{ident(name)}, '[]'::jsonb) as {ident(name)}" for name in outputs]
            continue
        agg = f"json_agg({row})::jsonb as {lat}_j"
        on = f"{lat}.{lat}_j is not null" if embed.inner else "true"
        joins.append(f" {kind} join lateral (select {agg} from ({child_sql}) as {row}) as {lat} on {on}")
        if embed.items:
            selects.append(f"coalesce({lat}.{lat}_j, '[]'::jsonb) as {ident(embed.key)}")
    conditions = []
    if node.rel is not None:
        table = f"{ident(SCHEMA)}.{ident(node.table)} as {alias}"
        conditions += _join_conditions(node)
        if node.rel.junction is not None:
            j = node.rel.junction
            junction_alias = f"{alias}_j"
            on = " and ".join(
                f"{junction_alias}.{ident(jc)} = {alias}.{ident(tc)}" for jc, tc in j.target_columns
            )
            table += f" join {ident(SCHEMA)}.{ident(j.table)} as {junction_alias} on {on}"
    else:
        table = f"{from_sql or ident(SCHEMA) + '.' + ident(node.table)} as {alias}"
    conditions += [condition(src, name, op, params) for name, op in node.filters]
    conditions += [logic_sql(src, tree, params) for tree in node.trees]
    for child, is_null in node.null_filters:
        lat = child.lateral
        if child.rel is not None and child.rel.to_one:
            conditions.append(f"{lat} is {'not ' if is_null else ''}distinct from null")
        elif child.embed is not None and child.embed.spread:
            conditions.append(f"{lat}.{lat}_n {'=' if is_null else '>'} 0")
        else:
            conditions.append(f"{lat}.{lat}_j is {'' if is_null else 'not '}null")
    sql = f"select {', '.join(selects)} from {table}{''.join(joins)}"
    if conditions:
        sql += " where " + " and ".join(conditions)
    if not paged:
        return sql
    if node.order:
        sql += " order by " + ", ".join(_order_term(node, term, params) for term in node.order)
    sql += paging(node.limit, node.offset, params, max_rows)
    return sql


def _join_conditions(node: Node) -> list[str]:
    """The child's rows that belong to the parent row (the parent's alias is `_t` of its source)."""
    rel = node.rel
    assert rel is not None
    parent = node.parent_alias
    if rel.junction is not None:
        j = rel.junction
        return [f"{node.source.alias}_j.{ident(jc)} = {parent}.{ident(oc)}" for jc, oc in j.source_columns]
    return [f"{node.source.alias}.{ident(fc)} = {parent}.{ident(oc)}" for oc, fc in rel.columns]


def _order_term(node: Node, term: OrderTerm, params: Params) -> str:
    if term.relation is None:
        return order_sql(node.source.path(term.name, params)[0], term)
    child = node.child(term.relation)
    if child is None:
        raise QueryError(
            "PGRST108",
            f"'{term.relation}' is not an embedded resource in this request",
            400,
            hint=f"Verify that '{term.relation}' is included in the 'select' query parameter.",
        )
    assert child.rel is not None
    if not child.rel.to_one:
        raise QueryError(
            "PGRST118",
            f"A related order on '{term.relation}' is not possible",
            400,
            f"'{node.table}' and '{term.relation}' do not form a many-to-one or one-to-one relationship",
        )
    if term.name not in _outputs(child):
        raise QueryError("42703", f"column {child.lateral}.{term.name} does not exist")
    return order_sql(f"{child.lateral}.{ident(term.name)}", term)


def _outputs(node: Node) -> list[str]:
    """The names of the columns a node's SELECT gives, in order."""
    names: list[str] = []
    for item in node.items:
        if isinstance(item, Field):
            if item.name == "*":
                names += list(node.source.columns)
            else:
                names.append(item.alias or _output_name(item.name))
    for child in node.children:
        assert child.embed is not None
        if child.embed.spread:
            names += _outputs(child)
        elif child.embed.items:
            names.append(child.embed.key)
    return names


def _output_name(name: str) -> str:
    """A JSON path's output is its last key, as Source.path names it."""
    parts = re.split(r"->>?", name)
    return parts[-1] if len(parts) > 1 else name


def body_sql(rows_sql: str, media: str, strip: bool, ctes: str = "") -> str:
    """(body, rows) from the rows of `rows_sql`: a JSON array (nulls stripped if asked) or CSV as
    PostgREST writes it (a header from the first row's keys, then each row's text without its
    parentheses). `ctes` are earlier WITH items (a write's) the rows may read."""
    head = f"with {ctes + ', ' if ctes else ''}_b as ({rows_sql}) "
    if media == CSV:
        header = (
            "(select coalesce(string_agg(k, ','), '') from json_object_keys("
            "(select row_to_json(_h) from _b _h limit 1)) k)"
        )
        rows = "coalesce(string_agg(substring(_r::text, 2, length(_r::text) - 2), E'\\n'), '')"
        return f"{head}select {header} || E'\\n' || {rows}, count(*) from _b _r"
    agg = "json_strip_nulls(json_agg(_r))" if strip else "json_agg(_r)"
    return f"{head}select coalesce({agg}, '[]')::text, count(*) from _b _r"
