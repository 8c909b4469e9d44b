"""A Python client for zmanager nodes, over pyzmq and msgpack only.

A **service** pushes requests into a node's flows and receives their
results on its own reply topic, as docs/protocol.md describes:

- :class:`Service` (this module): the synchronous API, with blocking calls
  and ``concurrent.futures`` futures;
- :class:`zmanager.aio.Service`: the same API for asyncio;
- :class:`~zmanager.keys.CurveKeys`: CURVE keys for a node with ``[security]``;
- :mod:`zmanager.errors`: every exception, under :class:`ZmanagerError`;
  an error result raises the subclass of :class:`RequestFailed` for its
  code;
- :mod:`zmanager.protocol`: envelopes, frames and topics, without sockets.

::

    import zmanager

    with zmanager.Service.connect("tcp://127.0.0.1:19030", "tcp://127.0.0.1:19034") as service:
        result = service.request("Greeting", {"name": "  ada "})
        print(result.payload)   # {'greeting': 'HELLO, ADA!'}

Requests are delivered at least once: see :mod:`zmanager.aio` for what a
resend with the same id does, and the package's README.
"""

from .client import (
    DurableSubscription,
    Heartbeat,
    Service,
    StepServer,
    Submission,
    Subscription,
)
from .errors import (
    ActionFailed,
    ActionPanicked,
    AsyncTimeout,
    BadRequest,
    ClosedError,
    ConfigError,
    CurveHandshakeError,
    DeadLettered,
    ErrorCode,
    Forbidden,
    HandshakeError,
    KeyFileError,
    MalformedMessage,
    NoMapping,
    NotAnEntry,
    NotSupported,
    Overloaded,
    RequestFailed,
    ResultTimeout,
    TooLarge,
    UnknownAction,
    UnknownAsync,
    UnknownFlow,
    UnknownService,
    UnknownStep,
    UnsupportedVersion,
    WrongService,
    ZmanagerError,
)
from .keys import CurveKeys
from .protocol import (
    DEFAULT_INTAKE,
    DEFAULT_PUBLISH,
    PROTOCOL_VERSION,
    Delivery,
    Message,
    Result,
    Stats,
    Step,
)

__version__ = "0.1.0"

__all__ = [
    "Service",
    "Submission",
    "Subscription",
    "StepServer",
    "DurableSubscription",
    "Heartbeat",
    "CurveKeys",
    "Message",
    "Result",
    "Step",
    "Delivery",
    "Stats",
    "DEFAULT_INTAKE",
    "DEFAULT_PUBLISH",
    "PROTOCOL_VERSION",
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
]
