"""sql/schema.sql builds exactly what the migrations build.

Each catalog category is a dict keyed by object, so a failure names the object that differs: a
migration changed without sql/schema.sql (or the other way round) fails here.
"""

import difflib
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest

from reactor import migrations
from reactor.devstack import database

pytestmark = pytest.mark.anyio

SCHEMAS = ["reactor", "public", "auth"]
Catalog = dict[str, dict[str, Any]]

_FUNCTIONS = """
select n.nspname || '.' || p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')' as key,
       pg_get_function_arguments(p.oid) as arguments, pg_get_function_result(p.oid) as result,
       l.lanname as language, p.prosrc, p.proconfig, p.prosecdef, p.provolatile::text as volatility,
       array(select a::text from unnest(coalesce(p.proacl, acldefault('f', p.proowner))) a order by 1) as acl
from pg_proc p join pg_namespace n on n.oid = p.pronamespace join pg_language l on l.oid = p.prolang
where n.nspname = any($1)
"""
_SCHEMAS = """
select n.nspname as key,
       array(select a::text from unnest(coalesce(n.nspacl, acldefault('n', n.nspowner))) a order by 1) as acl
from pg_namespace n where n.nspname = any($1)
"""
_TABLES = """
select n.nspname || '.' || c.relname as key, c.relkind::text as kind, c.relrowsecurity as rls,
       c.relforcerowsecurity as force_rls,
       array(select format('%s %s default %s%s%s', a.attname, format_type(a.atttypid, a.atttypmod),
                           coalesce(pg_get_expr(d.adbin, d.adrelid), 'none'),
                           case when a.attnotnull then ' not null' else '' end,
                           case when a.attidentity <> '' then ' identity ' || a.attidentity::text else '' end)
             from pg_attribute a left join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
             where a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped order by a.attnum) as columns
from pg_class c join pg_namespace n on n.oid = c.relnamespace
where n.nspname = any($1) and c.relkind in ('r', 'p', 'v', 'm', 'f')
"""
_CONSTRAINTS = """
select n.nspname || '.' || c.relname || '.' || k.conname as key, pg_get_constraintdef(k.oid) as definition
from pg_constraint k join pg_class c on c.oid = k.conrelid join pg_namespace n on n.oid = c.relnamespace
where n.nspname = any($1)
"""
_INDEXES = """
select schemaname || '.' || indexname as key, indexdef from pg_indexes where schemaname = any($1)
"""
_TRIGGERS = """
select n.nspname || '.' || c.relname || '.' || t.tgname as key, pg_get_triggerdef(t.oid) as definition,
       t.tgenabled::text as enabled
from pg_trigger t join pg_class c on c.oid = t.tgrelid join pg_namespace n on n.oid = c.relnamespace
where n.nspname = any($1) and not t.tgisinternal
"""
_POLICIES = """
select schemaname || '.' || tablename || '.' || policyname as key, permissive, roles::text[] as roles, cmd,
       qual, with_check
from pg_policies where schemaname = any($1)
"""
_GRANT = """format('%s to %s by %s%s', privilege_type, grantee, grantor,
                 case when is_grantable = 'YES' then ' with grant option' else '' end)"""
_TABLE_GRANTS = f"""
select key, array_agg(grant_ order by grant_) as grants
from (select table_schema || '.' || table_name as key, {_GRANT} as grant_
      from information_schema.role_table_grants where table_schema = any($1)) g
group by key
"""
_COLUMN_GRANTS = f"""
select key, array_agg(grant_ order by grant_) as grants
from (select table_schema || '.' || table_name || '.' || column_name as key, {_GRANT} as grant_
      from information_schema.column_privileges where table_schema = any($1)) g
group by key
"""
_SEQUENCES = """
select n.nspname || '.' || c.relname as key,
       array(select a::text from unnest(coalesce(c.relacl, acldefault('s', c.relowner))) a order by 1) as acl
from pg_class c join pg_namespace n on n.oid = c.relnamespace
where n.nspname = any($1) and c.relkind = 'S'
"""
_PUBLICATION = """
select schemaname || '.' || tablename as key, to_jsonb(p) - 'pubname' - 'schemaname' - 'tablename' as columns
from pg_publication_tables p where pubname = 'supabase_realtime'
"""
_LEDGER = "select version as key from reactor.schema_migrations"
_JOB_TABLES = "select name as key from reactor.job_tables"

_CATEGORIES = {
    "schema": _SCHEMAS,
    "function": _FUNCTIONS,
    "table": _TABLES,
    "constraint": _CONSTRAINTS,
    "index": _INDEXES,
    "trigger": _TRIGGERS,
    "policy": _POLICIES,
    "table grants": _TABLE_GRANTS,
    "column grants": _COLUMN_GRANTS,
    "sequence": _SEQUENCES,
}
_ROWS = {
    "supabase_realtime table": _PUBLICATION,
    "recorded migration": _LEDGER,
    "registered job table": _JOB_TABLES,
}


async def catalog(url: str) -> Catalog:
    """What the database holds in SCHEMAS, by category and then by object."""
    conn = await asyncpg.connect(url)
    try:
        found: Catalog = {}
        for category, query in _CATEGORIES.items():
            rows = await conn.fetch(query, SCHEMAS)
            found[category] = {r["key"]: {k: v for k, v in r.items() if k != "key"} for r in rows}
        for category, query in _ROWS.items():
            found[category] = {r["key"]: dict(r) for r in await conn.fetch(query)}
        return found
    finally:
        await conn.close()


def describe(field: str, got: Any, expected: Any, labels: tuple[str, str]) -> str:
    if isinstance(got, str) and isinstance(expected, str) and "\n" in got + expected:
        lines = difflib.unified_diff(
            expected.splitlines(), got.splitlines(), labels[1], labels[0], lineterm=""
        )
        return f"  {field}:\n" + "\n".join(f"    {line}" for line in lines)
    if isinstance(got, list) and isinstance(expected, list):
        only_got = sorted(set(got) - set(expected))
        only_expected = sorted(set(expected) - set(got))
        return f"  {field}: only in {labels[0]}: {only_got}; only in {labels[1]}: {only_expected}"
    return f"  {field}: {labels[0]} has {got!r}, {labels[1]} {expected!r}"


def differences(got: Catalog, expected: Catalog, labels: tuple[str, str]) -> list[str]:
    """Every object that differs between two catalogs, described with the labels of (got, expected)."""
    found: list[str] = []
    for category, objects in expected.items():
        built = got[category]
        for name in sorted(built.keys() | objects.keys()):
            if name not in built:
                found.append(f"{category} {name}: made by {labels[1]}, missing from {labels[0]}")
            elif name not in objects:
                found.append(f"{category} {name}: made by {labels[0]}, not by {labels[1]}")
            elif built[name] != objects[name]:
                fields = [f for f in objects[name] if built[name][f] != objects[name][f]]
                details = "\n".join(describe(f, built[name][f], objects[name][f], labels) for f in fields)
                found.append(f"{category} {name} differs:\n{details}")
    return found


@asynccontextmanager
async def bootstrapped(server_url: str) -> AsyncIterator[str]:
    """A fresh database bootstrapped as Supabase, dropped afterwards."""
    name = f"reactor_schema_{uuid.uuid4().hex[:12]}"
    url = await database.create_database(server_url, name)
    try:
        await database.bootstrap(url)
        yield url
    finally:
        await database.drop_database(server_url, name)


async def paste_schema(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(migrations.schema_script())
    finally:
        await conn.close()


async def test_schema_sql_builds_what_the_migrations_build(server_url: str):
    async with bootstrapped(server_url) as fresh_url, bootstrapped(server_url) as migrated_url:
        await paste_schema(fresh_url)
        await migrations.apply(migrated_url)
        problems = differences(
            await catalog(fresh_url), await catalog(migrated_url), ("sql/schema.sql", "the migrations")
        )
    assert not problems, "sql/schema.sql and the migrations differ:\n" + "\n".join(problems)


async def test_schema_sql_pasted_twice_changes_nothing(server_url: str):
    async with bootstrapped(server_url) as url:
        await paste_schema(url)
        once = await catalog(url)
        await paste_schema(url)
        problems = differences(await catalog(url), once, ("the second paste", "the first"))
    assert not problems, "pasting sql/schema.sql again changed:\n" + "\n".join(problems)


async def test_schema_sql_refuses_a_project_with_an_earlier_contract(server_url: str):
    async with bootstrapped(server_url) as url:
        conn = await asyncpg.connect(url)
        try:
            for path in migrations.migration_files()[:-1]:
                await conn.execute(path.read_text())
            with pytest.raises(
                asyncpg.RaiseError, match="an earlier version of reactor's contract"
            ) as caught:
                await conn.execute(migrations.schema_script())
            assert (
                caught.value.hint
                == "Upgrade it with `reactor migrate`, or paste the output of `reactor sql --upgrade`."
            )
        finally:
            await conn.close()
        assert await migrations.apply(url) == [migrations.migration_files()[-1].stem]


async def test_migrations_apply_nothing_after_schema_sql(server_url: str):
    async with bootstrapped(server_url) as url:
        await paste_schema(url)
        assert await migrations.apply(url) == []
