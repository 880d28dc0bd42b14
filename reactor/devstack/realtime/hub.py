"""Broadcast and Presence: what the channels of every socket joined to one topic share.

As Supabase Realtime (lib/realtime_web/channels/realtime_channel/broadcast_handler.ex,
presence_handler.ex, message_dispatcher.ex): a topic's subscribers are those joined to the same
name and privacy (a private and a public channel of one name never meet). A broadcast goes to
every other subscriber, and to the sender too with `config.broadcast.self`; one a V2 client sent
as a binary user-broadcast push (or one from the database or the REST API) reaches V2
subscribers in the binary framing (kind 4) and V1 ones as the JSON broadcast it converts to.
Presence is Phoenix.Presence's: `presence_state` maps each key to `{"metas": [...]}`, each meta
the tracked payload with a `phx_ref`; every track, update, untrack and leave sends a
`presence_diff` of joins and leaves to every subscriber. On a private channel a subscriber gets
broadcasts only if Realtime Authorization let it read them, and presence diffs likewise
(`allow`). Each broadcast a subscriber gets is reported to `meter`, as Realtime's dispatcher
tells each subscriber's channel to count it against the project's message quota. A stored
message already replayed to a subscriber on its join is not sent to it again.
"""

from __future__ import annotations

import base64
import itertools
import json
import secrets
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from reactor.devstack.realtime.phoenix import Frame

USER_BROADCAST_PUSH = 3  # RealtimeWeb.Socket.V2Serializer kinds
USER_BROADCAST = 4
JSON_ENCODING = 1


class Member(Protocol):
    """A socket's side of one joined channel, as the hub sees it."""

    vsn: str

    def send(self, frame: Frame) -> None: ...

    def send_bytes(self, data: bytes) -> None: ...

    def shutdown(self, join_topic: str, message: str) -> None: ...


@dataclass(frozen=True)
class UserBroadcast:
    """A broadcast in V2's binary framing: the event, payload bytes and their encoding."""

    event: str
    payload: bytes
    json_payload: bool
    metadata: dict[str, Any] = field(default_factory=dict)  # what a client pushed; not forwarded
    meta: dict[str, Any] | None = None  # what subscribers get as `meta`: a stored message's id

    def as_json(self) -> dict[str, Any] | None:
        """The JSON broadcast a V1 subscriber gets (UserBroadcast.convert_to_json_broadcast), or
        None for a binary payload, which V1 cannot carry."""
        if not self.json_payload:
            return None
        try:
            payload = json.loads(self.payload)
        except ValueError:
            return None
        converted = {"type": "broadcast", "event": self.event, "payload": payload}
        if self.meta is not None:
            converted["meta"] = self.meta
        return converted

    def encode(self, topic: str) -> bytes:
        """The kind-4 frame a V2 subscriber decodes (V2Serializer.fastlane!/1)."""
        meta = json.dumps(self.meta, separators=(",", ":")).encode() if self.meta is not None else b""
        parts = [topic.encode(), self.event.encode(), meta]
        return (
            struct.pack("5B", USER_BROADCAST, *map(len, parts), JSON_ENCODING if self.json_payload else 0)
            + b"".join(parts)
            + self.payload
        )


def decode_user_broadcast_push(data: bytes) -> tuple[Frame, UserBroadcast]:
    """A kind-3 frame from realtime-js (V2Serializer.decode_binary/1); ValueError if malformed."""
    if len(data) < 7 or data[0] != USER_BROADCAST_PUSH:
        raise ValueError("not a user broadcast push")
    sizes = data[1:6]
    encoding = data[6]
    offset, fields = 7, []
    for size in sizes:
        if offset + size > len(data):
            raise ValueError("truncated user broadcast push")
        fields.append(data[offset : offset + size])
        offset += size
    join_ref, ref, topic, event, metadata = (f.decode() for f in fields)
    meta = json.loads(metadata) if metadata else {}
    broadcast = UserBroadcast(event, data[offset:], encoding != 0, meta if isinstance(meta, dict) else {})
    frame = Frame(topic, "broadcast", None, ref or None, join_ref or None)
    return frame, broadcast


@dataclass
class _Subscriber:
    member: Member
    join_topic: str  # the topic it joined, `realtime:<name>`
    broadcast_read: bool | None = True  # None: not evaluated (withheld, as false)
    presence_read: bool | None = True
    replayed: frozenset[str] = frozenset()  # ids of the stored messages replayed on its join


@dataclass
class _Topic:
    members: dict[int, _Subscriber] = field(default_factory=dict)
    presences: dict[int, tuple[str, dict[str, Any]]] = field(default_factory=dict)  # id -> (key, meta)


class Hub:
    def __init__(self, meter: Callable[[Member, str], None] | None = None) -> None:
        self._topics: dict[tuple[str, bool], _Topic] = {}
        self._ids = itertools.count(1)
        self._meter = meter

    def join(
        self,
        member: Member,
        topic: str,
        private: bool,
        join_topic: str,
        broadcast_read: bool | None = True,
        presence_read: bool | None = True,
        replayed: frozenset[str] = frozenset(),
    ) -> int:
        """Subscribe to `topic` (a channel's name); frames go out on `join_topic`, the topic the
        member joined (`realtime:<name>`). The id names this join in later calls. A stored
        message whose id is in `replayed` was already replayed to it and is not sent again."""
        member_id = next(self._ids)
        subscriber = _Subscriber(member, join_topic, broadcast_read, presence_read, replayed)
        self._topics.setdefault((topic, private), _Topic()).members[member_id] = subscriber
        return member_id

    def allow(
        self,
        member_id: int,
        topic: str,
        private: bool,
        broadcast_read: bool | None,
        presence_read: bool | None,
    ) -> None:
        """What a subscriber may now read, after its policies were evaluated again."""
        found = self._topics.get((topic, private))
        subscriber = found.members.get(member_id) if found else None
        if subscriber is not None:
            subscriber.broadcast_read, subscriber.presence_read = broadcast_read, presence_read

    def leave(self, member_id: int, topic: str, private: bool) -> None:
        """Unsubscribe, untracking its presence (a leave in the diff the others get)."""
        self.untrack(member_id, topic, private)
        found = self._topics.get((topic, private))
        if found is not None:
            found.members.pop(member_id, None)
            if not found.members and not found.presences:
                del self._topics[(topic, private)]

    def broadcast(
        self,
        member_id: int | None,
        topic: str,
        private: bool,
        message: dict[str, Any] | UserBroadcast,
        include_self: bool,
    ) -> None:
        """To every subscriber of the topic that may read broadcasts; `member_id` None (from the
        database or the REST API) is no subscriber."""
        found = self._topics.get((topic, private))
        if found is None:
            return
        stored_id = _message_id(message)
        for other, subscriber in list(found.members.items()):
            if (other == member_id and not include_self) or subscriber.broadcast_read is not True:
                continue
            if stored_id is not None and stored_id in subscriber.replayed:
                continue  # MessageDispatcher's already_replayed?
            member, join_topic = subscriber.member, subscriber.join_topic
            if isinstance(message, UserBroadcast) and member.vsn == "2.0.0":
                member.send_bytes(message.encode(join_topic))
            elif isinstance(message, UserBroadcast):
                converted = message.as_json()
                if converted is None:
                    continue
                member.send(Frame(join_topic, "broadcast", converted))
            else:
                member.send(Frame(join_topic, "broadcast", message))
            if self._meter is not None:
                self._meter(member, join_topic)

    def state(self, topic: str, private: bool) -> dict[str, dict[str, list[dict[str, Any]]]]:
        """Phoenix.Presence.group of the topic's presences: key -> {"metas": [...]}."""
        found = self._topics.get((topic, private))
        grouped: dict[str, dict[str, list[dict[str, Any]]]] = {}
        for key, meta in found.presences.values() if found else ():
            grouped.setdefault(key, {"metas": []})["metas"].append(meta)
        return grouped

    def track(self, member_id: int, topic: str, private: bool, key: str, payload: dict[str, Any]) -> None:
        """Track, or update what is tracked (a join with `phx_ref_prev` and a leave of the old)."""
        found = self._topics.setdefault((topic, private), _Topic())
        old = found.presences.get(member_id)
        if old is not None and {k: v for k, v in old[1].items() if not k.startswith("phx_ref")} == payload:
            return  # no_payload_change
        meta = {**payload, "phx_ref": _ref()}
        if old is not None:
            meta["phx_ref_prev"] = old[1]["phx_ref"]
        found.presences[member_id] = (key, meta)
        leaves = {old[0]: {"metas": [old[1]]}} if old is not None else {}
        self._diff(found, {key: {"metas": [meta]}}, leaves)

    def untrack(self, member_id: int, topic: str, private: bool) -> None:
        found = self._topics.get((topic, private))
        if found is None or member_id not in found.presences:
            return
        key, meta = found.presences.pop(member_id)
        self._diff(found, {}, {key: {"metas": [meta]}})

    def _diff(self, found: _Topic, joins: dict[str, Any], leaves: dict[str, Any]) -> None:
        for subscriber in list(found.members.values()):
            if subscriber.presence_read is True:
                frame = Frame(subscriber.join_topic, "presence_diff", {"joins": joins, "leaves": leaves})
                subscriber.member.send(frame)


def _message_id(message: dict[str, Any] | UserBroadcast) -> str | None:
    """A stored message's id (its `meta.id`), or None."""
    meta = message.meta if isinstance(message, UserBroadcast) else message.get("meta")
    found = meta.get("id") if isinstance(meta, dict) else None
    return found if isinstance(found, str) else None


def _ref() -> str:
    """A Phoenix.Presence ref: an opaque, unique string."""
    return base64.b64encode(secrets.token_bytes(12)).decode()
