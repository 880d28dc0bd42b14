"""Every PostgREST operator, logic trees and content negotiation through the local stack's /rest/v1,
with the unmodified supabase-py client (httpx where the client cannot send the request)."""

from __future__ import annotations

import itertools

import asyncpg
import httpx
import pytest
from postgrest.exceptions import APIError
from supabase import AsyncClient

pytestmark = pytest.mark.anyio


@pytest.fixture
async def things(db: asyncpg.Connection) -> None:
    await db.execute("""
        create table public.things (
          id int primary key, name text, tags text[], doc jsonb, span int4range, body text,
          tsv tsvector generated always as (to_tsvector('english', body)) stored, score int);
        insert into public.things (id, name, tags, doc, span, body, score) values
          (1, 'apple', '{red,fruit}', '{"a": 1, "b": [1, 2]}', '[1,5)', 'The quick brown fox jumps', 10),
          (2, 'banana', '{yellow,fruit}', '{"a": 2}', '[5,10)', 'Lazy dogs sleep all day', 20),
          (3, 'carrot', '{orange,vegetable}', '{"a": 1, "c": true}', '[10,20)', 'A quick carrot soup', null),
          (4, 'date, dried', '{brown,"fruit, dried"}', '{}', 'empty', 'fox and dog', 40);
        create function public.one() returns int language sql as 'select 1';
    """)


async def ids(query) -> list[int]:
    return sorted(r["id"] for r in (await query.execute()).data)


def rest(devstack) -> httpx.AsyncClient:
    key = devstack.keys.service_role
    return httpx.AsyncClient(
        base_url=f"{devstack.url}/rest/v1", headers={"apikey": key, "Authorization": f"Bearer {key}"}
    )


async def test_array_jsonb_and_range_operators(service: AsyncClient, things):
    t = service.table("things")
    assert await ids(t.select("id").contains("tags", ["fruit"])) == [1, 2]
    assert await ids(t.select("id").contained_by("tags", ["red", "fruit", "yellow"])) == [1, 2]
    assert await ids(t.select("id").overlaps("tags", ["orange", "brown"])) == [3, 4]
    assert await ids(t.select("id").contains("tags", ["fruit, dried"])) == [4]
    assert await ids(t.select("id").contains("doc", {"a": 1})) == [1, 3]
    assert await ids(t.select("id").contained_by("doc", {"a": 1, "c": True})) == [3, 4]
    assert await ids(t.select("id").contains("span", "[2,3]")) == [1]
    assert await ids(t.select("id").ov("span", "[4,6)")) == [1, 2]
    assert await ids(t.select("id").range_gt("span", (5, 9))) == [3]  # sr
    assert await ids(t.select("id").range_lt("span", (5, 9))) == [1]  # sl
    assert await ids(t.select("id").range_lte("span", (5, 9))) == [1]  # nxr
    assert await ids(t.select("id").range_gte("span", (5, 9))) == [3]  # nxl
    assert await ids(t.select("id").filter("span", "adj", "[20,30)")) == [3]
    assert await ids(t.select("id").not_.contains("tags", ["fruit"])) == [3, 4]


async def test_any_all_modifiers_distinct_and_is(service: AsyncClient, things):
    t = service.table("things")
    assert await ids(t.select("id").like_any_of("name", "a*,b*")) == [1, 2]
    assert await ids(t.select("id").ilike_all_of("name", "*A*,*P*")) == [1]
    assert await ids(t.select("id").filter("name", "like(all)", "{*a*,*r*}")) == [3, 4]
    assert await ids(t.select("id").filter("id", "eq(any)", "{1,3}")) == [1, 3]
    assert await ids(t.select("id").filter("score", "gt(all)", "{5,15}")) == [2, 4]
    assert await ids(t.select("id").filter("name", "match(any)", "{^b,^c}")) == [2, 3]
    assert await ids(t.select("id").filter("score", "isdistinct", "10")) == [2, 3, 4]
    assert await ids(t.select("id").filter("score", "is", "not_null")) == [1, 2, 4]
    assert await ids(t.select("id").filter("name", "imatch", "^A")) == [1]


async def test_full_text_search_operators(service: AsyncClient, things):
    t = service.table("things")
    assert await ids(t.select("id").text_search("tsv", "quick & fox")) == [1]
    assert await ids(t.select("id").text_search("tsv", "quick fox", {"type": "plain"})) == [1]
    assert await ids(t.select("id").text_search("tsv", "quick brown", {"type": "phrase"})) == [1]
    assert await ids(t.select("id").text_search("tsv", "quick -soup", {"type": "web_search"})) == [1]
    assert await ids(t.select("id").text_search("body", "dogs", {"config": "english"})) == [2, 4]
    assert await ids(t.select("id").not_.text_search("tsv", "fox")) == [2, 3]
    with pytest.raises(APIError) as caught:
        await t.select("id").text_search("body", "x", {"config": "klingon"}).execute()
    assert caught.value.code == "42704"


async def test_logic_trees_respect_braces_quotes_and_parentheses(service: AsyncClient, things):
    t = service.table("things")
    assert await ids(t.select("id").or_("tags.cs.{red,fruit},id.eq.3")) == [1, 3]
    assert await ids(t.select("id").or_('name.eq."date, dried",id.eq.1')) == [1, 4]
    assert await ids(t.select("id").or_('and(score.gte.20,tags.cs.{fruit}),name.in.("apple","x")')) == [1, 2]
    assert await ids(t.select("id").not_.or_("id.eq.1,id.eq.2")) == [3, 4]
    # A closing parenthesis ends an unquoted value, so a range in a logic tree is quoted.
    assert await ids(t.select("id").or_('doc.cs.{"c":true},span.adj."[20,30)"')) == [3]
    assert await ids(t.select("id").or_("tsv.fts(english).sleeping,name.like(any).{a*,c*}")) == [1, 2, 3]
    assert await ids(t.select("id").or_("score.is.null,not.and(id.gt.1,score.lt.30)")) == [1, 3, 4]


MALFORMED = [
    "or=(id.eq.1,(",
    "or=(id.eq.1",
    "or=id.eq.1",
    "or=(id.xx.1)",
    "and=(id.eq.1,nor(id.eq.2))",
    "id=between.1",
    "id=eq(some).{1}",
    "id=in.1,2",
    "score=is.maybe",
    "tags=cs",
    "or=(id.eq.1)&and=()",
]


async def test_malformed_filters_get_pgrst100(devstack, things):
    async with rest(devstack) as http:
        for query in MALFORMED:
            r = await http.get(f"/things?{query}")
            assert (r.status_code, r.json()["code"]) == (400, "PGRST100"), (query, r.text)
            assert r.json()["message"].startswith('"failed to parse')


async def test_csv_and_stripped_nulls(service: AsyncClient, things, devstack):
    csv = await service.table("things").select("id,name,score").order("id").csv().execute()
    assert csv.data == 'id,name,score\n1,apple,10\n2,banana,20\n3,carrot,\n4,"date, dried",40'
    stripped = service.table("things").select("id,score").in_("id", [2, 3]).order("id").strip_nulls()
    assert (await stripped.execute()).data == [{"id": 2, "score": 20}, {"id": 3}]
    async with rest(devstack) as http:
        r = await http.get("/things?select=id&id=eq.9", headers={"Accept": "text/csv"})
        assert (r.status_code, r.text, r.headers["content-type"]) == (200, "\n", "text/csv; charset=utf-8")
        # By quality, then specificity: JSON here, CSV there.
        r = await http.get(
            "/things?select=id&id=eq.1", headers={"Accept": "text/csv;q=0.5, application/json"}
        )
        assert r.json() == [{"id": 1}]
        r = await http.get("/things?select=id&id=eq.1", headers={"Accept": "*/*, text/csv"})
        assert r.text == "id\n1"


UNAVAILABLE = [
    ("text/xml", "text/xml"),
    ("application/xml, text/plain;q=0.5", "application/xml, text/plain"),
    ("application/vnd.pgrst.plan+json", 'application/vnd.pgrst.plan+json; for="application/json"'),
    (
        'application/vnd.pgrst.plan; for="text/csv"; options=analyze|buffers',
        'application/vnd.pgrst.plan+text; for="text/csv"; options=analyze|buffers',
    ),
    ("image/png", "image/png"),
]


async def test_unavailable_media_types_get_406(devstack, things):
    async with rest(devstack) as http:
        for (accept, named), method in itertools.product(UNAVAILABLE, ("GET", "POST")):
            r = await http.request(method, "/things", headers={"Accept": accept}, json={"id": 9})
            assert r.status_code == 406, r.text
            assert r.json() == {
                "code": "PGRST107",
                "message": f"None of these media types are available: {named}",
                "details": None,
                "hint": None,
            }


async def test_functions_answer_json_only(devstack, things):
    async with rest(devstack) as http:
        assert (await http.post("/rpc/one", json={}, headers={"Accept": "*/*"})).json() == 1
        r = await http.post("/rpc/one", json={}, headers={"Accept": "text/csv"})
        assert (r.status_code, r.json()["code"]) == (406, "PGRST107")


async def test_supabase_py_explain_gets_406(service: AsyncClient, things):
    with pytest.raises(APIError) as caught:
        await service.table("things").select("id").explain().execute()
    assert caught.value.code == "PGRST107"
