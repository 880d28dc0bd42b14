"""Broadcast replay: the stored broadcasts a private channel asks for when it joins with
`config.broadcast.replay = {since, limit}`, as Supabase Realtime answers it
(lib/realtime/messages.ex `replay/5` and `maybe_replay_messages` in realtime_channel.ex).

Only a private channel may ask: on a public one the join is refused. `since` (epoch
milliseconds) must be an integer, and `limit` too when given; a missing limit is 25, and any
limit is held between 1 and 25. The messages are the topic's private broadcast rows of
`realtime.messages` inserted at or after `since` (and less than a minute past now): the `limit`
most recent of them, sent oldest first. Like Realtime, the rows are read as the table's owner,
not through RLS: the join already asked RLS whether the user may read the topic's broadcasts,
and a join whose user may not (one that may only read presence) is refused when it asks for a
replay. A `replay` that is not an object asks for nothing.

`inserted_at` is a timestamp without time zone filled by `now()`; `since` is turned into one the
same way (in the session's time zone, UTC on Supabase), so the two compare as Realtime's do.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import asyncpg

HARD_LIMIT = 25  # Realtime.Messages' @hard_limit
DEFAULT_LIMIT = 25  # what the channel asks for when the join names no limit
# Elixir's DateTime.from_unix/2 accepts milliseconds for the years -9999 to 9999 only.
_MIN_MS, _MAX_MS = -377_705_116_800_000, 253_402_300_799_999

PUBLIC = "UnableToReplayMessages: Replay is not allowed for public channels"
INVALID = "UnableToReplayMessages: Replay params are not valid"
FAILED = "UnableToReplayMessages: Realtime was unable to replay messages"


class ReplayRefused(Exception):
    """The join's error reason, in Realtime's words."""


@dataclass(frozen=True)
class Request:
    since: int  # epoch milliseconds
    limit: int  # 1 to HARD_LIMIT


@dataclass(frozen=True)
class Stored:
    id: str
    event: str | None
    payload: Any  # the row's JSON payload, decoded

    def broadcast(self) -> dict[str, Any]:
        """The payload of the `broadcast` push that replays it (RealtimeChannel's replay/3)."""
        return {
            "payload": self.payload,
            "event": self.event,
            "type": "broadcast",
            "meta": {"replayed": True, "id": self.id},
        }


def asks(config: Any) -> bool:
    """Whether the join's config names `broadcast.replay` at all (whatever its value)."""
    broadcast = config.get("broadcast") if isinstance(config, dict) else None
    return isinstance(broadcast, dict) and "replay" in broadcast


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def request(config: Any, private: bool) -> Request | None:
    """What the join asks to replay: None for nothing; ReplayRefused when Realtime refuses it."""
    if not asks(config):
        return None
    if not private:
        raise ReplayRefused(PUBLIC)
    params = config["broadcast"]["replay"]
    if not isinstance(params, dict):
        return None
    since, limit = params.get("since"), params.get("limit")
    if limit is None or limit is False:
        limit = DEFAULT_LIMIT
    if not (_integer(since) and _integer(limit)) or not _MIN_MS <= since <= _MAX_MS:
        raise ReplayRefused(INVALID)
    return Request(since, max(min(limit, HARD_LIMIT), 1))


async def fetch(pool: asyncpg.Pool, topic: str, asked: Request) -> list[Stored]:
    """The topic's stored private broadcasts the request covers, oldest first."""
    try:
        rows = await pool.fetch(
            """select id::text as id, event, payload::text as payload from realtime.messages
               where topic = $1 and private is true and extension = 'broadcast'
                 and inserted_at >= pg_catalog.to_timestamp($2::float8 / 1000)::timestamp
                 and inserted_at < pg_catalog.now()::timestamp + interval '1 minute'
               order by inserted_at desc
               limit $3""",
            topic,
            asked.since,
            asked.limit,
        )
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise ReplayRefused(FAILED) from exc
    return [
        Stored(row["id"], row["event"], None if row["payload"] is None else json.loads(row["payload"]))
        for row in reversed(rows)
    ]
