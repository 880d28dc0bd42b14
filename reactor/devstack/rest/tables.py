"""Table requests of the local stack's `/rest/v1`: select, insert (and upsert), update, delete.

A select is cut at db-max-rows (the profile's `max_rows`); rows a write returns never are, as
PostgREST leaves them whole since v10 (#2155).
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from reactor.devstack.rest.backend import Backend
from reactor.devstack.rest.catalog import SCHEMA, closest
from reactor.devstack.rest.query import (
    OBJECT,
    Params,
    QueryError,
    Source,
    content_range,
    ident,
    negotiate,
    not_single,
    returning_list,
    split_top,
    where,
)
from reactor.devstack.rest.read import Node, Planner, body_sql, node_sql


def _prefer(request: web.Request) -> dict[str, str]:
    prefs: dict[str, str] = {}
    for header in request.headers.getall("Prefer", []):
        for item in header.split(","):
            key, _, value = item.strip().partition("=")
            prefs[key] = value
    return prefs


async def _source(db: Backend, name: str) -> Source:
    for reload in (False, True):
        catalog = await db.catalog(reload)
        columns = catalog.columns.get(name)
        if columns is not None:
            return Source(name, columns)
    # PostgREST's hint names the closest table in the cache (Error.hs, tableNotFoundHint).
    found = closest(list(catalog.columns), name, 0.75)
    raise QueryError(
        "PGRST205",
        f"Could not find the table '{SCHEMA}.{name}' in the schema cache",
        404,
        hint=None if found is None else f"Perhaps you meant the table '{SCHEMA}.{found}'",
    )


async def table_request(db: Backend, request: web.Request, claims: dict[str, Any]) -> web.Response:
    source = await _source(db, request.match_info["table"])
    method = request.method
    if method in ("GET", "HEAD"):
        return await _select(db, request, claims, source)
    if method == "POST":
        return await _insert(db, request, claims, source)
    if method == "PATCH":
        return await _update(db, request, claims, source)
    if method == "DELETE":
        return await _delete(db, request, claims, source)
    raise QueryError("PGRST117", f"Unsupported HTTP method: {method}", 405)


async def _plan(db: Backend, table: str, query: list[tuple[str, str]], source: Source | None = None) -> Node:
    """The read tree; a relationship not found is looked for again in a fresh catalog (local
    profile), as a table created after start is."""
    try:
        return Planner(db.catalog_now()).plan(table, query, source)
    except QueryError as exc:
        if exc.code != "PGRST200":
            raise
    return Planner(await db.catalog(reload=True)).plan(table, query, source)


async def _select(db: Backend, request: web.Request, claims, source: Source) -> web.Response:
    media, strip = negotiate(request.headers.get("Accept"))
    query = list(request.query.items())
    root = await _plan(db, source.name, query)
    params = Params()
    sql = body_sql(node_sql(root, params, db.max_rows), media, strip)
    prefs = _prefer(request)
    async with db.transaction(request, claims, readonly=True) as conn:
        body, shown = await conn.fetchrow(sql, *params.values)
        total = None
        if prefs.get("count") in ("exact", "planned", "estimated"):
            count_params = Params()
            rows_sql = node_sql(await _plan(db, source.name, query), count_params, paged=False)
            total = await conn.fetchval(f"select count(*) from ({rows_sql}) _c", *count_params.values)
    offset = int(request.query.get("offset", "0") or 0)
    status = 206 if total is not None and shown < total and (offset or shown) else 200
    headers = {"Content-Range": content_range(offset, shown, total)}
    return _respond(request, body, shown, media, status, headers)


async def _insert(db: Backend, request: web.Request, claims, source: Source) -> web.Response:
    payload = await _body(request)
    rows = payload if isinstance(payload, list) else [payload]
    if not all(isinstance(r, dict) for r in rows):
        raise QueryError("PGRST102", "All object keys must match", 400)
    names = _insert_columns(request, rows)
    for name in names:
        if name not in source.columns:
            raise QueryError(
                "PGRST204", f"Could not find the '{name}' column of '{source.name}' in the schema cache", 400
            )
    prefs = _prefer(request)
    params = Params()
    table = f"{ident(SCHEMA)}.{ident(source.name)}"
    if not names:
        # Rows with no keys at all: every column takes its default.
        sql = f"insert into {table} select from jsonb_array_elements({params.add(json.dumps(rows))}::jsonb)"
    elif prefs.get("missing") == "default":
        sql = f"insert into {table} {_values_with_defaults(table, names, rows, params)}"
    else:
        cols = ", ".join(ident(n) for n in names)
        sql = (
            f"insert into {table} ({cols}) select {cols} from jsonb_populate_recordset("
            f"null::{table}, {params.add(json.dumps(rows))}::jsonb)"
        )
    if "resolution" in prefs and names:
        sql += _on_conflict(db, request, source, names, prefs["resolution"])
    return await _write(db, request, claims, sql, params, prefs, created=True)


def _insert_columns(request: web.Request, rows: list[dict]) -> list[str]:
    if "columns" in request.query:
        return [c.strip().strip('"') for c in split_top(request.query["columns"])]
    names: list[str] = []
    for r in rows:
        names += [k for k in r if k not in names]
    return names


def _values_with_defaults(table: str, names: list[str], rows: list[dict], params: Params) -> str:
    """`(cols) values …` where a key a row lacks is DEFAULT, not null (`Prefer: missing=default`)."""
    tuples = []
    for row in rows:
        record = f"jsonb_populate_record(null::{table}, {params.add(json.dumps(row))}::jsonb)"
        tuples.append(
            "(" + ", ".join(f"({record}).{ident(n)}" if n in row else "default" for n in names) + ")"
        )
    return f"({', '.join(ident(n) for n in names)}) values {', '.join(tuples)}"


def _on_conflict(db: Backend, request: web.Request, source: Source, names: list[str], resolution: str) -> str:
    keys = request.query.get("on_conflict")
    target = (
        [k.strip() for k in keys.split(",")] if keys else db.catalog_now().primary_keys.get(source.name, [])
    )
    conflict = ", ".join(source.column(k) for k in target)
    if resolution == "ignore-duplicates":
        return f" on conflict ({conflict}) do nothing"
    updates = ", ".join(f"{ident(n)} = excluded.{ident(n)}" for n in names)
    return f" on conflict ({conflict}) do update set {updates}"


async def _update(db: Backend, request: web.Request, claims, source: Source) -> web.Response:
    payload = await _body(request)
    if not isinstance(payload, dict):
        raise QueryError("PGRST102", "Empty or invalid json", 400)
    for name in payload:
        if name not in source.columns:
            raise QueryError(
                "PGRST204", f"Could not find the '{name}' column of '{source.name}' in the schema cache", 400
            )
    params = Params()
    table = f"{ident(SCHEMA)}.{ident(source.name)}"
    if not payload:
        media, _ = negotiate(request.headers.get("Accept"))
        return _respond(request, "[]", 0, media, 200 if _returns(request) else 204, {"Content-Range": "*/*"})
    cols = ", ".join(ident(n) for n in payload)
    source_row = f"jsonb_populate_record(null::{table}, {params.add(json.dumps(payload))}::jsonb)"
    sql = (
        f"update {table} set ({cols}) = (select {cols} from {source_row} _p)"
        f"{where(source, list(request.query.items()), params)}"
    )
    return await _write(db, request, claims, sql, params, _prefer(request), created=False)


async def _delete(db: Backend, request: web.Request, claims, source: Source) -> web.Response:
    params = Params()
    table = f"{ident(SCHEMA)}.{ident(source.name)}"
    sql = f"delete from {table}{where(source, list(request.query.items()), params)}"
    return await _write(db, request, claims, sql, params, _prefer(request), created=False)


async def _write(
    db: Backend, request: web.Request, claims, sql: str, params: Params, prefs: dict[str, str], created: bool
) -> web.Response:
    media, strip = negotiate(request.headers.get("Accept"))
    representation = prefs.get("return") == "representation"
    if representation:
        catalog = await db.catalog()
        name = request.match_info["table"]
        source = Source(name, catalog.columns[name])
        returning = returning_list(source, request.query.get("select"), catalog.primary_keys.get(name, []))
        shown = [(k, v) for k, v in request.query.items() if k in ("select", "order")]
        root = await _plan(db, name, shown)
        rows_sql = node_sql(root, params, from_sql="_w")
        sql = body_sql(rows_sql, media, strip, ctes=f"_w as ({sql} returning {returning})")
    async with db.transaction(request, claims, readonly=False) as conn:
        if representation:
            body, count = await conn.fetchrow(sql, *params.values)
        else:
            status_line = await conn.execute(sql, *params.values)
            count, body = int(status_line.rsplit(" ", 1)[-1]), None
    status = 201 if created and count else 200
    headers = {"Content-Range": f"*/{count}" if "count" in prefs else "*/*"}
    if body is None:
        return web.Response(status=201 if created else 204, headers=headers)
    headers["Preference-Applied"] = "return=representation"
    return _respond(request, body, count, media, status, headers)


def _returns(request: web.Request) -> bool:
    return _prefer(request).get("return") == "representation"


async def _body(request: web.Request) -> Any:
    try:
        return json.loads(await request.text())
    except json.JSONDecodeError as exc:
        raise QueryError("PGRST102", "Empty or invalid json", 400, str(exc)) from exc


def _respond(
    request: web.Request, body: str, shown: int, media: str, status: int, headers: dict[str, str]
) -> web.Response:
    if media == OBJECT:
        if shown != 1:
            raise not_single(shown)
        body = json.dumps(json.loads(body)[0])
    if request.method == "HEAD":
        return web.Response(status=status, headers=headers)
    return web.Response(
        text=body,
        status=status,
        headers=headers,
        content_type=media if media != OBJECT else OBJECT,
        charset="utf-8",
    )
