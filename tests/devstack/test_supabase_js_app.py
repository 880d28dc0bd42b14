"""supabase-js from npm against the local stack, as an ordinary app uses it beyond the worker's
calls: data (embedding, operators, CSV), Broadcast and Presence, and auth. Each script is copied
beside the cached node_modules that the js_dir fixture installs, and prints what it saw as one
JSON line."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import jwt
import pytest

pytestmark = pytest.mark.anyio

SCRIPTS = Path(__file__).parent / "js"


async def run_js(js_dir: Path, script: str, env: dict[str, str], timeout: float = 60) -> Any:
    shutil.copy(SCRIPTS / script, js_dir / script)
    proc = await asyncio.create_subprocess_exec(
        str(js_dir / "node_modules" / ".bin" / "node"), script, cwd=js_dir, env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode == 0, err.decode()
    return json.loads(out.decode().strip().splitlines()[-1])


async def test_supabase_js_data_calls(devstack, db: asyncpg.Connection, js_dir: Path) -> None:
    await db.execute("""
        create table public.sections (id int primary key, name text not null, tags text[]);
        create table public.instruments (id int primary key, name text not null,
                                         section_id int references public.sections (id));
        insert into public.sections values (1, 'strings', '{bowed,quiet}'), (2, 'woodwinds', '{blown}'),
                                           (3, 'percussion', '{loud}');
        insert into public.instruments values (1, 'violin', 1), (2, 'viola', 1), (3, 'flute', 2), (4, 'oboe', 2);
    """)
    env = {"SUPABASE_URL": devstack.url, "SUPABASE_SERVICE_ROLE_KEY": devstack.keys.service_role}
    seen = await run_js(js_dir, "app_data.mjs", env)
    assert seen["inner"] == [{"name": "woodwinds", "instruments": [{"name": "flute"}]}]
    assert seen["referenced"] == [
        {"name": "strings", "instruments": [{"name": "violin"}]},
        {"name": "woodwinds", "instruments": [{"name": "oboe"}]},
        {"name": "percussion", "instruments": []},
    ]
    assert seen["many"] == {"name": "violin", "section": {"name": "strings"}}
    assert seen["textSearch"] == [{"id": 2}]
    assert seen["websearch"] == [{"id": 1}, {"id": 3}]
    assert seen["contains"] == [{"id": 3}]
    assert seen["overlaps"] == [{"id": 1}, {"id": 2}]
    assert seen["or"] == [{"id": 1}, {"id": 3}]
    assert seen["csv"] == "id,name\n1,strings\n2,woodwinds\n3,percussion"


async def test_supabase_js_broadcast_and_presence(devstack, js_dir: Path) -> None:
    seen = await run_js(
        js_dir, "app_realtime.mjs", {"SUPABASE_URL": devstack.url, "SUPABASE_ANON_KEY": devstack.keys.anon}
    )
    assert (seen["ack"], seen["unacked"], seen["tracked"], seen["untracked"]) == ("ok", "ok", "ok", "ok")
    first = {"type": "broadcast", "event": "wave", "payload": {"n": 1, "text": "héllo"}}
    assert seen["gotA"] == [first, {"type": "broadcast", "event": "wave", "payload": {"n": 2}}]
    assert seen["gotB"] == [first]  # not its own n=2: self is off
    [meta] = seen["state"]["ada"]
    assert meta["status"] == "online" and meta["presence_ref"]
    assert (seen["joins"], seen["leaves"]) == (["ada"], ["ada"])


async def test_supabase_js_auth_signs_up_in_out_and_anonymously(
    devstack, db: asyncpg.Connection, js_dir: Path
):
    await db.execute("select reactor.allow_insert('jobs', 'js_auth')")
    email = f"ada-{uuid.uuid4().hex[:8]}@example.com"
    env = {
        "SUPABASE_URL": devstack.url,
        "SUPABASE_ANON_KEY": devstack.keys.anon,
        "EMAIL": email,
        "JOB_TYPE": "js_auth",
    }
    seen = await run_js(js_dir, "app_auth.mjs", env)
    user = seen["signUp"]["user"]
    assert seen["signUp"]["hasSession"] and (user["email"], user["is_anonymous"]) == (email, False)
    assert seen["wrong"] == {
        "name": "AuthApiError",
        "status": 400,
        "code": "invalid_credentials",
        "message": "Invalid login credentials",
    }
    assert seen["taken"] == {"status": 422, "code": "user_already_exists"}
    session = seen["session"]
    assert (session["token_type"], session["expires_in"], session["user"]["id"]) == (
        "bearer",
        3600,
        user["id"],
    )
    assert seen["getUser"]["id"] == seen["refreshed"]["userId"] == seen["inserted"]["user_id"] == user["id"]
    assert seen["refreshed"]["refreshToken"] != session["refresh_token"]
    assert seen["afterSignOut"] is None
    assert seen["stale"] == {"status": 400, "code": "refresh_token_not_found"}
    anonymous = seen["anonymous"]
    claims = jwt.decode(
        anonymous["accessToken"], devstack.keys.jwt_secret, algorithms=["HS256"], audience="authenticated"
    )
    assert anonymous["user"]["is_anonymous"] is True and claims["is_anonymous"] is True
    assert claims["sub"] == anonymous["user"]["id"] and claims["role"] == "authenticated"


async def test_supabase_js_private_channels_and_broadcast_from_database(
    devstack, db: asyncpg.Connection, js_dir: Path
) -> None:
    ids = {name: str(uuid.uuid4()) for name in ("ada", "bob", "eve")}
    await db.execute("""
        create table public.room_members (user_id uuid, topic text, can_send boolean not null);
        create policy members_read on realtime.messages for select to authenticated
          using (exists (select 1 from public.room_members m
                         where m.user_id = auth.uid() and m.topic = realtime.topic()));
        create policy senders_write on realtime.messages for insert to authenticated
          with check (exists (select 1 from public.room_members m
                              where m.user_id = auth.uid() and m.topic = realtime.topic() and m.can_send));
        create function public.shout(words text) returns void language sql security definer
          as $$ select realtime.send(jsonb_build_object('words', words), 'shout', 'room:js') $$;
    """)
    await db.execute(
        "insert into public.room_members values ($1, 'room:js', true), ($2, 'room:js', false)",
        ids["ada"],
        ids["bob"],
    )
    env = {
        "SUPABASE_URL": devstack.url,
        "SUPABASE_ANON_KEY": devstack.keys.anon,
        **{f"{name.upper()}_TOKEN": devstack.keys.user_token(user_id) for name, user_id in ids.items()},
    }
    seen = await run_js(js_dir, "app_private.mjs", env)
    assert seen["adaJoin"] == seen["bobJoin"] == {"status": "SUBSCRIBED", "error": None}
    assert seen["eveJoin"]["status"] == "CHANNEL_ERROR"
    assert (
        seen["eveJoin"]["error"]
        == "Unauthorized: You do not have permissions to read from this Channel topic: room:js"
    )
    assert (seen["bobSend"], seen["adaSend"]) == ("timed out", "ok")  # bob may read, not send
    assert (seen["eveHttp"], seen["adaHttp"], seen["fallback"]) == ("Unauthorized", {"success": True}, "ok")
    wave, shout, http, rest = seen["gotB"]
    assert (wave["event"], wave["payload"]) == ("wave", {"from": "ada"})
    stored = await db.fetchval("select id::text from realtime.messages where event = 'shout'")
    assert shout == {
        "type": "broadcast",
        "event": "shout",
        "payload": {"words": "hello", "id": stored},
        "meta": {"id": stored},
    }
    assert (http["payload"], rest["payload"]) == ({"from": "ada-http"}, {"from": "ada-rest"})


async def test_supabase_js_broadcast_replay(devstack, db: asyncpg.Connection, js_dir: Path) -> None:
    ids = {name: str(uuid.uuid4()) for name in ("ada", "bob", "wes")}
    await db.execute("""
        create table public.room_members (user_id uuid, topic text, presence_only boolean not null);
        create policy members_read on realtime.messages for select to authenticated
          using (exists (select 1 from public.room_members m
                         where m.user_id = auth.uid() and realtime.topic() like m.topic
                           and (not m.presence_only or realtime.messages.extension = 'presence')));
        create function public.shout(n int, t text) returns void language sql security definer
          as $$ select realtime.send(jsonb_build_object('n', n), 'shout', t) $$;
    """)
    await db.execute(
        "insert into public.room_members values ($1, 'room:replay%', false), ($2, 'room:replay%', false),"
        " ($3, 'room:replay', true)",
        ids["ada"],
        ids["bob"],
        ids["wes"],
    )
    # Stored before anyone joins: one an hour old (before `since`), three recent, one public.
    await db.execute("""
        insert into realtime.messages (topic, extension, event, payload, private, inserted_at)
        values ('room:replay', 'broadcast', 'shout', '{"n": 0}', true, now()::timestamp - interval '1 hour');
        select realtime.send(jsonb_build_object('n', n), 'shout', 'room:replay') from generate_series(1, 3) n;
        select realtime.send('{"n": 90}', 'shout', 'room:replay', false);
    """)
    for n in (4, 5, 6):
        await db.execute(
            "select realtime.send(jsonb_build_object('n', $1::int), 'shout', 'room:replay:2')", n
        )
    since = await db.fetchval("select (extract(epoch from now() - interval '10 minutes') * 1000)::bigint")
    env = {
        "SUPABASE_URL": devstack.url,
        "SUPABASE_ANON_KEY": devstack.keys.anon,
        "SINCE": str(since),
        **{f"{name.upper()}_TOKEN": devstack.keys.user_token(user_id) for name, user_id in ids.items()},
    }
    seen = await run_js(js_dir, "app_replay.mjs", env)
    stored = dict(await db.fetch("select (payload ->> 'n')::int, id::text from realtime.messages"))

    def replayed(n: int) -> dict[str, Any]:
        return {
            "type": "broadcast",
            "event": "shout",
            "payload": {"n": n, "id": stored[n]},
            "meta": {"replayed": True, "id": stored[n]},
        }

    def live(n: int) -> dict[str, Any]:
        return {
            "type": "broadcast",
            "event": "shout",
            "payload": {"n": n, "id": stored[n]},
            "meta": {"id": stored[n]},
        }

    ok = {"status": "SUBSCRIBED", "error": None}
    # In a single transaction the three sends share one inserted_at: their order among themselves is open.
    all_ = seen["all"]
    assert all_["join"] == ok
    assert sorted(all_["got"][:3], key=lambda m: m["payload"]["n"]) == [replayed(n) for n in (1, 2, 3)]
    assert all_["got"][3:] == [live(10)]  # not n=0 (before since), not the public n=90
    assert seen["none"] == {"join": ok, "got": [live(11)]}
    assert seen["limited"] == {"join": ok, "got": [replayed(5), replayed(6), live(12)]}
    assert seen["presenceOnly"] == {
        "status": "CHANNEL_ERROR",
        "error": "Unauthorized: You do not have permissions to read from this Channel topic: room:replay",
    }
    assert (
        seen["publicThrown"]
        == "tried to use replay on public channel 'realtime:room:public'. It must be a private channel."
    )
