"""Phoenix channel frames in the two serializers Realtime speaks.

V1 (`vsn=1.0.0`, or no vsn; what the Python client uses): JSON objects. The server writes only
`topic`, `event`, `payload` and `ref`, with `ref` always present (null for pushes), since the
Python client drops a push whose `ref` key is missing. V2 (`vsn=2.0.0`, supabase-js): JSON arrays
`[join_ref, ref, topic, event, payload]`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

VERSIONS = ("1.0.0", "2.0.0")


class MalformedFrame(ValueError):
    """A frame Phoenix's serializer cannot decode; Phoenix drops the connection (1011)."""


@dataclass(frozen=True)
class Frame:
    topic: str
    event: str
    payload: Any
    ref: str | None = None
    join_ref: str | None = None


def decode(text: str, vsn: str) -> Frame:
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise MalformedFrame(str(exc)) from exc
    if vsn == "2.0.0":
        if not isinstance(raw, list) or len(raw) < 5:
            raise MalformedFrame("expected [join_ref, ref, topic, event, payload]")
        join_ref, ref, topic, event, payload = raw[:5]
    else:
        if not isinstance(raw, dict) or not {"topic", "event", "payload", "ref"} <= raw.keys():
            raise MalformedFrame("expected an object with topic, event, payload and ref")
        topic, event, payload = raw["topic"], raw["event"], raw["payload"]
        ref, join_ref = raw["ref"], raw.get("join_ref")
    if not isinstance(topic, str) or not isinstance(event, str):
        raise MalformedFrame("topic and event must be strings")
    return Frame(topic, event, payload, _ref(ref), _ref(join_ref))


def _ref(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value)


def encode(frame: Frame, vsn: str) -> str:
    if vsn == "2.0.0":
        return json.dumps([frame.join_ref, frame.ref, frame.topic, frame.event, frame.payload])
    return json.dumps(
        {"event": frame.event, "payload": frame.payload, "ref": frame.ref, "topic": frame.topic}
    )


def reply(request: Frame, status: str, response: dict[str, Any], join_ref: str | None = None) -> Frame:
    return Frame(request.topic, "phx_reply", {"status": status, "response": response}, request.ref, join_ref)
