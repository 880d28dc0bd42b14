"""Function calls of the local stack's `/rest/v1/rpc/<fn>`, with PostgREST's response shapes.

A scalar comes back bare, a composite as one object, a set as an array (rows of a set can be
filtered, selected, ordered and paged like a table's), and `void` as 204 with no body.
With db-max-rows (the profile's `max_rows`) a set is cut to that many rows, as PostgREST cuts
every read; a function returning one value (a jsonb array included) is one row, never cut.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from reactor.devstack.rest.backend import Backend
from reactor.devstack.rest.catalog import SCHEMA, Catalog, Function, closest
from reactor.devstack.rest.query import (
    JSON,
    RESERVED,
    Params,
    QueryError,
    Source,
    content_range,
    ident,
    looks_like_filter,
    negotiate,
    not_single,
    order_by,
    paging,
    select_list,
    where,
)

OBJECT_MEDIA = "application/vnd.pgrst.object+json"


async def call_function(db: Backend, request: web.Request, claims: dict[str, Any]) -> web.Response:
    name = request.match_info["function"]
    # JSON and single objects only: CSV and stripped nulls from a function are not produced here.
    negotiate(request.headers.get("Accept"), produces=(JSON, OBJECT_MEDIA))
    query = list(request.query.items())
    if request.method in ("GET", "HEAD"):
        # As in PostgREST, a query parameter whose value reads as `op.value` filters the result;
        # any other non-reserved one is an argument.
        args: Any = {k: v for k, v in query if k not in RESERVED and not looks_like_filter(v)}
        filters = [(k, v) for k, v in query if k not in args]
    elif request.method == "POST":
        (args, text), filters = await _json_body(request), query
    else:
        raise QueryError("PGRST117", f"Unsupported HTTP method: {request.method}", 405)
    fn = await _resolve(db, name, args, request.method == "POST")
    params = Params()
    if request.method == "POST":
        call = _call_sql_from_body(fn, args, text, params)
    else:
        call = _call_sql_from_query(fn, args, params)
    sql = _result_sql(fn, call, filters, request.query, params, db.max_rows)
    readonly = request.method in ("GET", "HEAD") or not fn.volatile
    total, shown, body = await db.counted_body(request, claims, readonly, sql, params.values, fn.settings)
    if fn.is_void:
        return web.Response(status=204)
    headers = {}
    status = 200
    if fn.returns_set:
        counted = any("count=" in p for p in request.headers.getall("Prefer", []))
        offset = int(request.query.get("offset", "0") or 0)
        headers["Content-Range"] = content_range(offset, shown, total if counted else None)
        if counted and shown < total:
            status = 206  # a counted page short of the whole, as PostgREST's rangeStatus answers
        if request.headers.get("Accept", "").startswith(OBJECT_MEDIA):
            body = _single(body)
    return web.Response(
        text=body or "null", status=status, content_type="application/json", charset="utf-8", headers=headers
    )


def _result_sql(
    fn: Function, call: str, filters: list[tuple[str, str]], query, params: Params, max_rows: int | None
) -> str:
    """One statement giving (row count, rows shown, JSON body) for the function's return shape."""
    if fn.returns_set and fn.returns_rows:
        source = Source(fn.name, fn.result_columns)
        # The function runs once, in the CTE; the count sees every matching row, the body one page.
        return (
            f"with _s as (select * from (select _s.* from {call} _s) _s{where(source, filters, params)}) "
            f"select (select count(*) from _s), count(*), coalesce(json_agg(_r), '[]')::text from ("
            f"select {select_list(source, query.get('select'), params)} from _s"
            f"{order_by(source, query.get('order'), params)}"
            f"{paging(query.get('limit'), query.get('offset'), params, max_rows)}) _r"
        )
    if fn.returns_set and max_rows is not None:
        # A set of single values, cut (and paged) as PostgREST cuts it; the count sees them all.
        return (
            f"with _s as (select _s from {call} _s) "
            f"select (select count(*) from _s), count(*), coalesce(json_agg(_r._s), '[]')::text "
            f"from (select _s from _s{paging(query.get('limit'), query.get('offset'), params, max_rows)}) _r"
        )
    if fn.returns_set:
        return f"select count(*), count(*), coalesce(json_agg(_s), '[]')::text from {call} _s"
    if fn.returns_rows:
        return f"select 1, 1, case when _s is null then 'null' else row_to_json(_s)::text end from {call} _s"
    if fn.is_void:
        return f"select 1, 1, null::text from {call} _s"
    return f"select 1, 1, to_json(_s)::text from {call} _s"


def _single(body: str) -> str:
    rows = json.loads(body)
    if len(rows) != 1:
        raise not_single(len(rows))
    return json.dumps(rows[0])


async def _resolve(db: Backend, name: str, args: Any, is_post: bool) -> Function:
    for reload in (False, True):
        catalog = await db.catalog(reload)
        for fn in catalog.functions.get(name, []):
            if fn.single_json_arg or (isinstance(args, dict) and fn.accepts(set(args))):
                return fn
    raise _not_found(catalog, name, sorted(args) if isinstance(args, dict) else [], is_post)


def _not_found(catalog: Catalog, name: str, names: list[str], is_post: bool) -> QueryError:
    """PGRST202 as PostgREST words it (Error.hs, NoRpc): the call by JSON body also looked for a
    single unnamed json/jsonb parameter; the hint names the closest function in the cache or,
    when the name exists, the closest parameter list (Fuzzy scores 0.75 and 0.33)."""
    function = f"{SCHEMA}.{name}"
    if names:
        described = f"{function}({', '.join(names)})"
        searched = f" with parameter{'s' if len(names) > 1 else ''} {', '.join(names)}"
    else:
        described, searched = f"{function} without parameters", " without parameters"
    if is_post:
        searched += " or with a single unnamed json/jsonb parameter"
    overloads = catalog.functions.get(name, [])
    if overloads:
        found = closest([_param_list(fn.arg_names) for fn in overloads], _param_list(names), 0.33)
        found = None if found is None else f"{name}{found}"
    else:
        found = closest(list(catalog.functions), name, 0.75)
    return QueryError(
        "PGRST202",
        f"Could not find the function {described} in the schema cache",
        404,
        f"Searched for the function {function}{searched}, but no matches were found in the schema cache.",
        None if found is None else f"Perhaps you meant to call the function {SCHEMA}.{found}",
    )


def _param_list(names: tuple[str, ...] | list[str]) -> str:
    return "(" + ", ".join(sorted(names)) + ")"


def _call_sql_from_query(fn: Function, args: dict[str, Any], params: Params) -> str:
    """The call in a FROM clause, arguments from the query string (text, cast to each type)."""
    target = f"{ident(SCHEMA)}.{ident(fn.name)}"
    if fn.single_json_arg:
        return f"{target}({params.add(json.dumps(args))}::{fn.arg_types[0]})"
    parts = [
        f"{ident(name)} => cast({params.add(args[name])}::text as {kind})"
        for name, kind in zip(fn.arg_names, fn.arg_types, strict=True)
        if name in args
    ]
    return f"{target}({', '.join(parts)})"


def _call_sql_from_body(fn: Function, args: Any, text: str, params: Params) -> str:
    """The call in a FROM clause, arguments from the JSON body, which is bound once: one
    jsonb_to_record turns it into the arguments' types as PostgREST does, arrays, objects and
    numbers included."""
    target = f"{ident(SCHEMA)}.{ident(fn.name)}"
    if fn.single_json_arg:
        return f"{target}({params.add(text)}::{fn.arg_types[0]})"
    named = [(n, k) for n, k in zip(fn.arg_names, fn.arg_types, strict=True) if n in args]
    if not named:
        return f"{target}()"
    columns = ", ".join(f"{ident(n)} {k}" for n, k in named)
    passed = ", ".join(f"{ident(n)} => _a.{ident(n)}" for n, _ in named)
    body = params.add(text)
    return f"jsonb_to_record({body}::jsonb) as _a({columns}) cross join lateral {target}({passed})"


async def _json_body(request: web.Request) -> tuple[Any, str]:
    """The body parsed, and as text ("{}" when empty)."""
    text = await request.text()
    if not text.strip():
        return {}, "{}"
    try:
        return json.loads(text), text
    except json.JSONDecodeError as exc:
        raise QueryError("PGRST102", "Empty or invalid json", 400, str(exc)) from exc
