"""Table reads and writes through the local stack's /rest/v1 with the unmodified supabase-py client."""

from __future__ import annotations

import asyncpg
import httpx
import pytest
from postgrest.exceptions import APIError
from supabase import AsyncClient, AsyncClientOptions, acreate_client

pytestmark = pytest.mark.anyio


async def ids(query) -> list[int]:
    return [r["id"] for r in (await query.execute()).data]


async def test_select_applies_every_filter_operator(service: AsyncClient, shapes):
    items = service.table("items")
    assert await ids(items.select("id").eq("name", "b")) == [2]
    assert await ids(items.select("id").neq("name", "b").order("id")) == [1, 3]
    assert await ids(items.select("id").gt("id", 2)) == [3]
    assert await ids(items.select("id").gte("id", 2).order("id")) == [2, 3]
    assert await ids(items.select("id").lt("id", 2)) == [1]
    assert await ids(items.select("id").lte("id", 2).order("id")) == [1, 2]
    assert await ids(items.select("id").like("name", "*b*")) == [2]
    assert await ids(items.select("id").ilike("name", "B")) == [2]
    assert await ids(items.select("id").is_("tag", "null")) == [3]
    assert await ids(items.select("id").in_("name", ["a", "c"]).order("id")) == [1, 3]
    assert await ids(items.select("id").not_.is_("tag", "null").order("id")) == [1, 2]
    assert await ids(items.select("id").not_.in_("id", [1, 2])) == [3]
    assert await ids(items.select("id").or_("id.eq.1,tag.eq.y").order("id")) == [1, 2]
    assert await ids(items.select("id").or_("id.eq.3,and(id.gt.1,tag.eq.y)").order("id")) == [2, 3]


async def test_select_columns_aliases_order_and_paging(service: AsyncClient, shapes):
    items = service.table("items")
    assert (await items.select("name").in_("id", [2, 3]).order("id").execute()).data == [
        {"name": "b"},
        {"name": "c"},
    ]
    assert (await items.select("label:name").eq("id", 1).execute()).data == [{"label": "a"}]
    assert await ids(items.select("id").order("tag", desc=True, nullsfirst=True)) == [3, 2, 1]
    assert await ids(items.select("id").order("id").limit(2)) == [1, 2]
    assert await ids(items.select("id").order("id").range(1, 2)) == [2, 3]


async def test_count_exact_and_partial_content(service: AsyncClient, shapes):
    page = await service.table("items").select("*", count="exact").order("id").range(1, 1).execute()
    assert (page.data, page.count) == ([{"id": 2, "name": "b", "tag": "y", "note": "fresh"}], 3)
    assert (await service.table("items").select("id", count="exact").gt("id", 5).execute()).count == 0


async def test_single_and_maybe_single(service: AsyncClient, shapes):
    items = service.table("items")
    assert (await items.select("*").eq("id", 2).single().execute()).data["name"] == "b"
    assert (await items.select("*").eq("id", 9).maybe_single().execute()) is None
    with pytest.raises(APIError) as caught:
        await items.select("*").eq("id", 99).single().execute()
    assert caught.value.json() == {
        "code": "PGRST116",
        "message": "Cannot coerce the result to a single JSON object",
        "details": "The result contains 0 rows",
        "hint": None,
    }


async def test_insert_returns_rows_or_nothing_as_preferred(service: AsyncClient, shapes, db):
    items = service.table("items")
    assert (await items.insert({"id": 4, "name": "d"}).execute()).data == [
        {"id": 4, "name": "d", "tag": None, "note": "fresh"}
    ]
    assert (await items.insert({"id": 5, "name": "e"}, returning="minimal").execute()).data == []
    # A key missing from one row of a batch is null, or the column's default with missing=default.
    both = await items.insert([{"id": 6, "name": "f"}, {"id": 7, "name": "g", "note": "z"}]).execute()
    assert [(r["id"], r["note"]) for r in both.data] == [(6, None), (7, "z")]
    await items.insert(
        [{"id": 8, "name": "h"}, {"id": 9, "name": "i", "note": "z"}], default_to_null=False
    ).execute()
    rows = await db.fetch("select id, note from public.items where id >= 4 order by id")
    assert [tuple(r) for r in rows] == [
        (4, "fresh"),
        (5, "fresh"),
        (6, None),
        (7, "z"),
        (8, "fresh"),
        (9, "z"),
    ]


async def test_upsert_merges_or_ignores_duplicates(service: AsyncClient, shapes, db):
    items = service.table("items")
    assert (await items.upsert({"id": 1, "name": "a2"}).execute()).data[0]["name"] == "a2"
    await items.upsert({"id": 2, "name": "ignored"}, ignore_duplicates=True).execute()
    await items.upsert({"id": 10, "name": "c", "tag": "by-name"}, on_conflict="name").execute()
    rows = await db.fetch("select id, name, tag from public.items order by id")
    assert [tuple(r) for r in rows] == [(1, "a2", "x"), (2, "b", "y"), (10, "c", "by-name")]


async def test_update_and_delete_touch_only_filtered_rows(service: AsyncClient, shapes, db):
    items = service.table("items")
    assert (await items.update({"tag": "t"}).eq("id", 1).execute()).data[0]["tag"] == "t"
    assert (await items.update({"tag": "t"}).eq("id", 99).execute()).data == []
    assert (await items.update({"tag": "u"}).is_("tag", "null").execute()).data[0]["id"] == 3
    assert await ids(items.delete().gte("id", 2).order("id")) == [2, 3]
    assert (await items.delete(returning="minimal").eq("id", 42).execute()).data == []
    rows = await db.fetch("select id, name, tag from public.items order by id")
    assert [tuple(r) for r in rows] == [(1, "a", "t")]


@pytest.mark.parametrize(
    "call,code,status",
    [
        (lambda s: s.table("items").insert({"id": 1, "name": "dup"}), "23505", 409),
        (lambda s: s.table("items").insert({"id": 11}), "23502", 400),
        (lambda s: s.table("nope").select("*"), "PGRST205", 404),
        (lambda s: s.table("items").insert({"nope": 1}), "PGRST204", 400),
        (lambda s: s.table("items").update({"nope": 1}).eq("id", 1), "PGRST204", 400),
        (lambda s: s.table("items").select("*").eq("id", "not-a-number"), "22P02", 400),
        (lambda s: s.table("items").select("*").eq("no_such_column", 1), "42703", 400),
        (lambda s: s.table("items").select("*").filter("id", "between", "1"), "PGRST100", 400),
        (lambda s: s.table("items").select("*").is_("tag", "maybe"), "PGRST100", 400),
    ],
)
async def test_errors_carry_postgrest_codes_and_statuses(devstack, shapes, call, code, status):
    seen: list[int] = []

    async def record(response: httpx.Response) -> None:
        seen.append(response.status_code)

    async with httpx.AsyncClient(event_hooks={"response": [record]}) as http:
        sb = await acreate_client(
            devstack.url, devstack.keys.service_role, AsyncClientOptions(httpx_client=http)
        )
        with pytest.raises(APIError) as caught:
            await call(sb).execute()
    assert (caught.value.code, seen) == (code, [status])


async def test_table_created_after_start_is_found_on_first_request(
    service: AsyncClient, db: asyncpg.Connection
):
    assert (await service.table("jobs").select("id").execute()).data == []
    await db.execute("create table public.later (id int primary key); insert into public.later values (1)")
    assert (await service.table("later").select("*").execute()).data == [{"id": 1}]


async def test_empty_rows_take_every_default(service: AsyncClient, db: asyncpg.Connection):
    await db.execute("create table public.counters (id int generated always as identity, n int default 5)")
    assert (await service.table("counters").insert({}).execute()).data == [{"id": 1, "n": 5}]


async def test_writes_report_their_exact_count(service: AsyncClient, shapes):
    items = service.table("items")
    assert (
        await items.insert([{"id": 4, "name": "d"}, {"id": 5, "name": "e"}], count="exact").execute()
    ).count == 2
    assert (await items.update({"tag": "n"}, count="exact").gte("id", 4).execute()).count == 2
    assert (await items.delete(count="exact").in_("id", [1, 4, 99]).execute()).count == 2


async def test_json_paths_select_filter_and_order(service: AsyncClient, db: asyncpg.Connection):
    await db.execute("""insert into public.jobs (job_type, payload) values
        ('t', '{"kind": "a", "n": 2, "tags": ["x"]}'), ('t', '{"kind": "b", "n": 1}'), ('t', '{"kind": "a", "n": 3}')""")
    jobs = service.table("jobs")
    rows = (
        await jobs.select("kind:payload->>kind,payload->n")
        .eq("payload->>kind", "a")
        .order("payload->n", desc=True)
        .execute()
    ).data
    assert rows == [{"kind": "a", "n": 3}, {"kind": "a", "n": 2}]
    tagged = await jobs.select("first:payload->tags->0").not_.is_("payload->tags", "null").execute()
    assert tagged.data == [{"first": "x"}]
    with pytest.raises(APIError) as caught:
        await jobs.select("job_type->>x").execute()
    assert caught.value.code == "PGRST100"
