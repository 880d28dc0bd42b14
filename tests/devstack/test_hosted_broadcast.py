"""The hosted message quota on Broadcast: every broadcast sent and every delivery counts on
Realtime's channel-events counter; once its limit is triggered a channel that receives a
broadcast gets "Too many messages per second" and is closed, broadcasts from the database are
dropped and the REST API answers 429. The local profile counts nothing."""

from __future__ import annotations

import httpx
import pytest

from reactor.devstack.profile import Profile
from reactor.devstack.stack import serve
from tests.support.realtime import close, connect, system

pytestmark = pytest.mark.anyio


def wave(n: int) -> dict:
    return {"type": "broadcast", "event": "wave", "payload": {"n": n}}


async def test_over_the_quota_broadcast_channels_shut_loudly(database_url, db) -> None:
    profile = Profile.hosted("free", round_trip_ms=0.0, messages_per_second=1)
    async with serve(database_url, port=0, profile=profile) as stack:
        a, b = await connect(stack, stack.keys.anon), await connect(stack, stack.keys.anon)
        await a.join("room")
        join_ref = await b.join("room")
        assert (await a.recv())["payload"]["status"] == "ok"
        assert (await b.recv())["payload"]["status"] == "ok"
        for n in range(3):
            await a.push("realtime:room", "broadcast", wave(n))
            assert (await b.recv())["payload"] == wave(n)
        rate = stack.realtime.event_rate
        assert rate is not None and not rate.triggered
        rate.tick()  # 3 sent + 3 delivered in one 5 s bucket: 1.2 a second, over 1
        assert rate.triggered and stack.realtime.counters.broadcast_quota_reached == 1

        await a.push("realtime:room", "broadcast", wave(3))
        assert (await b.recv())["payload"] == wave(3)  # delivered, then the channel shuts
        assert await b.recv() == system("room", "error", "Too many messages per second", "system")
        assert await b.recv() == close("realtime:room", join_ref)

        await db.execute("""select realtime.send('{"n": 4}', 'wave', 'room', false)""")
        async with httpx.AsyncClient() as http:
            answer = await http.post(
                f"{stack.url}/realtime/v1/api/broadcast",
                json={"messages": [{"topic": "room", "event": "wave", "payload": {}}]},
                headers={"apikey": stack.keys.anon},
            )
        assert (answer.status_code, answer.json()) == (429, {"message": "You have exceeded your rate limit"})
        await stack.realtime.counters.until(lambda c: c.broadcasts_dropped == 1)
        await a.ws.close()
        await b.ws.close()


async def test_local_broadcast_has_no_quota(database_url) -> None:
    async with serve(database_url, port=0, profile=Profile.local()) as stack:
        assert stack.realtime.event_rate is None


async def test_the_quota_fault_counts_broadcasts_when_asked(database_url) -> None:
    profile = Profile.hosted("free", round_trip_ms=0.0, messages_per_second=100)
    async with serve(database_url, port=0, profile=profile) as stack:
        async with httpx.AsyncClient(base_url=stack.url) as http:
            fault = {"message_rate": 1000, "seconds": 10, "broadcasts": True}
            answer = await http.post(
                "/_devstack/faults", json=fault, headers={"apikey": stack.keys.service_role}
            )
            assert answer.status_code == 200
            bad = {"message_rate": 1000, "seconds": 10, "broadcasts": "yes"}
            answer = await http.post(
                "/_devstack/faults", json=bad, headers={"apikey": stack.keys.service_role}
            )
            assert (answer.status_code, answer.json()) == (
                400,
                {"error": "bad fault request: broadcasts must be true or false, got 'yes'"},
            )
        rates = stack.realtime.message_rate, stack.realtime.event_rate
        assert rates[0] is not None and rates[1] is not None
        await stack.realtime.counters.until(lambda c: rates[0].triggered and rates[1].triggered)
        assert stack.realtime.counters.broadcast_quota_reached == 1
