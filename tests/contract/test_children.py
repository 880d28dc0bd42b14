"""Child jobs and fan-in (sql/migrations/0015): a running job spawns children, waits for them, and
runs again, resumed, once the last has finished."""

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from tests.support.contract import acting_as, claim, enqueue, leases, row, rpc

pytestmark = pytest.mark.anyio

ALICE = str(uuid.uuid4())
HOUR_AGO = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


async def running_parent(db: asyncpg.Connection, **columns) -> asyncpg.Record:
    await enqueue(db, "parent", user_id=ALICE, **columns)
    [parent] = await claim(db, ["parent"])
    return parent


async def spawn(db: asyncpg.Connection, parent: asyncpg.Record, *children: dict) -> dict:
    return await rpc(
        db,
        "reactor_spawn",
        p_table="jobs",
        p_parent=parent["id"],
        p_lease_token=str(parent["lease_token"]),
        p_children=json.dumps(children),
    )


async def wait(db: asyncpg.Connection, parent: asyncpg.Record) -> dict:
    return await rpc(db, "reactor_wait", p_table="jobs", p_jobs=leases([parent]))


async def test_children_are_jobs_of_the_parents_owner_and_a_key_given_again_makes_none(db):
    parent = await running_parent(db, priority=7)
    first = await spawn(
        db,
        parent,
        {"job_type": "quote", "key": "a", "payload": {"term": 24}},
        {"job_type": "quote", "key": "b", "priority": 1},
    )
    again = await spawn(db, parent, {"job_type": "quote", "key": "b"}, {"job_type": "quote", "key": "c"})
    assert again["ids"][0] == first["ids"][1]
    assert len(set(first["ids"] + again["ids"])) == 3
    a, b = await row(db, first["ids"][0]), await row(db, first["ids"][1])
    assert (a["status"], a["parent_id"], a["child_key"], str(a["user_id"])) == (
        "pending",
        parent["id"],
        "a",
        ALICE,
    )
    assert json.loads(a["payload"]) == {"term": 24}
    assert (a["priority"], b["priority"]) == (7, 1)  # the parent's, unless asked
    assert await db.fetchval("select count(*) from public.jobs where parent_id = $1", parent["id"]) == 3


async def test_only_the_leases_holder_spawns(db):
    parent = await running_parent(db)
    stale = {**dict(parent), "lease_token": uuid.uuid4()}
    assert await spawn(db, stale, {"job_type": "quote", "key": "a"}) == {"stale": True}
    await rpc(db, "reactor_complete", p_table="jobs", p_jobs=leases([parent]))
    assert await spawn(db, parent, {"job_type": "quote", "key": "a"}) == {"stale": True}
    assert await db.fetchval("select count(*) from public.jobs where parent_id is not null") == 0


@pytest.mark.parametrize(
    "children, error",
    [
        ([], "number of children"),
        ([{"job_type": "quote"}], "each child must be an object with a job_type and a key"),
        ([{"key": "a"}], "each child must be an object with a job_type and a key"),
        (["quote"], "each child must be an object with a job_type and a key"),
        ([{"job_type": "quote", "key": ""}], "child_key_length"),
    ],
)
async def test_a_malformed_child_is_refused_with_what_is_wrong(db, children, error):
    parent = await running_parent(db)
    with pytest.raises(asyncpg.PostgresError, match=error):
        await spawn(db, parent, *children)


async def test_a_job_has_at_most_a_thousand_children(db):
    parent = await running_parent(db)
    many = [{"job_type": "quote", "key": str(i)} for i in range(1000)]
    assert len((await spawn(db, parent, *many))["ids"]) == 1000
    with pytest.raises(asyncpg.PostgresError, match="would have 1001 children; a job has at most 1000"):
        await spawn(db, parent, {"job_type": "quote", "key": "one more"})


async def test_a_waiting_parent_runs_again_once_its_last_child_has_finished(db):
    parent = await running_parent(db)
    await spawn(db, parent, {"job_type": "quote", "key": "a"}, {"job_type": "quote", "key": "b"})
    assert await wait(db, parent) == {"waiting": [parent["id"]], "resumed": [], "stale": []}
    waiting = await row(db, parent["id"])
    assert (waiting["status"], waiting["attempts"], waiting["lease_token"]) == ("waiting", 0, None)
    assert await claim(db, ["parent"]) == []
    a, b = await claim(db, ["quote"], limit=2)
    answer = await rpc(db, "reactor_complete", p_table="jobs", p_jobs=leases([a], result={"price": 1}))
    assert "resumed" not in answer and (await row(db, parent["id"]))["status"] == "waiting"
    answer = await rpc(db, "reactor_fail", p_table="jobs", p_jobs=leases([b], error="no", permanent=True))
    assert answer["resumed"] == 1  # its worker claims the parent at once
    [again] = json.loads(await db.fetchval("select public.reactor_claim_jobs('jobs', 'w1', array['parent'])"))
    assert (again["id"], again["resumed"], again["attempt"]) == (parent["id"], 1, 1)
    children = (await rpc(db, "reactor_children", p_table="jobs", p_parent=parent["id"]))["children"]
    assert [(c["key"], c["status"], c["result"], c["last_error"]) for c in children] == [
        ("a", "completed", {"price": 1}, None),
        ("b", "failed", None, "no"),
    ]


async def test_a_child_retried_keeps_its_parent_waiting(db):
    parent = await running_parent(db)
    await spawn(db, parent, {"job_type": "quote", "key": "a"})
    await wait(db, parent)
    [child] = await claim(db, ["quote"])
    answer = await rpc(db, "reactor_fail", p_table="jobs", p_jobs=leases([child], error="later"))
    assert answer["retried"] == [child["id"]] and "resumed" not in answer
    assert (await row(db, parent["id"]))["status"] == "waiting"


async def test_waiting_after_every_child_has_finished_resumes_at_once(db):
    parent = await running_parent(db, run_at=HOUR_AGO)
    await spawn(db, parent, {"job_type": "quote", "key": "a"})
    [child] = await claim(db, ["quote"])
    assert "resumed" not in await rpc(db, "reactor_complete", p_table="jobs", p_jobs=leases([child]))
    before = await db.fetchval("select now()")
    assert await wait(db, parent) == {"waiting": [], "resumed": [parent["id"]], "stale": []}
    resumed = await row(db, parent["id"])
    assert (resumed["status"], resumed["resumed"], resumed["attempts"]) == ("pending", 1, 0)
    assert resumed["run_at"] >= before  # due now, behind the jobs already waiting at its priority


async def test_a_parent_left_waiting_keeps_its_run_at(db):
    parent = await running_parent(db, run_at=HOUR_AGO)
    await spawn(db, parent, {"job_type": "quote", "key": "a"})
    await wait(db, parent)
    waiting = await row(db, parent["id"])
    assert (waiting["status"], waiting["run_at"]) == ("waiting", HOUR_AGO)


async def test_a_stale_wait_changes_nothing(db):
    parent = await running_parent(db)
    await spawn(db, parent, {"job_type": "quote", "key": "a"})
    stale = {**dict(parent), "lease_token": uuid.uuid4()}
    assert await wait(db, stale) == {"waiting": [], "resumed": [], "stale": [parent["id"]]}
    assert (await row(db, parent["id"]))["status"] == "processing"


async def test_siblings_finishing_at_once_resume_their_parent_exactly_once(db, database_url):
    connections = [await asyncpg.connect(database_url) for _ in range(8)]
    try:
        for _ in range(5):  # without the parent's row lock, most rounds leave it waiting for ever
            parent = await running_parent(db)
            await spawn(db, parent, *({"job_type": "quote", "key": str(i)} for i in range(8)))
            await wait(db, parent)
            children = await claim(db, ["quote"], limit=8)
            answers = await asyncio.gather(
                *(
                    rpc(c, "reactor_complete", p_table="jobs", p_jobs=leases([child]))
                    for c, child in zip(connections, children, strict=True)
                )
            )
            assert sum(a.get("resumed", 0) for a in answers) == 1
            resumed = await row(db, parent["id"])
            assert (resumed["status"], resumed["resumed"]) == ("pending", 1)
            await claim(db, ["parent"])
    finally:
        for c in connections:
            await c.close()


async def test_a_child_reaped_for_good_resumes_its_parent(db):
    parent = await running_parent(db)
    await spawn(db, parent, {"job_type": "quote", "key": "a", "max_attempts": 1})
    await wait(db, parent)
    await claim(db, ["quote"], lease=1)
    await db.execute(
        "update public.jobs set lease_expires_at = now() - interval '1 s' where parent_id is not null"
    )
    reaped = await rpc(db, "reactor_reap", p_table="jobs")
    assert len(reaped["failed"]) == 1
    assert (await row(db, parent["id"]))["status"] == "pending"


async def test_cancelling_a_parent_cancels_its_unfinished_children_and_theirs(db):
    parent = await running_parent(db)
    ids = (
        await spawn(
            db,
            parent,
            {"job_type": "quote", "key": "a"},
            {"job_type": "sub", "key": "b"},
            {"job_type": "quote", "key": "c"},
        )
    )["ids"]
    await wait(db, parent)
    [done] = await claim(db, ["quote"])  # a
    await rpc(db, "reactor_complete", p_table="jobs", p_jobs=leases([done]))
    [sub] = await claim(db, ["sub"], worker="w2")  # b, which spawns a grandchild and waits
    [grandchild] = (await spawn(db, sub, {"job_type": "leaf", "key": "x"}))["ids"]
    await wait(db, sub)
    [running] = await claim(db, ["quote"], worker="w3")  # c, running when the parent is cancelled
    answer = await rpc(db, "reactor_cancel", p_table="jobs", p_ids=[parent["id"]])
    assert answer["cancelled"] == [parent["id"]]
    statuses = {r["id"]: r["status"] for r in await db.fetch("select id, status from public.jobs")}
    assert [statuses[i] for i in (parent["id"], *ids, grandchild)] == [
        "cancelled",
        "completed",
        "cancelled",
        "cancelled",
        "cancelled",
    ]
    signal = await db.fetchval(
        "select payload from public.jobs where job_type = 'reactor.probe' and locked_by = 'w3'"
    )
    assert json.loads(signal) == {"worker": "w3", "cancel": running["id"]}


async def test_a_waiting_job_can_be_cancelled_by_its_owner(db):
    parent = await running_parent(db)
    [child] = (await spawn(db, parent, {"job_type": "quote", "key": "a"}))["ids"]
    await wait(db, parent)
    async with acting_as(db, "authenticated", ALICE):
        answer = json.loads(await db.fetchval("select public.reactor_cancel_own('jobs', $1)", parent["id"]))
    assert answer == {"id": parent["id"], "cancelled": True, "status": "cancelled"}
    assert (await row(db, child))["status"] == "cancelled"


async def test_deleting_an_unfinished_child_lets_its_parent_go_on(db):
    parent = await running_parent(db)
    [child] = (await spawn(db, parent, {"job_type": "quote", "key": "a"}))["ids"]
    await wait(db, parent)
    await db.execute("delete from public.jobs where id = $1", child)
    assert (await row(db, parent["id"]))["status"] == "pending"


async def test_owners_read_which_job_spawned_theirs_and_cannot_write_it(db):
    parent = await running_parent(db)
    [child] = (await spawn(db, parent, {"job_type": "quote", "key": "a"}))["ids"]
    await db.execute("select reactor.allow_insert('jobs', 'quote')")
    async with acting_as(db, "authenticated", ALICE):
        seen = await db.fetchrow("select parent_id, resumed from public.jobs where id = $1", child)
        assert (seen["parent_id"], seen["resumed"]) == (parent["id"], 0)
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await db.execute("select child_key from public.jobs")
    for column in ("parent_id", "child_key", "resumed"):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            async with acting_as(db, "authenticated", ALICE):
                await db.execute(f"insert into public.jobs (job_type, {column}) values ('quote', '1')")
