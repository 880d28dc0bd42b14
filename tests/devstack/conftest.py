"""A running local stack on a free port, over the test's own database, and REST test helpers."""

from collections.abc import AsyncIterator

import asyncpg
import pytest
from supabase import AsyncClient, acreate_client

from reactor.devstack.stack import Stack, serve


@pytest.fixture
async def devstack(database_url: str) -> AsyncIterator[Stack]:
    async with serve(database_url, port=0) as stack:
        yield stack


@pytest.fixture
async def service(devstack: Stack) -> AsyncClient:
    """supabase-py with the service_role key, as the worker uses it."""
    return await acreate_client(devstack.url, devstack.keys.service_role)


@pytest.fixture
async def shapes(db: asyncpg.Connection) -> None:
    """A throwaway table and one function per return shape PostgREST knows."""
    await db.execute("""
        create table public.items (id int primary key, name text not null unique, tag text,
                                   note text default 'fresh');
        insert into public.items (id, name, tag) values (1, 'a', 'x'), (2, 'b', 'y'), (3, 'c', null);
        create function public.add(a int, b int default 10) returns int language sql as 'select a + b';
        create function public.hello(name text) returns text language sql as $$select 'Hello ' || name$$;
        create function public.doc(k text) returns jsonb language sql as $$select jsonb_build_object(k, 1)$$;
        create function public.nothing() returns int language sql as 'select null::int';
        create function public.first_item() returns public.items language sql
          as 'select * from public.items order by id limit 1';
        create function public.nums(n int) returns setof int language sql as 'select generate_series(1, n)';
        create function public.all_items() returns setof public.items language sql
          as 'select * from public.items';
        create function public.pairs() returns table (k text, v int) language sql
          as $$values ('a', 1), ('b', 2)$$;
        create function public.noop() returns void language sql as '';
        create function public.refuse() returns int language plpgsql as $$
          begin raise exception 'I refuse!' using detail = 'Pretty simple', hint = 'There is nothing you can do.';
          end $$;
        create function public.tagged(tags text[]) returns int language sql as 'select cardinality(tags)';
        create function public.echo(jsonb) returns jsonb language sql as 'select $1';
        create function public.whoami() returns jsonb language sql stable
          as $$select jsonb_build_object('role', current_user, 'sub', auth.uid(), 'method',
                current_setting('request.method', true))$$;
        create function public.bump() returns int language sql volatile
          as 'update public.items set tag = tag where false returning 1';
    """)
