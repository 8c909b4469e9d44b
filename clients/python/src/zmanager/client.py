"""The synchronous API: :class:`Service`, with blocking calls and
``concurrent.futures`` futures.

It is the asyncio API (:mod:`zmanager.aio`) run on a thread of its own:
that thread owns every socket (no socket is shared between threads), and
the methods here hand it work and wait. Any thread may call them::

    import zmanager

    with zmanager.Service.connect("tcp://127.0.0.1:19030", "tcp://127.0.0.1:19034") as service:
        print(service.request("Greeting", {"name": "ada"}).payload)

        pending = [service.submit("Greeting", {"name": f"ada {n}"}) for n in range(10)]
        for submission in pending:
            print(submission.finished(timeout=30).payload)

The at-least-once semantics are those of :mod:`zmanager.aio`: a request is
sent again with the same id until its result comes, the node runs an id
once within its ``dedupe_window`` and publishes the first result again for
a resend, and each submission gets its result once (a result published
again is counted in :attr:`Service.stats`, ``duplicates``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from typing import Any, Awaitable, Dict, Iterator, List, Optional, Sequence, Tuple, TypeVar, Union

from . import aio
from .errors import ClosedError
from .keys import CurveKeys
from .protocol import DEFAULT_INTAKE, DEFAULT_PUBLISH, Delivery, Message, Result, Stats, Step

__all__ = ["Service", "Submission", "Subscription", "StepServer", "DurableSubscription",
           "Heartbeat"]

T = TypeVar("T")


class _Loop:
    """An event loop on a daemon thread; :meth:`run` runs a coroutine on it
    and waits for its end."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        started = threading.Event()

        def main() -> None:
            asyncio.set_event_loop(self.loop)
            self.loop.call_soon(started.set)
            self.loop.run_forever()

        self.thread = threading.Thread(target=main, name="zmanager-io", daemon=True)
        self.thread.start()
        started.wait()

    def spawn(self, coro: Awaitable[T]) -> "concurrent.futures.Future[T]":
        if self.loop.is_closed():
            close = getattr(coro, "close", None)
            if close is not None:
                close()  # never to run: no "never awaited" warning
            raise ClosedError("the service is closed")
        return asyncio.run_coroutine_threadsafe(coro, self.loop)  # type: ignore[arg-type]

    def run(self, coro: Awaitable[T]) -> T:
        if threading.current_thread() is self.thread:
            raise RuntimeError("a blocking zmanager call from the service's own I/O thread")
        return self.spawn(coro).result()

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        if not self.thread.is_alive():
            self.loop.close()


class Submission:
    """A request pushed into a flow (:meth:`Service.submit`): its
    :attr:`id`, :meth:`accepted` and :meth:`finished` to block on, and the
    same as futures: :attr:`accepted_future` (resolves with None) and
    :attr:`future` (resolves with the :class:`~zmanager.protocol.Result` of a
    success, or raises the :class:`~zmanager.errors.RequestFailed` of an
    error result). It is sent again with the same id until its result comes
    (see :mod:`zmanager.aio`)."""

    def __init__(self, loop: _Loop, inner: aio.Submission) -> None:
        self._loop = loop
        self._inner = inner
        self.id = inner.id
        self.flow = inner.flow
        self.future: "concurrent.futures.Future[Result]" = loop.spawn(inner.finished())
        self.accepted_future: "concurrent.futures.Future[None]" = loop.spawn(inner.accepted())

    @property
    def resent(self) -> int:
        """How many times it was sent again."""
        return self._inner.resent

    @property
    def done(self) -> bool:
        return self.future.done()

    def accepted(self, timeout: Optional[float] = None) -> None:
        """Blocks until the node has taken the request (with its journal on,
        recorded it on disk: it survives a crash of the node), or its result
        came. :class:`~zmanager.errors.ResultTimeout` after ``timeout`` s."""
        self._loop.run(self._inner.accepted(timeout))

    def finished(self, timeout: Optional[float] = None) -> Result:
        """Blocks for the result of a success; raises the
        :class:`~zmanager.errors.RequestFailed` subclass of an error's code
        (:class:`~zmanager.errors.UnknownFlow` for 3, …), or
        :class:`~zmanager.errors.ResultTimeout` after ``timeout`` s (the
        request is still resent: call :meth:`cancel` to stop)."""
        return self._loop.run(self._inner.finished(timeout))

    def outcome(self, timeout: Optional[float] = None) -> Result:
        """The result, success or error (``result.ok``, ``result.error()``)."""
        return self._loop.run(self._inner.outcome(timeout))

    def cancel(self) -> None:
        """Stops resending and forgets it; the node may still run it."""
        self._loop.spawn(_call(self._inner.cancel)).result()


async def _call(fn: Any, *args: Any) -> Any:
    return fn(*args)


class Subscription:
    """Messages on topic prefixes (:meth:`Service.subscribe`): :meth:`next`,
    or iterate; :meth:`close` when done."""

    def __init__(self, loop: _Loop, inner: aio.Subscription) -> None:
        self._loop = loop
        self._inner = inner
        self.prefixes = inner.prefixes

    def next(self, timeout: Optional[float] = None) -> Message:
        """The next message; :class:`~zmanager.errors.ResultTimeout` after
        ``timeout`` seconds."""
        return self._loop.run(self._inner.next(timeout))

    def __iter__(self) -> Iterator[Message]:
        while True:
            try:
                yield self.next()
            except ClosedError:
                return

    def close(self) -> None:
        self._loop.run(self._inner.close())

    def __enter__(self) -> "Subscription":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class StepServer:
    """This process as an instance of the service the node gives steps to
    (:meth:`Service.serve_steps`; see :class:`zmanager.aio.StepServer`)."""

    def __init__(self, loop: _Loop, inner: aio.StepServer) -> None:
        self._loop = loop
        self._inner = inner
        self.topic = inner.topic
        self.credits = inner.credits

    @property
    def given_again(self) -> int:
        """Steps the node gave again that were not handed over twice."""
        return self._inner.given_again

    def next(self, timeout: Optional[float] = None) -> Step:
        """The next step; raises the node's refusal of the take
        (:class:`~zmanager.errors.NotSupported`, code 11)."""
        return self._loop.run(self._inner.next(timeout))

    def __iter__(self) -> Iterator[Step]:
        while True:
            try:
                yield self.next()
            except ClosedError:
                return

    def answer(self, step: Step, payload: Any = None, *, raw: bool = False) -> None:
        """Answers ``step``: its flow goes on with ``payload``."""
        self._loop.run(self._inner.answer(step, payload, raw=raw))

    def refuse(self, step: Step, message: str, *, code: int = 7,
               name: str = "action_failed") -> None:
        """Refuses ``step``: its flow ends with this error at the step."""
        self._loop.run(self._inner.refuse(step, message, code=code, name=name))

    def stop(self) -> None:
        """A take of 0, then closes: the node gives the steps held to others."""
        self._loop.run(self._inner.stop())

    def __enter__(self) -> "StepServer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class DurableSubscription:
    """A durable subscription (:meth:`Service.subscribe_durable`; see
    :class:`zmanager.aio.DurableSubscription`): each delivery once, in
    order, within a process; at least once across processes."""

    def __init__(self, loop: _Loop, inner: aio.DurableSubscription) -> None:
        self._loop = loop
        self._inner = inner
        self.name = inner.name
        self.topic = inner.topic
        self.prefixes = inner.prefixes

    @property
    def last(self) -> int:
        """The last sequence number handed over."""
        return self._inner.last

    @property
    def acked(self) -> int:
        """The last sequence number acknowledged."""
        return self._inner.acked

    @property
    def made(self) -> Any:
        """When the node made the subscription (``accepted_us``)."""
        return self._inner.made

    @property
    def made_afresh(self) -> int:
        """How many times the node made it afresh (it restarted)."""
        return self._inner.made_afresh

    def next(self, timeout: Optional[float] = None) -> Delivery:
        """The next delivery, in order."""
        return self._loop.run(self._inner.next(timeout))

    def __iter__(self) -> Iterator[Delivery]:
        while True:
            try:
                yield self.next()
            except ClosedError:
                return

    def ack(self, upto: Union[int, Delivery]) -> None:
        """Acknowledges every delivery up to ``upto``."""
        self._loop.run(self._inner.ack(upto))

    def delete(self) -> None:
        """Deletes the subscription on the node, and closes this one."""
        self._loop.run(self._inner.delete())

    def close(self, timeout: float = 5.0) -> None:
        """Makes sure the last ack reached the node, then closes."""
        self._loop.run(self._inner.close(timeout))

    def __enter__(self) -> "DurableSubscription":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class Heartbeat:
    """Heartbeats in the background (:meth:`Service.heartbeat_every`)."""

    def __init__(self, loop: _Loop, task: "asyncio.Task[None]") -> None:
        self._loop = loop
        self._task = task

    def stop(self) -> None:
        self._loop.loop.call_soon_threadsafe(self._task.cancel)


class Service:
    """A service connected to a node; see :meth:`connect`. The methods
    mirror :class:`zmanager.aio.Service`'s, blocking. Close it with
    :meth:`close` or a ``with`` block."""

    def __init__(self, loop: _Loop, inner: aio.Service) -> None:
        self._loop = loop
        self._inner = inner

    @classmethod
    def connect(
        cls,
        intake: str = DEFAULT_INTAKE,
        publish: str = DEFAULT_PUBLISH,
        *,
        name: str = "py",
        service_id: Optional[str] = None,
        keys: Optional[CurveKeys] = None,
        handshake_timeout: float = 10.0,
        retry_after: float = 5.0,
        ack_after: float = 1.0,
        max_in_flight: int = 1024,
        standbys: Sequence[Tuple[str, str]] = (),
    ) -> "Service":
        """Connects and does the ping handshake; the arguments and errors
        are :meth:`zmanager.aio.Service.connect`'s
        (:class:`~zmanager.errors.HandshakeError` when no ping comes back,
        :class:`~zmanager.errors.CurveHandshakeError` when, with keys, the
        CURVE handshake was seen failing)."""
        loop = _Loop()
        try:
            inner = loop.run(aio.Service.connect(
                intake, publish, name=name, service_id=service_id, keys=keys,
                handshake_timeout=handshake_timeout, retry_after=retry_after,
                ack_after=ack_after, max_in_flight=max_in_flight, standbys=standbys,
            ))
        except BaseException:
            loop.stop()
            raise
        return cls(loop, inner)

    @property
    def id(self) -> str:
        """The service id (``service`` of its messages)."""
        return self._inner.id

    @property
    def intake(self) -> str:
        """The intake endpoint of the node in use (a standby's, once the
        service moved to it)."""
        return self._inner.intake

    @property
    def session(self) -> str:
        """This connection's prefix of message ids."""
        return self._inner.session

    @property
    def reply_to(self) -> str:
        """The topic its results are published on, ``@reply~ID~``."""
        return self._inner.reply_to

    @property
    def stats(self) -> Stats:
        """What it counted: results, duplicates, resends, unexpected…"""
        return self._inner.stats

    @property
    def unexpected(self) -> List[Result]:
        """The last results for no request of this connection (an answer's
        refusal, say)."""
        return list(self._inner.unexpected)

    def __enter__(self) -> "Service":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def new_id(self) -> str:
        """A new message id of this connection."""
        return self._inner.new_id()

    def ping(self, timeout: float = 1.0) -> None:
        """A ping's round trip (:class:`~zmanager.errors.HandshakeError`
        after ``timeout``)."""
        self._loop.run(self._inner.ping(timeout))

    def submit(self, flow: str, payload: Any = None, *, id: Optional[str] = None,
               raw: bool = False, key: Optional[str] = None, order_key: Optional[str] = None,
               traceparent: Optional[str] = None,
               tracestate: Optional[str] = None) -> Submission:
        """Pushes a request and returns at once (see
        :meth:`zmanager.aio.Service.submit`; submit again with the same
        ``id`` to resend one)."""
        inner = self._loop.run(self._inner.submit(
            flow, payload, id=id, raw=raw, key=key, order_key=order_key,
            traceparent=traceparent, tracestate=tracestate,
        ))
        return Submission(self._loop, inner)

    def request(self, flow: str, payload: Any = None, *, timeout: Optional[float] = None,
                id: Optional[str] = None, raw: bool = False, key: Optional[str] = None,
                order_key: Optional[str] = None) -> Result:
        """Pushes a request and blocks for the result of a success; raises
        the :class:`~zmanager.errors.RequestFailed` subclass of an error's
        code, :class:`~zmanager.errors.ResultTimeout` after ``timeout``."""
        return self._loop.run(self._inner.request(flow, payload, timeout=timeout, id=id,
                                                  raw=raw, key=key, order_key=order_key))

    def subscribe(self, prefixes: Sequence[str], *, maxsize: int = 10_000) -> Subscription:
        """Subscribes to topic prefixes; returns once live."""
        return Subscription(self._loop, self._loop.run(
            self._inner.subscribe(prefixes, maxsize=maxsize)))

    def answer(self, message: Message, payload: Any = None, *, raw: bool = False) -> None:
        """Answers a flow suspended at an ``@ASYNC`` step (§7a)."""
        self._loop.run(self._inner.answer(message, payload, raw=raw))

    def answer_error(self, message: Message, error_message: str, *, code: int = 7,
                     name: str = "action_failed") -> None:
        """Answers a suspended flow with an error: it ends with it."""
        self._loop.run(self._inner.answer_error(message, error_message, code=code, name=name))

    def register(self, topics: Sequence[str] = (), flows: Sequence[str] = (), *,
                 timeout: float = 10.0) -> Dict[str, Any]:
        """Registers with the node's service management; returns the entry."""
        return self._loop.run(self._inner.register(topics, flows, timeout=timeout))

    def heartbeat(self, *, timeout: float = 10.0) -> Dict[str, Any]:
        """One heartbeat; :class:`~zmanager.errors.UnknownService` when not
        registered."""
        return self._loop.run(self._inner.heartbeat(timeout=timeout))

    def services(self, *, timeout: float = 10.0) -> List[Dict[str, Any]]:
        """Every registered service's entry."""
        return self._loop.run(self._inner.services(timeout=timeout))

    def heartbeat_every(self, every: float, topics: Sequence[str] = (),
                        flows: Sequence[str] = ()) -> Heartbeat:
        """Heartbeats every ``every`` seconds in the background, registering
        again when the node forgot this service; ``.stop()`` it."""
        task = self._loop.run(_call(self._inner.heartbeat_every, every, topics, flows))
        return Heartbeat(self._loop, task)

    def serve_steps(self, credits: int = 16) -> StepServer:
        """Takes the steps given to this service (§7c)."""
        return StepServer(self._loop, self._loop.run(self._inner.serve_steps(credits)))

    def subscribe_durable(self, name: str, prefixes: Sequence[str], *, window: int = 100,
                          auto_ack: bool = False,
                          timeout: Optional[float] = None) -> DurableSubscription:
        """Subscribes under a durable name (§7d); returns once accepted."""
        return DurableSubscription(self._loop, self._loop.run(self._inner.subscribe_durable(
            name, prefixes, window=window, auto_ack=auto_ack, timeout=timeout)))

    def close(self, *, linger: bool = True) -> None:
        """Closes everything (see :meth:`zmanager.aio.Service.close`) and
        stops the I/O thread."""
        if self._loop.loop.is_closed():
            return
        try:
            self._loop.run(self._inner.close(linger=linger))
        finally:
            self._loop.stop()
