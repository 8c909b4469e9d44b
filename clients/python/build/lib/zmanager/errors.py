"""The exceptions of the package: every one is a :class:`ZmanagerError`.

::

    ZmanagerError
    ├── ConfigError            an option the client cannot use (before connecting)
    │   └── KeyFileError       a CURVE key or key file it cannot use
    ├── HandshakeError         no ping came back from the node in time
    │   └── CurveHandshakeError   ... and the CURVE handshake was seen failing
    ├── ClosedError            the service was closed
    ├── ResultTimeout          no result (or acknowledgement) within the wait asked for
    └── RequestFailed          the node answered with an error result (its code below)
        ├── MalformedMessage (1), UnsupportedVersion (2), UnknownFlow (3),
        ├── UnknownStep (4), NoMapping (5), BadRequest (6), ActionFailed (7),
        ├── ActionPanicked (8), UnknownAction (9), NotSupported (11),
        ├── Overloaded (12), DeadLettered (13), UnknownAsync (14),
        ├── AsyncTimeout (15), UnknownService (16), TooLarge (17),
        └── NotAnEntry (18), WrongService (19), Forbidden (20)

Error codes are docs/protocol.md §8: stable numbers, only ever added. A
code this package does not know raises :class:`RequestFailed` itself, with
the code as the node sent it.
"""

from __future__ import annotations

import enum
from typing import Any, Dict, Optional, Type

__all__ = [
    "ErrorCode",
    "ZmanagerError",
    "ConfigError",
    "KeyFileError",
    "HandshakeError",
    "CurveHandshakeError",
    "ClosedError",
    "ResultTimeout",
    "RequestFailed",
    "MalformedMessage",
    "UnsupportedVersion",
    "UnknownFlow",
    "UnknownStep",
    "NoMapping",
    "BadRequest",
    "ActionFailed",
    "ActionPanicked",
    "UnknownAction",
    "NotSupported",
    "Overloaded",
    "DeadLettered",
    "UnknownAsync",
    "AsyncTimeout",
    "UnknownService",
    "TooLarge",
    "NotAnEntry",
    "WrongService",
    "Forbidden",
    "failure",
]


class ErrorCode(enum.IntEnum):
    """The error codes of docs/protocol.md §8 (the envelope's ``error.code``)."""

    MALFORMED_MESSAGE = 1
    UNSUPPORTED_VERSION = 2
    UNKNOWN_FLOW = 3
    UNKNOWN_STEP = 4
    NO_MAPPING = 5
    BAD_REQUEST = 6
    ACTION_FAILED = 7
    ACTION_PANICKED = 8
    UNKNOWN_ACTION = 9
    DUPLICATE_ID = 10  # reserved: no longer sent
    NOT_SUPPORTED = 11
    OVERLOADED = 12
    DEAD_LETTERED = 13
    UNKNOWN_ASYNC = 14
    ASYNC_TIMEOUT = 15
    UNKNOWN_SERVICE = 16
    TOO_LARGE = 17
    NOT_AN_ENTRY = 18
    WRONG_SERVICE = 19
    FORBIDDEN = 20


class ZmanagerError(Exception):
    """The base of every exception this package raises."""


class ConfigError(ZmanagerError, ValueError):
    """An option the client cannot use: a service id with a character that
    would break its reply topic, a bad endpoint, a bad argument. Raised
    before anything is sent."""


class KeyFileError(ConfigError):
    """A CURVE key or key file that cannot be used: missing, unreadable, not
    the ``.key`` file ``zmanager keys new`` writes, a key that is not 40 Z85
    characters, a public key that is not the secret key's."""


class HandshakeError(ZmanagerError, ConnectionError):
    """No ping came back from the node within the handshake timeout
    (docs/protocol.md §6): the node is not running, the endpoints are wrong,
    or — with keys — the node refused them."""


class CurveHandshakeError(HandshakeError):
    """No ping came back, and the socket monitor saw the CURVE handshake
    fail (or every connection close before it succeeded): the server key is
    not the node's, or the node does not list this service's public key."""


class ClosedError(ZmanagerError):
    """The service (or the subscription) was closed."""


class ResultTimeout(ZmanagerError, TimeoutError):
    """What was waited for (a result, an acknowledgement, a message) did not
    come within the time given. The request is not cancelled: the node may
    still run it, and a later resend with the same id gets its result."""


class RequestFailed(ZmanagerError):
    """The node answered with an error result (``status`` ``"error"``).

    Attributes:
        code: the error code (:class:`ErrorCode` when known, else the int sent).
        name: the code's snake_case name, as the node sent it.
        message: the node's explanation (for people: do not parse it).
        key: the action key of the step that failed ("" when none).
        step: the index of that step.
        envelope: the whole result envelope.
        payload: the result's payload, decoded (what the failing step received).
    """

    code_value: Optional[int] = None

    def __init__(
        self,
        code: int,
        name: str,
        message: str,
        *,
        key: str = "",
        step: int = 0,
        envelope: Optional[Dict[str, Any]] = None,
        payload: Any = None,
    ) -> None:
        try:
            self.code: int = ErrorCode(code)
        except ValueError:
            self.code = code
        self.name = name
        self.message = message
        self.key = key
        self.step = step
        self.envelope: Dict[str, Any] = envelope or {}
        self.payload = payload
        where = f" at `{key}`" if key else ""
        super().__init__(f"{int(code)} ({name}){where}: {message}")


class MalformedMessage(RequestFailed):
    """Code 1: the envelope did not decode."""


class UnsupportedVersion(RequestFailed):
    """Code 2: the node does not speak this protocol version."""


class UnknownFlow(RequestFailed):
    """Code 3: the flow is empty or is not one of the node's."""


class UnknownStep(RequestFailed):
    """Code 4: the request's ``key`` matches no step of its flow."""


class NoMapping(RequestFailed):
    """Code 5: a step no mapping resolves."""


class BadRequest(RequestFailed):
    """Code 6: a payload that is not MessagePack, or that the action
    refused; a take, subscribe or ack that does not fit."""


class ActionFailed(RequestFailed):
    """Code 7: the action ran and returned an error (or a service refused
    its step)."""


class ActionPanicked(RequestFailed):
    """Code 8: the action panicked."""


class UnknownAction(RequestFailed):
    """Code 9: the component has no such action."""


class NotSupported(RequestFailed):
    """Code 11: something this node does not do (a take for a service no
    step is given to, say)."""


class Overloaded(RequestFailed):
    """Code 12: the node cannot take it now; send it again later."""


class DeadLettered(RequestFailed):
    """Code 13: delivered ``max_attempts`` times without a result; it is in
    the node's dead-letter store (``zmanager dlq show N``)."""


class UnknownAsync(RequestFailed):
    """Code 14: an answer for no suspended flow (answered already, timed
    out, never suspended)."""


class AsyncTimeout(RequestFailed):
    """Code 15: the flow got no answer at its ``@ASYNC`` step in time."""


class UnknownService(RequestFailed):
    """Code 16: service management names a service that is not registered."""


class TooLarge(RequestFailed):
    """Code 17: envelope and payload are larger than ``max_message_bytes``."""


class NotAnEntry(RequestFailed):
    """Code 18: the request's ``key`` names a step that is not an entry point."""


class WrongService(RequestFailed):
    """Code 19: with keys, the message's ``service`` or ``reply_to`` is not
    the key's."""


class Forbidden(RequestFailed):
    """Code 20: with keys, the service may not do this (push into this flow,
    answer this step, …); or an answer to a step given to another service."""


_BY_CODE: Dict[int, Type[RequestFailed]] = {
    1: MalformedMessage,
    2: UnsupportedVersion,
    3: UnknownFlow,
    4: UnknownStep,
    5: NoMapping,
    6: BadRequest,
    7: ActionFailed,
    8: ActionPanicked,
    9: UnknownAction,
    11: NotSupported,
    12: Overloaded,
    13: DeadLettered,
    14: UnknownAsync,
    15: AsyncTimeout,
    16: UnknownService,
    17: TooLarge,
    18: NotAnEntry,
    19: WrongService,
    20: Forbidden,
}


def failure(envelope: Dict[str, Any], payload: Any = None) -> RequestFailed:
    """The exception for an error result's envelope: the subclass of
    :class:`RequestFailed` for its code, or :class:`RequestFailed` itself
    for a code this package does not know (a newer node's)."""
    error = envelope.get("error")
    if not isinstance(error, dict):
        # docs/protocol.md §9: an unknown status (or an error without its
        # map) is a failure all the same.
        error = {"code": 0, "name": "unknown", "message": f"status {envelope.get('status')!r}"}
    code = error.get("code")
    code = code if isinstance(code, int) and not isinstance(code, bool) else 0
    cls = _BY_CODE.get(code, RequestFailed)
    return cls(
        code,
        str(error.get("name", "")),
        str(error.get("message", "")),
        key=str(envelope.get("key", "")),
        step=envelope.get("step", 0) if isinstance(envelope.get("step"), int) else 0,
        envelope=envelope,
        payload=payload,
    )
