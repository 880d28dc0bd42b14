"""Realtime's REST broadcast API: supabase-py's `http_send` (the single-message endpoint) and the
batch endpoint supabase-js falls back to, with Realtime's answers: 202 and delivery; 403 for a
private message the caller may not write, a batch silently skipping such topics; the gateway's
401 without an API key and Realtime's 401 for a bad token; 422 for a batch without messages."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import httpx
import pytest
from realtime import RealtimeSubscribeStates
from realtime.exceptions import RealtimeHTTPError
from supabase import AsyncClient, acreate_client

from tests.support.realtime import client

pytestmark = pytest.mark.anyio

WAIT = 10.0  # a safety net, not a speed requirement


async def listening(sb: AsyncClient, name: str, private: bool = False):
    channel = sb.channel(name, {"config": {"private": private}})
    seen: asyncio.Queue[Any] = asyncio.Queue()
    channel.on_broadcast("wave", seen.put_nowait)
    states: asyncio.Queue[Any] = asyncio.Queue()
    await channel.subscribe(lambda state, error: states.put_nowait(state))
    assert await asyncio.wait_for(states.get(), WAIT) == RealtimeSubscribeStates.SUBSCRIBED
    return seen


async def test_http_send_public_and_private(devstack, db: asyncpg.Connection) -> None:
    ada_id, eve_id = str(uuid.uuid4()), str(uuid.uuid4())
    await db.execute(f"""
        create policy ada_reads on realtime.messages for select to authenticated
          using (auth.uid() = '{ada_id}' and realtime.topic() = 'desk');
        create policy ada_writes on realtime.messages for insert to authenticated
          with check (auth.uid() = '{ada_id}' and realtime.topic() = 'desk');
    """)
    listener = await acreate_client(devstack.url, devstack.keys.service_role)
    public_seen = await listening(listener, "desk")
    private_listener = await acreate_client(devstack.url, devstack.keys.service_role)
    private_seen = await listening(private_listener, "desk", private=True)

    sender = await acreate_client(devstack.url, devstack.keys.anon)
    await sender.channel("desk").http_send("wave", {"n": 1})  # never joined: REST
    message = await asyncio.wait_for(public_seen.get(), WAIT)
    assert (message["event"], message["payload"]) == ("wave", {"n": 1})

    ada = await client(devstack.url, devstack.keys.anon, devstack.keys.user_token(ada_id))
    await ada.channel("desk", {"config": {"private": True}}).http_send("wave", {"n": 2})
    assert (await asyncio.wait_for(private_seen.get(), WAIT))["payload"] == {"n": 2}

    eve = await client(devstack.url, devstack.keys.anon, devstack.keys.user_token(eve_id))
    with pytest.raises(RealtimeHTTPError) as refused:
        await eve.channel("desk", {"config": {"private": True}}).http_send("wave", {"n": 3})
    assert (refused.value.status, str(refused.value)) == (403, "Unauthorized")
    await asyncio.sleep(0.2)
    assert private_seen.empty() and public_seen.empty()
    await listener.realtime.close()
    await private_listener.realtime.close()


async def test_batch_endpoint_and_refusals(devstack) -> None:
    listener = await acreate_client(devstack.url, devstack.keys.service_role)
    public_seen = await listening(listener, "lobby")
    private_listener = await acreate_client(devstack.url, devstack.keys.service_role)
    private_seen = await listening(private_listener, "lobby", private=True)
    url = f"{devstack.url}/realtime/v1/api/broadcast"
    anon = {"apikey": devstack.keys.anon, "Authorization": f"Bearer {devstack.keys.anon}"}
    batch = {
        "messages": [
            {"topic": "lobby", "event": "wave", "payload": {"n": 1}},
            {"topic": "lobby", "event": "wave", "payload": {"n": 2}, "private": True},  # anon may not
        ]
    }
    async with httpx.AsyncClient() as http:
        answer = await http.post(url, json=batch, headers=anon)
        assert (answer.status_code, answer.content) == (202, b"")
        message = await asyncio.wait_for(public_seen.get(), WAIT)
        assert (message["event"], message["payload"]) == ("wave", {"n": 1})

        service = {"apikey": devstack.keys.service_role}  # no bearer: the apikey is the token
        answer = await http.post(url, json=batch, headers=service)
        assert answer.status_code == 202
        assert (await asyncio.wait_for(private_seen.get(), WAIT))["payload"] == {"n": 2}
        assert (await asyncio.wait_for(public_seen.get(), WAIT))["payload"] == {"n": 1}

        answer = await http.post(url, json=batch)
        assert (answer.status_code, answer.json()["message"]) == (401, "No API key found in request")
        bad = {"apikey": devstack.keys.anon, "Authorization": "Bearer not-a-jwt"}
        answer = await http.post(url, json=batch, headers=bad)
        assert (answer.status_code, answer.json()) == (401, {"message": "Unauthorized"})
        answer = await http.post(f"{url}/lobby/events/wave", json={"n": 3}, headers=bad)
        assert (answer.status_code, answer.json()) == (401, {"message": "Unauthorized"})

        answer = await http.post(url, json={}, headers=anon)
        assert (answer.status_code, answer.json()) == (422, {"errors": {"messages": ["can't be blank"]}})
        answer = await http.post(url, json={"messages": [{"topic": "lobby"}]}, headers=anon)
        assert answer.status_code == 422
        assert answer.json() == {
            "errors": {"messages": [{"event": ["can't be blank"], "payload": ["can't be blank"]}]}
        }
    await asyncio.sleep(0.2)
    assert private_seen.empty() and public_seen.empty()
    await listener.realtime.close()
    await private_listener.realtime.close()
