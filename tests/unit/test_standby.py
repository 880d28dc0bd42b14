"""The hand-off slots a worker offers, counted as the SQL counts them (sql/schema.sql, "claim and
hand-off"): what a claim offers, what a tick may renew, what hand-offs take, when to re-offer."""

from __future__ import annotations

import pytest

from reactor.feed import Feed
from reactor.memory import MemoryStore
from reactor.standby import Standby
from reactor.store import MAX_STANDBY_SLOTS, Unavailable

pytestmark = pytest.mark.anyio


def live_feed(*tables: str) -> Feed:
    feed = Feed(True)
    feed.state = "subscribed"
    for table in tables:
        feed.went_live(table)
    return feed


def test_a_worker_stands_by_only_where_its_feed_is_live_and_hand_offs_are_on() -> None:
    feed = live_feed("jobs")
    assert Standby(MemoryStore(), "w", 30, feed).seconds("jobs") == 30
    assert Standby(MemoryStore(), "w", 30, feed).seconds("other") == 0
    assert Standby(MemoryStore(), "w", 0, feed).seconds("jobs") == 0
    feed.state = "down"
    assert Standby(MemoryStore(), "w", 30, feed).seconds("jobs") == 0


def test_a_claim_offers_the_slots_it_left_free_up_to_the_cap() -> None:
    standby = Standby(MemoryStore(), "w", 30, live_feed("jobs"))
    standby.claimed("jobs", limit=10, claimed=3, seconds=30, tick=False, heard=standby.heard("jobs"))
    assert [standby.spent("jobs") for _ in range(1)] == [False]
    for _ in range(7):
        standby.took("jobs")
    assert standby.spent("jobs")
    standby.claimed("jobs", limit=100, claimed=0, seconds=30, tick=False, heard=standby.heard("jobs"))
    for _ in range(MAX_STANDBY_SLOTS - 1):
        standby.took("jobs")
    assert not standby.spent("jobs")
    standby.took("jobs")
    assert standby.spent("jobs")


def test_a_tick_never_raises_the_offer() -> None:
    standby = Standby(MemoryStore(), "w", 30, live_feed("jobs"))
    standby.claimed(
        "jobs", limit=10, claimed=8, seconds=30, tick=False, heard=standby.heard("jobs")
    )  # offers 2
    standby.claimed(
        "jobs", limit=10, claimed=0, seconds=30, tick=True, heard=standby.heard("jobs")
    )  # would offer 10
    standby.took("jobs")
    assert not standby.spent("jobs")
    standby.took("jobs")
    assert standby.spent("jobs")


def test_a_tick_lowers_the_offer_to_what_it_leaves_free() -> None:
    standby = Standby(MemoryStore(), "w", 30, live_feed("jobs"))
    standby.claimed("jobs", limit=10, claimed=0, seconds=30, tick=False, heard=standby.heard("jobs"))
    standby.claimed("jobs", limit=10, claimed=9, seconds=30, tick=True, heard=standby.heard("jobs"))
    standby.took("jobs")
    assert standby.spent("jobs")


def test_a_claim_without_a_standby_withdraws_the_offer() -> None:
    standby = Standby(MemoryStore(), "w", 30, live_feed("jobs"))
    standby.claimed("jobs", limit=10, claimed=0, seconds=30, tick=False, heard=standby.heard("jobs"))
    standby.claimed("jobs", limit=10, claimed=0, seconds=0, tick=False, heard=standby.heard("jobs"))
    standby.took("jobs")  # a hand-off counted against no offer changes nothing
    assert not standby.spent("jobs")


def test_an_offer_is_spent_only_while_hand_offs_could_still_come() -> None:
    feed = live_feed("jobs")
    standby = Standby(MemoryStore(), "w", 30, feed)
    standby.claimed("jobs", limit=1, claimed=0, seconds=30, tick=False, heard=standby.heard("jobs"))
    standby.took("jobs")
    standby.took("jobs")  # never below zero
    assert standby.spent("jobs")
    feed.connection_lost()
    assert not standby.spent("jobs")


def test_hand_offs_heard_while_a_claim_was_on_its_way_came_out_of_its_offer() -> None:
    standby = Standby(MemoryStore(), "w", 30, live_feed("jobs"))
    heard = standby.heard("jobs")  # what the claim tells the database
    for _ in range(3):
        standby.took("jobs")
    assert standby.heard("jobs") == heard + 3
    standby.claimed("jobs", limit=10, claimed=0, seconds=30, tick=False, heard=heard)
    for _ in range(6):
        standby.took("jobs")
    assert not standby.spent("jobs")
    standby.took("jobs")
    assert standby.spent("jobs")  # 10 offered, 3 of them taken before the answer came


def test_an_offer_half_taken_is_renewed_while_more_slots_are_free_than_it_offers() -> None:
    feed = live_feed("jobs")
    standby = Standby(MemoryStore(), "w", 30, feed)
    standby.claimed("jobs", limit=8, claimed=0, seconds=30, tick=False, heard=0)
    for _ in range(3):
        standby.took("jobs")
    assert not standby.low("jobs", free=8)  # 5 of 8 left
    standby.took("jobs")
    assert standby.low("jobs", free=8)  # 4 of 8 left, 8 slots free
    assert not standby.low("jobs", free=4)  # a claim could offer no more
    feed.connection_lost()
    assert not standby.low("jobs", free=8)  # no hand-off can come


def test_an_offer_only_a_tick_renewed_is_not_renewed_early() -> None:
    standby = Standby(MemoryStore(), "w", 30, live_feed("jobs"))
    standby.claimed("jobs", limit=8, claimed=8, seconds=30, tick=True, heard=0)
    assert not standby.low("jobs", free=8)


async def test_withdrawing_stands_down_in_every_table_offered_and_forgets_them() -> None:
    store = MemoryStore(("a", "b", "c"))
    standby = Standby(store, "w", 30, live_feed("a", "b", "c"))
    standby.claimed("b", limit=5, claimed=0, seconds=30, tick=False, heard=0)
    standby.claimed("a", limit=5, claimed=5, seconds=30, tick=False, heard=0)
    await standby.withdraw()
    assert store.calls == {("reactor_stand_down", "ok"): 2}
    await standby.withdraw()
    assert store.calls == {("reactor_stand_down", "ok"): 2}


async def test_a_standby_that_cannot_be_withdrawn_is_left_to_lapse() -> None:
    class Down(MemoryStore):
        async def stand_down(self, table: str, worker: str) -> None:
            raise Unavailable("reactor_stand_down: cannot reach the API: ConnectError")

    standby = Standby(Down(), "w", 30, live_feed("jobs"))
    standby.claimed("jobs", limit=5, claimed=0, seconds=30, tick=False, heard=standby.heard("jobs"))
    await standby.withdraw()  # logged, not raised
    standby.took("jobs")
    assert not standby.spent("jobs")  # forgotten all the same


def test_only_the_claim_that_first_stands_the_worker_by_asks_for_one_more_look() -> None:
    standby = Standby(MemoryStore(), "w", 30, live_feed("jobs"))
    assert (
        standby.claimed("jobs", limit=10, claimed=0, seconds=30, tick=True, heard=standby.heard("jobs"))
        is True
    )  # a tick makes none
    assert (
        standby.claimed("jobs", limit=10, claimed=0, seconds=30, tick=False, heard=standby.heard("jobs"))
        is True
    )
    assert (
        standby.claimed("jobs", limit=10, claimed=0, seconds=30, tick=False, heard=standby.heard("jobs"))
        is False
    )  # renewed only
    assert (
        standby.claimed("jobs", limit=10, claimed=0, seconds=30, tick=True, heard=standby.heard("jobs"))
        is False
    )
    assert (
        standby.claimed("jobs", limit=10, claimed=0, seconds=0, tick=False, heard=standby.heard("jobs"))
        is False
    )  # withdrawn
    assert (
        standby.claimed("jobs", limit=10, claimed=0, seconds=30, tick=False, heard=standby.heard("jobs"))
        is True
    )  # made again
