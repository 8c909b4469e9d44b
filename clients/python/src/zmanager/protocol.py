"""The wire protocol's pieces (docs/protocol.md), without any socket.

- :func:`envelope` builds an envelope map (§3), :func:`frames` the three
  frames ``[topic, envelope, payload]`` (§2) of an intake message;
- :func:`decode` reads published frames into a :class:`Message`;
- :func:`reply_topic` is a service's reply topic ``@reply~ID~`` (§6),
  :func:`entry_topic` a flow's entry topic (for logs: the node ignores the
  topic frame of what it is sent);
- :class:`Message`, and what a service gets: :class:`Result`,
  :class:`Step` (§7c), :class:`Delivery` (§7d).
"""

from __future__ import annotations

import string
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import msgpack  # type: ignore[import-untyped]

from .errors import ConfigError, RequestFailed, failure

__all__ = [
    "PROTOCOL_VERSION",
    "DEFAULT_INTAKE",
    "DEFAULT_PUBLISH",
    "NIL",
    "Message",
    "Result",
    "Step",
    "Delivery",
    "envelope",
    "frames",
    "decode",
    "pack",
    "unpack",
    "reply_topic",
    "entry_topic",
    "check_name",
    "now_us",
]

PROTOCOL_VERSION = 1
DEFAULT_INTAKE = "tcp://127.0.0.1:19030"
DEFAULT_PUBLISH = "tcp://127.0.0.1:19034"
NIL = b"\xc0"  # MessagePack nil: the payload of a ping

_NAME_CHARS = frozenset(string.ascii_letters + string.digits + "_-.")


def check_name(value: str, what: str) -> str:
    """``value`` if it is letters, digits, ``_``, ``-`` and ``.`` (a service
    id, a durable subscription's name: no ``~``, so that topics keep their
    shape, §6); :class:`ConfigError` otherwise."""
    if not isinstance(value, str) or not value or not set(value) <= _NAME_CHARS:
        raise ConfigError(f"{what} {value!r}: use letters, digits, `_`, `-` and `.`")
    return value


def now_us() -> int:
    """Microseconds since the Unix epoch (the envelope's ``created_us``)."""
    return time.time_ns() // 1000


def reply_topic(service_id: str) -> str:
    """``@reply~ID~``: the topic a service's results are published on. The
    trailing ``~`` keeps ``@reply~svc-1~`` from matching ``@reply~svc-10~``."""
    return f"@reply~{service_id}~"


def entry_topic(flow: str) -> str:
    """The topic of a flow's usual entry step ``?Flow?Push``:
    ``Flow~~~Flow~Push``."""
    return f"{flow}~~~{flow}~Push"


def pack(value: Any) -> bytes:
    """``value`` as MessagePack (strings as ``str``, bytes as ``bin``)."""
    return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]


def unpack(raw: bytes) -> Any:
    """One MessagePack value; map keys may be of any type (§4)."""
    return msgpack.unpackb(raw, raw=False, strict_map_key=False)


def envelope(kind: str, message_id: str, **fields: Any) -> Dict[str, Any]:
    """An envelope map (§3): ``v``, ``kind``, ``id``, ``created_us``, and
    ``fields`` whose value is not None (a field to leave unset is omitted,
    never sent as nil)."""
    env: Dict[str, Any] = {"v": PROTOCOL_VERSION, "kind": kind, "id": message_id}
    env.update({k: v for k, v in fields.items() if v is not None})
    env.setdefault("created_us", now_us())
    return env


def frames(topic: str, env: Dict[str, Any], payload: bytes) -> List[bytes]:
    """The three frames of an intake message."""
    return [topic.encode(), pack(env), payload]


@dataclass(frozen=True)
class Message:
    """A published message: its topic, its envelope (a dict, read
    leniently: unknown keys are kept, missing ones have their defaults via
    the properties) and its payload, raw and decoded."""

    topic: str
    envelope: Dict[str, Any]
    raw_payload: bytes
    payload: Any = None
    #: Why the payload did not decode (then ``payload`` is None), or None.
    payload_error: Optional[str] = None

    @property
    def kind(self) -> str:
        return str(self.envelope.get("kind", "request"))

    @property
    def id(self) -> str:
        return str(self.envelope.get("id", ""))

    @property
    def service(self) -> str:
        return str(self.envelope.get("service", ""))

    @property
    def flow(self) -> str:
        return str(self.envelope.get("flow", ""))

    @property
    def ok(self) -> bool:
        """True for a success: ``status`` ``"ok"`` (the default). An unknown
        status counts as a failure (§9)."""
        return bool(self.envelope.get("status", "ok") == "ok")

    def error(self) -> Optional[RequestFailed]:
        """The :class:`RequestFailed` of an error result (its subclass for
        the code), or None for a success."""
        return None if self.ok else failure(self.envelope, self.payload)


@dataclass(frozen=True)
class Result(Message):
    """The result of a request (§6): ``payload`` is the flow's output, or,
    when not ``ok``, what the failing step received (§8)."""

    @property
    def step(self) -> int:
        step = self.envelope.get("step", 0)
        return step if isinstance(step, int) else 0

    @property
    def key(self) -> str:
        return str(self.envelope.get("key", ""))

    @property
    def attempt(self) -> int:
        attempt = self.envelope.get("attempt", 0)
        return attempt if isinstance(attempt, int) else 0

    def unwrap(self) -> Any:
        """The payload of a success; raises the :class:`RequestFailed` (its
        subclass for the code) of an error result."""
        err = self.error()
        if err is not None:
            raise err
        return self.payload


@dataclass(frozen=True)
class Step(Message):
    """A step a flow gives to this service (§7c): the requester's ``id``,
    ``service`` (the answer's ``origin``), ``flow``; the step's ``key`` and
    payload. Answer it with ``StepServer.answer`` or ``refuse``."""

    @property
    def origin(self) -> str:
        """The requester's service: with ``id``, what names this step."""
        return self.service

    @property
    def key(self) -> str:
        return str(self.envelope.get("key", ""))


@dataclass(frozen=True)
class Delivery(Message):
    """A message kept for a durable subscription (§7d): ``seq`` its number
    in the subscription, ``original_topic`` the topic it was published on;
    envelope and payload are the published message's own (its ``kind`` is
    that message's: ``"result"``, ``"request"`` for a ``@PUBLISH`` step…)."""

    seq: int = 0
    original_topic: str = ""


@dataclass
class Stats:
    """What a service counted since it connected."""

    #: results delivered to a caller (each id once)
    results: int = 0
    #: results for an id that already had one (a resend's result published
    #: again, or a recovered request's result and the resend's): dropped
    duplicates: int = 0
    #: results for no request of this connection (refusals of answers, say)
    unexpected: int = 0
    #: requests sent again with the same id
    resent: int = 0
    #: published messages that were not [topic, envelope map, payload]
    malformed: int = 0
    #: ids the node acknowledged (``accepted``)
    accepted: int = 0
    #: times it connected to the next node (a standby) because the one in
    #: use did not answer
    moved: int = 0
    extra: Dict[str, int] = field(default_factory=dict)


def decode(raw: List[bytes]) -> Optional[Message]:
    """Published frames as a :class:`Message`, or None when they are not
    ``[topic, envelope map, payload]``."""
    if len(raw) != 3:
        return None
    topic, raw_env, raw_payload = raw
    try:
        env = msgpack.unpackb(raw_env, raw=False)
    except Exception:  # noqa: BLE001 - any decoding failure: not a message
        return None
    if not isinstance(env, dict):
        return None
    payload: Any = None
    note: Optional[str] = None
    if raw_payload:
        try:
            payload = unpack(raw_payload)
        except Exception as e:  # noqa: BLE001
            note = f"the payload does not decode: {e}"
    return Message(topic.decode("utf-8", "replace"), env, raw_payload, payload, note)


def as_result(message: Message) -> Result:
    return Result(message.topic, message.envelope, message.raw_payload, message.payload,
                  message.payload_error)


def as_step(message: Message) -> Step:
    return Step(message.topic, message.envelope, message.raw_payload, message.payload,
                message.payload_error)


def error_map(code: int, name: str, message: str) -> Dict[str, Any]:
    """An envelope's ``error`` map (§8)."""
    return {"code": int(code), "name": name, "message": message}
