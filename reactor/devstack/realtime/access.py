"""What each subscriber may see of a change: columns, row-level security, filters.

Mirrors Realtime's `apply_rls`: `columns` lists, in attnum order, only the columns the
subscriber's role may select, with internal type names; a table with row-level security is
checked by running `select exists(...)` on the row's primary key as that role, with the
subscriber's JWT claims in `request.jwt.claims`; DELETE is never checked and its `old_record`
keeps only the primary key then. Catalog facts are cached and forgotten on every join and sync.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from typing import Any

import asyncpg
from loguru import logger

from reactor.devstack.realtime.changes import Change
from reactor.devstack.realtime.filters import Binding, Condition

MAX_RECORD_BYTES = 1_048_576
_KEPT_FIELD_BYTES = 64

_TABLE_SQL = """
select c.relrowsecurity as rls, c.relreplident::text as identity,
  array(select a.attname::text from pg_catalog.pg_attribute a
        where a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped order by a.attnum) as names,
  array(select t.typname::text from pg_catalog.pg_attribute a join pg_catalog.pg_type t on t.oid = a.atttypid
        where a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped order by a.attnum) as types,
  array(select a.attname::text from pg_catalog.pg_index i
        join pg_catalog.pg_attribute a on a.attrelid = i.indrelid and a.attnum = any(i.indkey)
        where i.indrelid = c.oid and i.indisprimary
        order by pg_catalog.array_position(i.indkey::int2[], a.attnum)) as pkey,
  array(select a.attname::text from pg_catalog.pg_index i
        join pg_catalog.pg_attribute a on a.attrelid = i.indrelid and a.attnum = any(i.indkey)
        where i.indrelid = c.oid and i.indisreplident
        order by pg_catalog.array_position(i.indkey::int2[], a.attnum)) as identity_index,
  array(select a.attname::text from pg_catalog.pg_attribute a
        left join pg_catalog.pg_collation l on l.oid = a.attcollation
        where a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
          and a.atttypid in ('pg_catalog.text'::pg_catalog.regtype, 'pg_catalog.varchar'::pg_catalog.regtype)
          and coalesce(l.collisdeterministic, true)) as plain_text
from pg_catalog.pg_class c
where c.oid = $1
"""

_ROLE_SQL = """
select array(select a.attname::text from pg_catalog.pg_attribute a
             where a.attrelid = $1 and a.attnum > 0 and not a.attisdropped
               and pg_catalog.has_column_privilege($2, a.attrelid, a.attnum, 'SELECT')) as selectable,
  coalesce((select r.rolbypassrls or r.rolsuper from pg_catalog.pg_roles r where r.rolname = $2), false)
  or exists (select 1 from pg_catalog.pg_class c join pg_catalog.pg_roles r on r.oid = c.relowner
             where c.oid = $1 and r.rolname = $2 and not c.relforcerowsecurity) as bypass
"""

_FILTERS_SQL = """
select pg_catalog.array_agg(_realtime.filter_holds($1::oid::regclass, c, o, v, n, x) order by i)
from unnest($2::text[], $3::text[], $4::text[], $5::boolean[], $6::text[]) with ordinality f(c, o, v, n, x, i)
"""


@dataclass(frozen=True)
class Table:
    rls: bool
    columns: tuple[tuple[str, str], ...]  # (name, internal type name) in attnum order
    pkey: tuple[str, ...]
    identity: tuple[str, ...]  # the columns a plain UPDATE or DELETE carries as old_record
    plain_text: frozenset[str] = frozenset()  # text/varchar, deterministic collation: = is byte equality


@dataclass(frozen=True)
class RoleView:
    selectable: frozenset[str]
    bypass_rls: bool


class SubscribeError(Exception):
    """A subscription Realtime refuses; the message is its system error message."""


class Access:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._tables: dict[int, Table | None] = {}
        self._roles: dict[tuple[int, str], RoleView] = {}
        self._in_lists: dict[str, frozenset[str | None]] = {}  # an `in` value -> its elements

    def forget(self) -> None:
        self._tables.clear()
        self._roles.clear()

    def held_in_python(self, table: Table, values: dict[str, Any], cond: Condition) -> bool | None:
        """The condition decided without a round trip, where that is exact: eq, neq and in on a
        plain text column (`in` once its list was parsed by Postgres, at subscribe time);
        None means ask Postgres (filter_holds)."""
        if cond.column not in table.plain_text or cond.op not in ("eq", "neq", "in"):
            return None
        value = values.get(cond.column)
        if value is None or not isinstance(value, str):
            return False if value is None else None  # NULL never passes, negated or not
        if cond.op == "in":
            listed = self._in_lists.get(cond.value)
            if listed is None:
                return None
            held = value in listed
        else:
            held = (value == cond.value) == (cond.op == "eq")
        return held != cond.negate

    async def subscribe_tables(self, binding: Binding, role: str) -> frozenset[int]:
        """The tables a binding covers, after Realtime's checks; raises SubscribeError."""
        conds = binding.conditions
        try:
            rows = await self._pool.fetch(
                "select oid::bigint from _realtime.subscribe_tables($1, $2, $3, $4, $5, $6) oid",
                binding.schema,
                binding.table,
                role,
                [c.column for c in conds],
                [c.op for c in conds],
                [c.value for c in conds],
            )
        except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise SubscribeError(
                "Unable to subscribe to changes with given parameters. An exception happened so "
                f"please check your connect parameters: [{binding.describe()}]. "
                f"Exception: {_postgrex_message(exc)}"
            ) from None
        for cond in conds:
            if cond.op == "in" and cond.value not in self._in_lists:
                with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError):
                    listed = await self._pool.fetchval("select $1::text::text[]", cond.value)
                    self._in_lists[cond.value] = frozenset(listed)
        if not rows:
            raise SubscribeError(
                "Unable to subscribe to changes with given parameters. Please check Realtime is "
                f"enabled for the given connect parameters: [{binding.describe()}]"
            )
        return frozenset(row[0] for row in rows)

    def cached_table(self, relid: int) -> tuple[bool, Table | None]:
        """(known, table) without a round trip."""
        return relid in self._tables, self._tables.get(relid)

    def cached_role_view(self, relid: int, role: str) -> RoleView | None:
        return self._roles.get((relid, role))

    async def table(self, relid: int) -> Table | None:
        if relid not in self._tables:
            row = await self._pool.fetchrow(_TABLE_SQL, relid)
            self._tables[relid] = None if row is None else _table(row)
        return self._tables[relid]

    async def role_view(self, relid: int, role: str) -> RoleView:
        key = (relid, role)
        if key not in self._roles:
            try:
                row = await self._pool.fetchrow(_ROLE_SQL, relid, role)
                self._roles[key] = RoleView(frozenset(row["selectable"]), row["bypass"])
            except asyncpg.PostgresError:
                self._roles[key] = RoleView(frozenset(), False)
        return self._roles[key]

    async def conditions_hold(self, relid: int, values: dict[str, Any], conds: list[Condition]) -> list[bool]:
        try:
            result = await self._pool.fetchval(
                _FILTERS_SQL,
                relid,
                [c.column for c in conds],
                [c.op for c in conds],
                [c.value for c in conds],
                [c.negate for c in conds],
                [_text(values.get(c.column)) for c in conds],
            )
        except asyncpg.PostgresError as exc:
            logger.warning("realtime filter check failed, change not delivered: {}", exc)
            return [False] * len(conds)
        return [bool(r) for r in result]

    async def visible(self, relid: int, table: Table, claims: dict[str, Any], record: dict[str, Any]) -> bool:
        """Whether the subscriber with `claims` may select the row now (Realtime's RLS check)."""
        key = json.dumps({k: record.get(k) for k in table.pkey})
        try:
            return bool(
                await self._pool.fetchval(
                    "select _realtime.visible($1::oid::regclass, $2, $3, $4::jsonb)",
                    relid,
                    str(claims.get("role", "")),
                    json.dumps(claims),
                    key,
                )
            )
        except asyncpg.PostgresError:
            return False


def _table(row: asyncpg.Record) -> Table:
    pkey = tuple(row["pkey"])
    identity = {"d": pkey, "f": tuple(row["names"]), "i": tuple(row["identity_index"])}.get(
        row["identity"], ()
    )
    return Table(
        rls=row["rls"],
        columns=tuple(zip(row["names"], row["types"], strict=True)),
        pkey=pkey,
        identity=identity,
        plain_text=frozenset(row["plain_text"]),
    )


def _text(value: Any) -> str | None:
    """A JSON value as Postgres text, as Realtime reads it from wal2json (`value #>> '{}'`)."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value)


def _postgrex_message(exc: asyncpg.PostgresError | asyncpg.InterfaceError) -> str:
    """An error as Postgrex's Exception.message words it, which Realtime quotes."""
    if not isinstance(exc, asyncpg.PostgresError):
        return str(exc)
    name = "raise_exception" if exc.sqlstate == "P0001" else _snake(type(exc).__name__)
    return f"ERROR {exc.sqlstate} ({name}) {exc.args[0] if exc.args else exc}"


def _snake(name: str) -> str:
    name = name.removesuffix("Error")
    return "".join("_" + ch.lower() if ch.isupper() else ch for ch in name).lstrip("_")


def filter_values(table: Table, change: Change) -> dict[str, Any]:
    """The values filters see: the new row, or for DELETE only the replica identity."""
    if change.type == "DELETE":
        old = change.old_record or {}
        return {k: old.get(k) for k in table.identity}
    return change.record or {}


def change_data(
    table: Table, view: RoleView, change: Change, max_record_bytes: int = MAX_RECORD_BYTES
) -> dict[str, Any]:
    """The `data` of a postgres_changes push, as a subscriber with this role receives it. Over
    `max_record_bytes` (apply_rls's `octet_length(wal::text) > max_record_bytes`) it carries
    "Error 413: Payload Too Large" and only the fields whose JSON is at most 64 bytes."""
    head = {"schema": change.schema, "table": change.table}
    if not table.pkey:
        return _error_row(head, change, "Error 400: Bad Request, no primary key")
    if not set(table.pkey) <= view.selectable:
        return _error_row(head, change, "Error 401: Unauthorized")
    too_big = change.size > max_record_bytes

    def kept(record: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
        return {
            k: record.get(k)
            for k in names
            if k in view.selectable
            and (not too_big or len(json.dumps(record.get(k)).encode()) <= _KEPT_FIELD_BYTES)
        }

    data: dict[str, Any] = {
        **head,
        "commit_timestamp": change.commit_timestamp,
        "type": change.type,
        "columns": [{"name": n, "type": t} for n, t in table.columns if n in view.selectable],
        "errors": ["Error 413: Payload Too Large"] if too_big else None,
    }
    names = tuple(n for n, _ in table.columns)
    if change.type != "DELETE":
        data["record"] = kept(change.record or {}, names)
    if change.type == "UPDATE":
        data["old_record"] = kept(change.old_record or {}, table.identity)
    if change.type == "DELETE":
        identity = table.pkey if table.rls else table.identity
        data["old_record"] = kept(change.old_record or {}, identity)
    return data


def _error_row(head: dict[str, Any], change: Change, error: str) -> dict[str, Any]:
    return {
        **head,
        "commit_timestamp": None,
        "type": change.type,
        "columns": [],
        "record": {},
        "errors": [error],
    }
