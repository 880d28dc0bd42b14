"""Resource embedding through the local stack's /rest/v1 with the unmodified supabase-py client:
many-to-one, one-to-many, one-to-one and many-to-many, hints, `!inner`, spreads, and filters,
orders, limits and `or` on embedded resources, each embedded table read under the caller's role
and claims (row-level security applies to every one)."""

from __future__ import annotations

import uuid

import asyncpg
import httpx
import pytest
from postgrest.exceptions import APIError
from supabase import AsyncClient, acreate_client

pytestmark = pytest.mark.anyio


@pytest.fixture
async def orchestra(db: asyncpg.Connection) -> None:
    await db.execute("""
        create table public.sections (id int primary key, name text not null);
        create table public.instruments (id int primary key, name text not null,
                                         section_id int references public.sections (id));
        insert into public.sections values (1, 'strings'), (2, 'woodwinds'), (3, 'percussion');
        insert into public.instruments values
          (1, 'violin', 1), (2, 'viola', 1), (3, 'flute', 2), (4, 'oboe', 2), (5, 'kazoo', null);
        create table public.players (id int primary key, name text, owner uuid);
        create table public.teams (id int primary key, name text);
        create table public.members (player_id int references public.players, team_id int references public.teams,
                                     primary key (player_id, team_id));
        create table public.profiles (player_id int primary key references public.players, bio text);
        create table public.letters (id int primary key, body text,
                                     sender_id int references public.players (id),
                                     receiver_id int references public.players (id));
        insert into public.players values (1, 'ada', null), (2, 'bob', null);
        insert into public.teams values (1, 'red'), (2, 'blue');
        insert into public.members values (1, 1), (1, 2), (2, 2);
        insert into public.profiles values (1, 'first programmer');
        insert into public.letters values (1, 'hi', 1, 2);
    """)


async def test_many_to_one_and_one_to_many(service: AsyncClient, orchestra):
    rows = (await service.table("instruments").select("name, sections(name)").order("id").execute()).data
    assert rows == [
        {"name": "violin", "sections": {"name": "strings"}},
        {"name": "viola", "sections": {"name": "strings"}},
        {"name": "flute", "sections": {"name": "woodwinds"}},
        {"name": "oboe", "sections": {"name": "woodwinds"}},
        {"name": "kazoo", "sections": None},
    ]
    sections = service.table("sections").select("name, instruments(name)").order("id")
    ordered = await sections.order("name", desc=True, foreign_table="instruments").execute()
    assert ordered.data == [
        {"name": "strings", "instruments": [{"name": "violin"}, {"name": "viola"}]},
        {"name": "woodwinds", "instruments": [{"name": "oboe"}, {"name": "flute"}]},
        {"name": "percussion", "instruments": []},
    ]


async def test_filters_limits_and_or_on_embedded_resources(service: AsyncClient, orchestra):
    base = service.table("sections").select("name, instruments(name)").order("id")
    filtered = await base.eq("instruments.name", "flute").execute()
    assert [s["instruments"] for s in filtered.data] == [[], [{"name": "flute"}], []]
    base = service.table("sections").select("name, instruments(name)").order("id")
    limited = (
        await base.order("id", foreign_table="instruments").limit(1, foreign_table="instruments").execute()
    )
    assert [s["instruments"] for s in limited.data] == [[{"name": "violin"}], [{"name": "flute"}], []]
    base = service.table("sections").select("name, instruments(name)").order("id")
    either = await base.or_("name.eq.viola,name.eq.oboe", reference_table="instruments").execute()
    assert [s["instruments"] for s in either.data] == [[{"name": "viola"}], [{"name": "oboe"}], []]
    inner = service.table("sections").select("name, instruments!inner(name)").eq("instruments.name", "flute")
    assert (await inner.execute()).data == [{"name": "woodwinds", "instruments": [{"name": "flute"}]}]
    counted = service.table("sections").select("id, instruments!inner()", count="exact")
    page = await counted.order("id").execute()
    assert (page.data, page.count) == ([{"id": 1}, {"id": 2}], 2)
    empty = service.table("sections").select("name, instruments()").is_("instruments", "null")
    assert (await empty.execute()).data == [{"name": "percussion"}]
    having = service.table("instruments").select("name").not_.is_("sections", "null").eq("sections.id", 2)
    with pytest.raises(APIError) as caught:  # `sections` is not in the select
        await having.execute()
    assert caught.value.code == "PGRST108"
    to_one = service.table("instruments").select("name, sections!inner(id)").eq("sections.id", 2).order("id")
    assert [r["name"] for r in (await to_one.execute()).data] == ["flute", "oboe"]


async def test_many_to_many_one_to_one_hints_and_spread(service: AsyncClient, orchestra):
    teams = service.table("players").select("name, teams(name), profiles(bio)").order("id")
    teams = teams.order("id", foreign_table="teams")
    assert (await teams.execute()).data == [
        {
            "name": "ada",
            "teams": [{"name": "red"}, {"name": "blue"}],
            "profiles": {"bio": "first programmer"},
        },
        {"name": "bob", "teams": [{"name": "blue"}], "profiles": None},
    ]
    letters = service.table("letters").select(
        "body, from:players!sender_id(name), to:players!receiver_id(name)"
    )
    assert (await letters.execute()).data == [{"body": "hi", "from": {"name": "ada"}, "to": {"name": "bob"}}]
    by_key = service.table("letters").select("body, players!letters_receiver_id_fkey(name)")
    assert (await by_key.execute()).data == [{"body": "hi", "players": {"name": "bob"}}]
    spread = service.table("instruments").select("name, ...sections(section:name)").lt("id", 3).order("id")
    assert (await spread.execute()).data == [
        {"name": "violin", "section": "strings"},
        {"name": "viola", "section": "strings"},
    ]
    spread_many = service.table("sections").select("id, ...instruments(name)").eq("id", 2)
    spread_many = spread_many.order("name", foreign_table="instruments")
    assert (await spread_many.execute()).data == [{"id": 2, "name": ["flute", "oboe"]}]
    nested = service.table("teams").select("name, players(name, letters!sender_id(body))").eq("id", 1)
    assert (await nested.execute()).data == [
        {"name": "red", "players": [{"name": "ada", "letters": [{"body": "hi"}]}]}
    ]


async def test_related_order_and_writes_that_embed(service: AsyncClient, devstack, orchestra):
    key = devstack.keys.service_role
    async with httpx.AsyncClient(
        base_url=f"{devstack.url}/rest/v1", headers={"apikey": key, "Authorization": f"Bearer {key}"}
    ) as http:
        r = await http.get(
            "/instruments?select=name,sections(name)&order=sections(name).desc.nullslast,id&limit=3"
        )
        assert [x["name"] for x in r.json()] == ["flute", "oboe", "violin"]
        r = await http.get("/sections?select=name,instruments(name)&order=instruments(name)")
        assert (r.status_code, r.json()["code"]) == (400, "PGRST118")
    added = service.table("instruments").insert({"id": 6, "name": "cello", "section_id": 1})
    assert (await added.select("name, sections(name)").execute()).data == [
        {"name": "cello", "sections": {"name": "strings"}}
    ]


async def test_relationship_errors(service: AsyncClient, orchestra):
    with pytest.raises(APIError) as caught:
        await service.table("letters").select("body, players(name)").execute()
    error = caught.value
    assert error.code == "PGRST201"
    assert (
        error.message
        == "Could not embed because more than one relationship was found for 'letters' and 'players'"
    )
    assert error.details == [
        {
            "cardinality": "many-to-one",
            "embedding": "letters with players",
            "relationship": "letters_receiver_id_fkey using letters(receiver_id) and players(id)",
        },
        {
            "cardinality": "many-to-one",
            "embedding": "letters with players",
            "relationship": "letters_sender_id_fkey using letters(sender_id) and players(id)",
        },
    ]
    assert error.hint == (
        "Try changing 'players' to one of the following: 'players!letters_receiver_id_fkey', "
        "'players!letters_sender_id_fkey'. Find the desired relationship in the 'details' key."
    )
    with pytest.raises(APIError) as caught:
        await service.table("sections").select("name, instrument(name)").execute()
    assert (caught.value.code, caught.value.hint) == (
        "PGRST200",
        "Perhaps you meant 'instruments' instead of 'instrument'.",
    )
    with pytest.raises(APIError) as caught:
        await service.table("sections").select("name, teams(name)").execute()
    assert caught.value.code == "PGRST200"
    with pytest.raises(APIError) as caught:
        await service.table("sections").select("name").eq("instruments.name", "x").execute()
    assert caught.value.code == "PGRST108"
    with pytest.raises(APIError) as caught:
        await service.table("sections").select("name, instruments(name)").eq("instruments", "x").execute()
    assert caught.value.code == "PGRST120"


async def test_every_embedded_table_is_read_under_the_callers_role_and_claims(
    devstack, db: asyncpg.Connection, orchestra
):
    ada = str(uuid.uuid4())
    await db.execute(
        """
        update public.players set owner = $1 where id = 1;
        alter table public.players enable row level security;
        alter table public.members enable row level security;
        create policy mine on public.players for select to authenticated using (owner = auth.uid());
        create policy visible on public.members for select to authenticated
          using (team_id = (auth.jwt() ->> 'team')::int);
        grant select on public.players, public.teams, public.members, public.sections to authenticated;
        revoke select on public.instruments from authenticated;
        """.replace("$1", f"'{ada}'")
    )
    sb = await acreate_client(devstack.url, devstack.keys.anon)
    sb.postgrest.auth(devstack.keys.user_token(ada, team=2))
    teams = await sb.table("teams").select("name, players(name)").order("id").execute()
    # bob is not ada's; the junction row of ada's team 1 is hidden by its own policy.
    assert teams.data == [{"name": "red", "players": []}, {"name": "blue", "players": [{"name": "ada"}]}]
    inner = await sb.table("teams").select("name, players!inner(name)").execute()
    assert inner.data == [{"name": "blue", "players": [{"name": "ada"}]}]
    with pytest.raises(APIError) as caught:  # no grant on instruments: refused, not read as another role
        await sb.table("sections").select("name, instruments(name)").execute()
    assert caught.value.code == "42501"


HOSTILE = [
    ("select=name,instruments(name", 400, "PGRST100"),
    ("select=name,instruments(name))", 400, "PGRST100"),
    ("select=name,instruments!a!b(name)", 400, "PGRST100"),
    ("select=name,(name)", 400, "PGRST100"),
    ("select=name,...(name)", 400, "PGRST100"),
    ("select=name::text);drop table public.sections;--", 400, "PGRST100"),
    ("select=name,instruments(name)&instruments.limit=1;drop", 400, "PGRST100"),
    ("select=name,instruments(name)&instruments.order=name;drop", 400, "PGRST100"),
    ("select=name,instruments(nope)", 400, "42703"),
    ('select=name,instruments!"x\\"y"(name)', 400, "PGRST200"),
    ("select=name,instruments(name)&nope.name=eq.1", 400, "PGRST108"),
    ("select=name,instruments(name)&instruments.or=(name.eq.1", 400, "PGRST100"),
    ("select=count()", 400, "PGRST123"),
    ("select=name,instruments(sections(instruments(sections(name))))", 200, None),
]


async def test_hostile_select_and_embedded_parameters_get_postgrest_errors(devstack, orchestra, db):
    key = devstack.keys.service_role
    async with httpx.AsyncClient(
        base_url=f"{devstack.url}/rest/v1", headers={"apikey": key, "Authorization": f"Bearer {key}"}
    ) as http:
        for query, status, code in HOSTILE:
            r = await http.get(f"/sections?{query}")
            assert r.status_code == status, (query, r.text)
            if code is not None:
                assert r.json()["code"] == code, (query, r.text)
    assert await db.fetchval("select count(*) from public.sections") == 3
