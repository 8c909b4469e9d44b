"""The asyncio API: :class:`Service`, over pyzmq's ``zmq.asyncio``.

Everything runs on the event loop that called :meth:`Service.connect`: one
task reads each SUB socket, and every send goes through the service's one
PUSH socket (pyzmq's asyncio sockets queue concurrent sends; a send waits
while the socket is at its high-water mark, which is the node's
backpressure, docs/protocol.md §1)::

    import asyncio, zmanager.aio

    async def main() -> None:
        async with await zmanager.aio.Service.connect(
            "tcp://127.0.0.1:19030", "tcp://127.0.0.1:19034", name="quickstart"
        ) as service:
            result = await service.request("Greeting", {"name": "ada"})
            print(result.payload)          # {'greeting': 'HELLO, ADA!'}

    asyncio.run(main())

:mod:`zmanager` (the package itself) has the same API, synchronous, with
``concurrent.futures`` futures; it runs this one on a thread of its own.

At least once
-------------
A request has two ends, as Dynflow's Accepted/Finished (§7b):
:meth:`Service.submit` returns a :class:`Submission` at once; its
:meth:`~Submission.accepted` resolves when the node has taken the request
(with its journal on: recorded it on disk, so it survives a crash of the
node), its :meth:`~Submission.finished` when the result comes.
Until it is accepted, the request is sent again with the **same id** every
``ack_after`` seconds; once accepted, again every ``retry_after`` seconds
while no result comes (a result published while this service was
disconnected, or in the node's queues when it died, is not kept for it).
Before each resend it pings the node, so that a node that restarted has this
service's subscription again before the resend's result is published.

Resending is safe because the node runs an id once (docs/reliability.md): a
copy of a request in flight is absorbed; one whose result finished within
the node's ``dedupe_window`` (1 minute, and fewer than ``dedupe_capacity``
(10,000) results and ``dedupe_max_mb`` of results since — at high rates
the window is that much shorter) gets **the same result published again**,
not a second run. So a result may be *published* more than once for a
resent id (the first and the resend's both reach the wire, or recovery
after a restart publishes it and the resend's copy follows). This client
delivers one result per id to its caller and counts the others in
:attr:`Service.stats` (``duplicates``). A resend after the dedupe window
runs the request again (at least once): an action must tolerate that
(docs/reliability.md, "Making an action idempotent").
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import secrets
from typing import (
    Any,
    AsyncIterator,
    Callable,
    Deque,
    Dict,
    Iterable,
    List,
    Optional,
    Sequence,
    Set,
    Tuple,
    Union,
)

import zmq
import zmq.asyncio

from . import protocol
from .errors import (
    ClosedError,
    ConfigError,
    CurveHandshakeError,
    HandshakeError,
    RequestFailed,
    ResultTimeout,
    UnknownService,
    failure,
)
from .keys import CurveKeys
from .protocol import NIL, Delivery, Message, Result, Stats, Step

__all__ = [
    "Service",
    "Submission",
    "Subscription",
    "StepServer",
    "DurableSubscription",
    "PING_EVERY",
    "TAKE_EVERY",
    "RESUBSCRIBE_IDLE",
]

#: Seconds between two pings of a handshake (§6).
PING_EVERY = 0.1
#: Seconds between two takes of a step server: its heartbeat (§7c), well
#: inside the node's ``service_liveness`` (10 s).
TAKE_EVERY = 1.0
#: Seconds of silence on a durable subscription's topic after which the
#: subscribe is sent again (§7d): a node that restarted lost it.
RESUBSCRIBE_IDLE = 2.0
#: Results remembered after they were delivered, to tell a duplicate from
#: an unexpected result.
_REMEMBERED = 10_000
#: Answers a step server remembers, to answer a step given again alike.
_ANSWERS_REMEMBERED = 10_000
_LINGER_MS = 2000

# Built-in service-management flows the Subject answers (docs/decorators.md).
REGISTER = "ServiceManagement_Register"
HEARTBEAT = "ServiceManagement_Heartbeat"
LIST = "ServiceManagement_List"

Payload = Any


def _encode(payload: Payload, raw: bool) -> bytes:
    if raw:
        if not isinstance(payload, (bytes, bytearray, memoryview)):
            raise ConfigError("raw=True takes the payload as MessagePack bytes")
        return bytes(payload)
    try:
        return protocol.pack(payload)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"the payload does not encode as MessagePack: {e}") from None


async def _wait(fut: "asyncio.Future[Any]", timeout: Optional[float], what: str) -> Any:
    """Awaits ``fut`` (shielded: a timeout leaves it running) for at most
    ``timeout`` seconds; :class:`ResultTimeout` naming ``what`` after."""
    if timeout is None:
        return await asyncio.shield(fut)
    try:
        return await asyncio.wait_for(asyncio.shield(fut), timeout)
    except asyncio.TimeoutError:
        raise ResultTimeout(f"{what}: nothing within {timeout:g} s") from None


class Submission:
    """A request pushed into a flow: its :attr:`id`, and two ends to wait
    for, :meth:`accepted` and :meth:`finished`. The service sends it again
    with the same id until it has a result (see the module's docs), or until
    :meth:`cancel`."""

    def __init__(self, service: "Service", message_id: str, flow: str, frames: List[bytes]) -> None:
        loop = asyncio.get_running_loop()
        self.id = message_id
        self.flow = flow
        self._service = service
        self._frames = frames
        self._accepted: "asyncio.Future[None]" = loop.create_future()
        self._result: "asyncio.Future[Result]" = loop.create_future()
        self._task: Optional["asyncio.Task[None]"] = None
        #: how many times it was sent again
        self.resent = 0

    @property
    def done(self) -> bool:
        """True once a result came (or it was cancelled or closed)."""
        return self._result.done()

    async def accepted(self, timeout: Optional[float] = None) -> None:
        """Returns once the node has taken the request (with its journal on,
        recorded it on disk) — or its result came, which implies it.
        :class:`ResultTimeout` after ``timeout`` seconds (the request is
        still resent); :class:`ClosedError` if the service closed."""
        either: Set["asyncio.Future[Any]"] = {self._accepted, self._result}
        waiting = asyncio.ensure_future(
            asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        )
        try:
            await _wait(waiting, timeout, f"request {self.id!r} accepted")
        finally:
            waiting.cancel()
        if self._accepted.done():
            self._accepted.result()  # raises ClosedError when closed
        else:
            self._result.result()

    async def outcome(self, timeout: Optional[float] = None) -> Result:
        """The result, success or error (see :meth:`Result.unwrap`)."""
        result: Result = await _wait(self._result, timeout, f"request {self.id!r}")
        return result

    async def finished(self, timeout: Optional[float] = None) -> Result:
        """The result of a success; raises the :class:`RequestFailed`
        subclass of an error result's code (``UnknownFlow`` for 3, …), with
        the code, name, message, step and payload of the envelope."""
        result = await self.outcome(timeout)
        err = result.error()
        if err is not None:
            raise err
        return result

    def cancel(self) -> None:
        """Stops resending and forgets the request (a result that comes
        after is counted as a duplicate). The node may still run it."""
        self._service._forget(self, ClosedError(f"request {self.id!r} cancelled"))

    # -- the service's side ---------------------------------------------

    def _on_accepted(self) -> None:
        if not self._accepted.done():
            self._accepted.set_result(None)

    def _on_result(self, result: Result) -> None:
        if not self._accepted.done():
            self._accepted.set_result(None)  # a result implies acceptance
        if not self._result.done():
            self._result.set_result(result)

    def _fail(self, error: BaseException) -> None:
        for fut in (self._accepted, self._result):
            if not fut.done():
                fut.set_exception(error)
                fut.exception()  # retrieved: no "never retrieved" warning

    async def _drive(self, ack_after: float, retry_after: float) -> None:
        """Sends it, then again with the same id until a result comes."""
        service = self._service
        await service._send(self._frames)
        while not self._result.done():
            awaited: Set["asyncio.Future[Any]"]
            if self._accepted.done():
                # Accepted: the node's now; wait retry_after for the result.
                awaited = {self._result}
                patience = retry_after
            else:
                awaited = {self._accepted, self._result}
                patience = ack_after
            done, _ = await asyncio.wait(awaited, timeout=patience,
                                         return_when=asyncio.FIRST_COMPLETED)
            if self._result.done():
                return
            if done:
                continue  # accepted in time: now the result's patience
            # Nothing in time. Make sure the node hears us (a node that
            # restarted has our subscription again once a ping comes back),
            # then the same id again: the node runs it once. A node that
            # does not answer, with standbys: the next one.
            seen = service._generation
            try:
                await service.ping(timeout=1.0)
            except HandshakeError:
                if await service._move_on(seen):
                    try:
                        await service.ping(timeout=service.handshake_timeout)
                    except HandshakeError:
                        pass
            if self._result.done():
                return
            self.resent += 1
            service.stats.resent += 1
            await service._send(self._frames)


class Subscription:
    """Messages published on topic prefixes (``Announce~PUBLISH~``,
    ``Greeting~~~~done``…), on a SUB socket of its own. Live when
    :meth:`Service.subscribe` returns. Iterate (``async for``) or call
    :meth:`next`; :meth:`close` when done. PUB/SUB keeps nothing for a
    subscriber that is away: use :meth:`Service.subscribe_durable` for that."""

    def __init__(self, service: "Service", prefixes: Sequence[str], socket: zmq.asyncio.Socket,
                 probe: str, maxsize: int) -> None:
        self.prefixes = list(prefixes)
        self._service = service
        self._socket = socket
        self._probe = probe
        self._queue: "asyncio.Queue[Union[Message, BaseException]]" = asyncio.Queue(maxsize)
        self._task: Optional["asyncio.Task[None]"] = None
        self._closed = False

    def _wanted(self, message: Message) -> bool:
        if message.topic == self._probe and message.kind == "ping":
            return False  # a late echo of the handshake
        return any(message.topic.startswith(p) for p in self.prefixes)

    async def _read(self) -> None:
        try:
            while True:
                message = protocol.decode(await self._socket.recv_multipart())
                if message is None:
                    self._service.stats.malformed += 1
                elif self._wanted(message):
                    await self._queue.put(message)
        except (asyncio.CancelledError, zmq.ZMQError):
            pass

    async def next(self, timeout: Optional[float] = None) -> Message:
        """The next message (:class:`ResultTimeout` after ``timeout`` s)."""
        if self._closed and self._queue.empty():
            raise ClosedError("the subscription is closed")
        try:
            item = await asyncio.wait_for(self._queue.get(), timeout)
        except asyncio.TimeoutError:
            raise ResultTimeout(f"no message on {self.prefixes} within {timeout:g} s") from None
        if isinstance(item, BaseException):
            raise item
        return item

    def __aiter__(self) -> AsyncIterator[Message]:
        return self

    async def __anext__(self) -> Message:
        try:
            return await self.next()
        except ClosedError:
            raise StopAsyncIteration from None

    async def close(self) -> None:
        """Closes its socket; what is queued can still be read."""
        if self._closed:
            return
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._socket.close(linger=0)
        self._service._children.discard(self)

    async def _follow(self) -> None:
        """Subscribes to the same prefixes on the node the service moved to
        (its standby); what that node published before is not received."""
        if self._closed:
            return
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._socket.close(linger=0)
        self._socket = self._service._sub_socket(self.prefixes)
        self._task = asyncio.ensure_future(self._read())


class StepServer:
    """This process as one instance of the service the node gives steps to
    (docs/protocol.md §7c, docs/service-steps.md): a flow's step mapped
    under ``[services]`` to this service's id waits until an instance
    answers it.

    It takes steps on a topic of its own, ``@reply~ID~steps-HEX~``, and
    sends a ``take`` (its credits: how many steps it holds at once) every
    :data:`TAKE_EVERY` second, which is also its heartbeat. :meth:`next`
    gives the next step; :meth:`answer` or :meth:`refuse` answers it (the
    answer is the acknowledgement: unanswered, the node gives the step
    again after ``service_step_timeout``, or to another instance when this
    one goes away). A step given again after it was answered is answered
    again, alike, by the server itself, and not given to :meth:`next`.
    :meth:`stop` sends a take of 0: the node gives what this instance held
    to the others.
    """

    def __init__(self, service: "Service", topic: str, credits: int,
                 socket: zmq.asyncio.Socket) -> None:
        self.topic = topic
        self.credits = credits
        self._service = service
        self._socket = socket
        self._instance = topic[len(service.reply_to):].rstrip("~")
        self._takes = itertools.count()
        self._queue: "asyncio.Queue[Union[Step, BaseException]]" = asyncio.Queue()
        self._answers: "collections.OrderedDict[Tuple[str, str], List[bytes]]" = (
            collections.OrderedDict()
        )
        self._outstanding: Set[Tuple[str, str]] = set()
        self._tasks: List["asyncio.Task[None]"] = []
        self._stopped = False
        #: steps the node gave again (late, or their answer lost) that were
        #: not handed over again: answered again alike if answered already
        self.given_again = 0

    def _take_id(self) -> str:
        return f"{self._service.session}-{self._instance}-take-{next(self._takes)}"

    async def _send_take(self, credits: int) -> None:
        env = protocol.envelope("take", self._take_id(), service=self._service.id,
                                reply_to=self.topic)
        await self._service._send(protocol.frames("~", env, protocol.pack(credits)))

    async def _heartbeat(self) -> None:
        try:
            while True:
                await self._send_take(self.credits)
                await asyncio.sleep(TAKE_EVERY)
        except (asyncio.CancelledError, ClosedError):
            pass

    async def _read(self) -> None:
        try:
            while True:
                message = protocol.decode(await self._socket.recv_multipart())
                if message is None or message.topic != self.topic:
                    continue  # only what comes on this instance's topic is for it
                if message.kind == "step":
                    step = protocol.as_step(message)
                    key = (step.origin, step.id)
                    if key in self._answers:
                        self.given_again += 1
                        await self._service._send(self._answers[key])
                    elif key in self._outstanding:
                        self.given_again += 1  # held, its answer to come
                    else:
                        self._outstanding.add(key)
                        await self._queue.put(step)
                elif message.kind == "result" and not message.ok:
                    # A refused take comes back on the topic it named.
                    if message.id.startswith(f"{self._service.session}-{self._instance}-take-"):
                        await self._queue.put(failure(message.envelope, message.payload))
        except (asyncio.CancelledError, zmq.ZMQError):
            pass

    async def next(self, timeout: Optional[float] = None) -> Step:
        """The next step given to this instance. Raises the node's refusal
        of the take (:class:`~zmanager.errors.NotSupported`, code 11: no
        flow gives steps to this service), :class:`ResultTimeout` after
        ``timeout`` seconds."""
        if self._stopped and self._queue.empty():
            raise ClosedError("the step server is stopped")
        try:
            item = await asyncio.wait_for(self._queue.get(), timeout)
        except asyncio.TimeoutError:
            raise ResultTimeout(f"no step on {self.topic!r} within {timeout:g} s") from None
        if isinstance(item, BaseException):
            raise item
        return item

    def __aiter__(self) -> AsyncIterator[Step]:
        return self

    async def __anext__(self) -> Step:
        try:
            return await self.next()
        except ClosedError:
            raise StopAsyncIteration from None

    async def _answer(self, step: Step, payload: bytes, error: Optional[Dict[str, Any]]) -> None:
        env = protocol.envelope(
            "result", step.id, origin=step.origin, flow=step.flow, service=self._service.id,
            # The service's own reply topic, not the instance's: with keys
            # the only one the node takes on an answer (§7c point 4).
            reply_to=self._service.reply_to,
            status="error" if error is not None else None, error=error,
        )
        frames = protocol.frames("~", env, payload)
        key = (step.origin, step.id)
        self._answers[key] = frames
        if len(self._answers) > _ANSWERS_REMEMBERED:
            self._answers.popitem(last=False)
        self._outstanding.discard(key)
        await self._service._send(frames)

    async def answer(self, step: Step, payload: Payload = None, *, raw: bool = False) -> None:
        """Answers ``step``: the flow goes on at its next step with
        ``payload`` as that step's request."""
        await self._answer(step, _encode(payload, raw), None)

    async def refuse(self, step: Step, message: str, *, code: int = 7,
                     name: str = "action_failed") -> None:
        """Refuses ``step``: the flow ends with this error at the step, its
        error result carrying the step's payload (what it received, §8)."""
        await self._answer(step, step.raw_payload or NIL, protocol.error_map(code, name, message))

    async def stop(self) -> None:
        """A take of 0 (the node gives the steps this instance held to the
        others, or keeps them waiting), made sure to reach the node with a
        ping behind it, then closes the socket."""
        if self._stopped:
            return
        self._stopped = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            await self._send_take(0)
            await self._service.ping(timeout=2.0)
        except (HandshakeError, ClosedError):
            pass
        self._socket.close(linger=0)
        self._service._children.discard(self)


class DurableSubscription:
    """A durable subscription (docs/protocol.md §7d, docs/durable.md): the
    node keeps what it publishes on the prefixes under ``(service id,
    name)`` until it is acknowledged, also while no process of the service
    is there; a process that subscribes under the name again gets first
    what was not acknowledged, then what comes.

    :meth:`next` gives each delivery once, in order (a number seen already,
    sent again after a subscribe, is skipped; a gap makes it subscribe
    again, once, until the next in order comes). :meth:`ack` acknowledges
    everything up to a number; at most ``window`` deliveries are out
    unacknowledged. Nothing at all on the topic for
    :data:`RESUBSCRIBE_IDLE` seconds, or an ack refused, and it subscribes
    again: the node keeps subscriptions in memory, and one that restarted
    made a new one, numbered from 1 again (:attr:`made` changes, and the
    numbering goes on from the new one's).

    Across processes it is at least once: a delivery not acknowledged
    when a process stops comes again to the next one. :meth:`close` makes
    sure the last ack reached the node.
    """

    def __init__(self, service: "Service", name: str, prefixes: Sequence[str], window: int,
                 socket: zmq.asyncio.Socket, auto_ack: bool) -> None:
        self.name = name
        self.prefixes = list(prefixes)
        self.window = window
        self.topic = f"{service.reply_to}durable-{name}~"
        self.auto_ack = auto_ack
        self._service = service
        self._socket = socket
        # With keys, an ack's reply_to must be the service's own topic.
        self._ack_to = self.topic if service.keys is None else service.reply_to
        self._run = f"{service.session}-durable-{name}"
        self._ids = itertools.count()
        self._queue: "asyncio.Queue[Union[Delivery, BaseException]]" = asyncio.Queue()
        self._accepted: Optional["asyncio.Future[Tuple[int, Any]]"] = None
        self._first_sent = ""
        self._task: Optional["asyncio.Task[None]"] = None
        self._closed = False
        #: the last sequence number handed to the caller
        self.last = 0
        #: the last sequence number acknowledged
        self.acked = 0
        #: the ``accepted_us`` of the node's ``accepted``: when it made the
        #: subscription. Another value means another subscription.
        self.made: Any = None
        #: how many times the node made the subscription afresh (restarted)
        self.made_afresh = 0
        self._resyncing = False
        self._asking_again = False

    def _id(self, kind: str) -> str:
        return f"{self._run}-{kind}-{next(self._ids)}"

    async def _send_subscribe(self) -> str:
        message_id = self._id("subscribe")
        env = protocol.envelope("subscribe", message_id, service=self._service.id,
                                reply_to=self.topic)
        payload = {"name": self.name, "prefixes": self.prefixes, "window": self.window}
        await self._service._send(protocol.frames("~", env, protocol.pack(payload)))
        return message_id

    async def _open(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        self._accepted = loop.create_future()
        self._first_sent = await self._send_subscribe()
        self._task = asyncio.ensure_future(self._read())
        try:
            acked, made = await asyncio.wait_for(asyncio.shield(self._accepted), timeout)
        except asyncio.TimeoutError:
            raise ResultTimeout(
                f"the node did not answer the subscribe {self._first_sent!r} within {timeout:g} s"
            ) from None
        self.last = self.acked = acked
        self.made = made
        self._service._routes[self._run] = self._on_refusal

    def _ours(self, message: Message, kind: str = "") -> bool:
        return message.id.startswith(f"{self._run}-{kind}-" if kind else f"{self._run}-")

    def _parse(self, topic: str) -> Optional[Tuple[int, str]]:
        if not topic.startswith(self.topic):
            return None
        seq, tilde, original = topic[len(self.topic):].partition("~")
        if not tilde or not (seq.isascii() and seq.isdigit()):
            return None
        return int(seq), original

    @staticmethod
    def _acked_in(message: Message) -> int:
        value = message.payload
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise RequestFailed(6, "bad_request",
                                f"an accepted whose payload is not a sequence number: {value!r}")
        return value

    async def _on_refusal(self, message: Message) -> None:
        """A refusal for this run that came on the service's reply topic
        (with keys, where an ack's refusal goes)."""
        if not message.ok and self._ours(message, "ack") and not self._asking_again:
            self._asking_again = True
            await self._send_subscribe()

    async def _on_accepted(self, message: Message) -> None:
        acked = self._acked_in(message)
        made = message.envelope.get("accepted_us")
        if self._accepted is not None and not self._accepted.done():
            if message.id == self._first_sent:
                self._accepted.set_result((acked, made))
            return
        if made != self.made:
            # Not the subscription this one had: the node lost it (it
            # restarted, or it was deleted) and made a new one, numbered
            # from 1 again. Go on from the new one's number.
            self.made = made
            self.made_afresh += 1
            self.last = self.acked = acked
        else:
            self.last = max(self.last, acked)
        self._resyncing = False
        self._asking_again = False

    async def _read(self) -> None:
        try:
            while True:
                if not await self._socket.poll(int(RESUBSCRIBE_IDLE * 1000)):
                    if self._accepted is not None and self._accepted.done():
                        await self._send_subscribe()  # still ours? the accepted says
                    continue
                message = protocol.decode(await self._socket.recv_multipart())
                if message is None:
                    continue
                delivery = self._parse(message.topic)
                if delivery is None:
                    # Only what comes on the topic itself is the node's word.
                    if message.topic != self.topic or not self._ours(message):
                        continue
                    if message.kind == "accepted":
                        await self._on_accepted(message)
                    elif not message.ok and self._ours(message, "ack"):
                        if not self._asking_again:
                            self._asking_again = True
                            await self._send_subscribe()
                    elif not message.ok and self._ours(message, "subscribe"):
                        error = failure(message.envelope, message.payload)
                        if self._accepted is not None and not self._accepted.done():
                            self._accepted.set_exception(error)
                        else:
                            await self._queue.put(error)
                    continue
                if self._accepted is None or not self._accepted.done():
                    continue  # before the accepted: it comes again after it
                seq, original = delivery
                if seq <= self.last:
                    continue  # sent again after a subscribe: given already
                if seq > self.last + 1:
                    if not self._resyncing:
                        self._resyncing = True
                        await self._send_subscribe()
                    continue
                self.last = seq
                self._resyncing = False
                await self._queue.put(Delivery(message.topic, message.envelope,
                                               message.raw_payload, message.payload,
                                               message.payload_error, seq, original))
                if self.auto_ack:
                    await self.ack(seq)
        except (asyncio.CancelledError, zmq.ZMQError, ClosedError):
            pass

    async def next(self, timeout: Optional[float] = None) -> Delivery:
        """The next delivery, in order. Raises the node's refusal of a
        subscribe sent again, :class:`ResultTimeout` after ``timeout``."""
        if self._closed and self._queue.empty():
            raise ClosedError("the durable subscription is closed")
        try:
            item = await asyncio.wait_for(self._queue.get(), timeout)
        except asyncio.TimeoutError:
            raise ResultTimeout(f"no delivery on {self.topic!r} within {timeout:g} s") from None
        if isinstance(item, BaseException):
            raise item
        return item

    def __aiter__(self) -> AsyncIterator[Delivery]:
        return self

    async def __anext__(self) -> Delivery:
        try:
            return await self.next()
        except ClosedError:
            raise StopAsyncIteration from None

    async def ack(self, upto: Union[int, Delivery]) -> None:
        """Acknowledges every delivery up to ``upto`` (a number, or a
        delivery): the node drops them, and sends more."""
        seq = upto.seq if isinstance(upto, Delivery) else int(upto)
        env = protocol.envelope("ack", self._id("ack"), service=self._service.id,
                                reply_to=self._ack_to)
        payload = {"name": self.name, "seq": seq}
        await self._service._send(protocol.frames("~", env, protocol.pack(payload)))
        self.acked = max(self.acked, seq)

    async def delete(self) -> None:
        """Deletes the subscription on the node (a subscribe without
        prefixes), then closes this one."""
        env = protocol.envelope("subscribe", self._id("subscribe"), service=self._service.id,
                                reply_to=self.topic)
        payload = {"name": self.name, "prefixes": [], "window": self.window}
        await self._service._send(protocol.frames("~", env, protocol.pack(payload)))
        await self.close()

    async def close(self, timeout: float = 5.0) -> None:
        """Makes sure the last ack reached the node (a ping behind it: the
        node takes one connection's messages in order), then closes the
        socket. The subscription stays on the node, under its name."""
        if self._closed:
            return
        self._closed = True
        self._service._routes.pop(self._run, None)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        try:
            await self._service.ping(timeout=timeout)
        except (HandshakeError, ClosedError):
            pass
        self._socket.close(linger=0)
        self._service._children.discard(self)


class Service:
    """A connection of one service to a node: its id, its reply topic
    ``@reply~ID~``, a PUSH socket to the intake and a SUB socket on the
    reply topic. Make one with :meth:`connect` (which does the ping
    handshake); close it with :meth:`close` or ``async with``."""

    def __init__(self, intake: str, publish: str, service_id: str, session: str,
                 keys: Optional[CurveKeys], handshake_timeout: float, retry_after: float,
                 ack_after: float, max_in_flight: int,
                 context: Optional[zmq.asyncio.Context],
                 standbys: Sequence[Tuple[str, str]] = ()) -> None:
        #: the node in use: its intake and publish endpoints
        self.intake = intake
        self.publish = publish
        # The first node and its standbys, used in turn (_move_on).
        self._nodes: List[Tuple[str, str]] = [(intake, publish), *standbys]
        self._at = 0
        self._generation = 0
        self._healing: Optional[asyncio.Lock] = None
        #: the service id: the ``service`` of every message it sends
        self.id = service_id
        #: this connection's own prefix of message ids
        self.session = session
        #: the topic its results are published on
        self.reply_to = protocol.reply_topic(service_id)
        self.keys = keys
        self.handshake_timeout = handshake_timeout
        self.retry_after = retry_after
        self.ack_after = ack_after
        #: what it counted (results, duplicates, resends, …)
        self.stats = Stats()
        #: the last results for no request of this connection (an answer's
        #: refusal, code 14 or 20, say), newest last
        self.unexpected: Deque[Result] = collections.deque(maxlen=100)
        #: called with each of them, if set
        self.on_unexpected: Optional[Callable[[Result], None]] = None
        self._own_context = context is None
        self._ctx = context if context is not None else zmq.asyncio.Context()
        self._counter = itertools.count()  # pings, probes, topics
        self._ids = itertools.count()  # request ids: SESSION-0, SESSION-1, …
        self._pending: Dict[str, Submission] = {}
        self._finished: "collections.OrderedDict[str, None]" = collections.OrderedDict()
        self._pings: Dict[str, "asyncio.Future[None]"] = {}
        self._routes: Dict[str, Callable[[Message], Any]] = {}
        self._children: Set[Any] = set()
        self._slots = asyncio.Semaphore(max(1, max_in_flight))
        self._closed = False
        self._curve_failures: List[str] = []
        self._tasks: List["asyncio.Task[None]"] = []
        self._open_sockets(intake, publish)

    def _open_sockets(self, intake: str, publish: str) -> None:
        """The PUSH socket to ``intake`` (with its monitor, with keys) and
        the SUB socket on ``publish``, subscribed to the reply topic."""
        self._push = self._socket(zmq.PUSH)
        self._push.setsockopt(zmq.SNDHWM, 1000)
        self._push.setsockopt(zmq.LINGER, _LINGER_MS)
        self._monitor: Optional[zmq.asyncio.Socket] = None
        if self.keys is not None:
            try:
                self._monitor = self._push.get_monitor_socket(
                    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                    | zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_DISCONNECTED
                    | zmq.EVENT_HANDSHAKE_SUCCEEDED
                )
            except (zmq.ZMQError, AttributeError):  # an old libzmq: no handshake events
                self._monitor = None
        self._sub = self._socket(zmq.SUB)
        self._sub.setsockopt(zmq.LINGER, 0)
        self._sub.setsockopt(zmq.SUBSCRIBE, self.reply_to.encode())
        try:
            self._sub.connect(publish)
            self._push.connect(intake)
        except zmq.ZMQError as e:
            self._close_sockets()
            raise ConfigError(f"cannot connect to {intake!r} / {publish!r}: {e}") from None

    # -- connecting -------------------------------------------------------

    @classmethod
    async def connect(
        cls,
        intake: str = protocol.DEFAULT_INTAKE,
        publish: str = protocol.DEFAULT_PUBLISH,
        *,
        name: str = "py",
        service_id: Optional[str] = None,
        keys: Optional[CurveKeys] = None,
        handshake_timeout: float = 10.0,
        retry_after: float = 5.0,
        ack_after: float = 1.0,
        max_in_flight: int = 1024,
        context: Optional[zmq.asyncio.Context] = None,
        standbys: Sequence[Tuple[str, str]] = (),
    ) -> "Service":
        """Connects to the node's ``intake`` and ``publish`` endpoints
        (``tcp://host:port`` or ``ipc:///path``, the node's ``[endpoints]``)
        and pings until a ping comes back on the reply topic (the
        slow-joiner handshake, §6): then its results can no longer be
        published before its subscription is live.

        Args:
            name: without ``service_id``, the id is ``NAME-<16 hex digits>``,
                new each time.
            service_id: the id exactly: the one a node with ``[security]``
                binds ``keys`` to, or a ``[services]`` name for
                :meth:`serve_steps`. Message ids still carry a random part.
            keys: CURVE keys (:class:`~zmanager.keys.CurveKeys`) for a node
                with ``[security]``; None for a node on loopback or ipc.
            handshake_timeout: seconds to wait for the ping's echo.
            retry_after: a request accepted and still without a result
                after this is sent again (same id).
            ack_after: a request not yet accepted after this is sent again.
            max_in_flight: requests waiting for their results at once; more
                wait in :meth:`submit`.
            standbys: ``(intake, publish)`` of other nodes on the same
                journal, standbys of this one (docs/deployment.md). When the
                node in use does not answer a ping, the service connects to
                the next one in turn and sends its unanswered requests
                there again (same ids): the new active node answers them.
                Subscriptions stay on the node they were made on.

        Raises:
            ConfigError: a service id or name that would break the reply
                topic, an endpoint libzmq does not take.
            HandshakeError: no ping came back within ``handshake_timeout``;
                :class:`CurveHandshakeError` when, with keys, the socket
                monitor saw the CURVE handshake fail (a wrong server key, a
                key the node does not list).
        """
        if service_id is not None:
            protocol.check_name(service_id, "service id")
        protocol.check_name(name, "service name")
        for what, value in (("handshake_timeout", handshake_timeout),
                            ("retry_after", retry_after), ("ack_after", ack_after)):
            if not value > 0:
                raise ConfigError(f"{what} must be more than 0, not {value!r}")
        session = f"{name}-{secrets.token_hex(8)}"
        service = cls(intake, publish, service_id or session, session, keys, handshake_timeout,
                      retry_after, ack_after, max_in_flight, context, standbys)
        service._tasks.append(asyncio.ensure_future(service._read()))
        if service._monitor is not None:
            service._tasks.append(asyncio.ensure_future(service._watch()))
        try:
            # The first node that answers: with standbys, the active one.
            for tried in itertools.count(1):
                try:
                    await service.ping(handshake_timeout)
                    break
                except HandshakeError:
                    if tried >= len(service._nodes):
                        raise
                    await service._move_on(service._generation)
        except BaseException:
            await service.close(linger=False)
            raise
        return service

    async def _move_on(self, seen: int) -> bool:
        """Connects to the next node in turn (an active node's standby) when
        the one in use does not answer: new sockets, the reader on the new
        SUB. Once per connection generation ``seen``; False with one node."""
        if len(self._nodes) < 2 or self._closed:
            return False
        if self._healing is None:
            self._healing = asyncio.Lock()
        async with self._healing:
            if self._generation != seen:
                return True  # another caller moved on already
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self._tasks.clear()
            self._close_sockets()
            self._curve_failures.clear()
            self._at = (self._at + 1) % len(self._nodes)
            self.intake, self.publish = self._nodes[self._at]
            self._open_sockets(self.intake, self.publish)
            self._generation += 1
            self.stats.moved += 1
            self._tasks.append(asyncio.ensure_future(self._read()))
            if self._monitor is not None:
                self._tasks.append(asyncio.ensure_future(self._watch()))
            # Its subscriptions move with it.
            for child in list(self._children):
                if isinstance(child, Subscription):
                    await child._follow()
            return True

    def _socket(self, kind: int) -> zmq.asyncio.Socket:
        socket = self._ctx.socket(kind)
        if self.keys is not None:
            self.keys.apply(socket)
        return socket

    async def __aenter__(self) -> "Service":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    # -- the sockets --------------------------------------------------------

    async def _send(self, frames: List[bytes]) -> None:
        if self._closed:
            raise ClosedError("the service is closed")
        await self._push.send_multipart(frames)

    async def _watch(self) -> None:
        """Notes the CURVE handshake failures the monitor reports."""
        from zmq.utils.monitor import parse_monitor_message

        assert self._monitor is not None
        succeeded = False
        try:
            while True:
                event = parse_monitor_message(await self._monitor.recv_multipart())
                kind = event["event"]
                if kind == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                    succeeded = True
                    self._curve_failures.clear()
                elif kind == zmq.EVENT_DISCONNECTED and not succeeded:
                    self._curve_failures.append("the node closed the connection during the handshake")
                elif kind != zmq.EVENT_DISCONNECTED:
                    try:
                        name = zmq.Event(kind).name
                    except ValueError:
                        name = str(kind)
                    self._curve_failures.append(f"{name} (errno {event.get('value')})")
                if kind == zmq.EVENT_DISCONNECTED:
                    succeeded = False
        except (asyncio.CancelledError, zmq.ZMQError):
            pass

    async def _read(self) -> None:
        try:
            while True:
                raw = await self._sub.recv_multipart()
                message = protocol.decode(raw)
                if message is None:
                    self.stats.malformed += 1
                    continue
                if message.topic != self.reply_to:
                    continue  # under it (with keys): another socket's topic
                await self._dispatch(message)
        except (asyncio.CancelledError, zmq.ZMQError):
            pass

    async def _dispatch(self, message: Message) -> None:
        kind = message.kind
        if kind == "ping":
            fut = self._pings.get(message.id)
            if fut is not None and not fut.done():
                fut.set_result(None)
        elif kind == "accepted":
            ids = message.payload if isinstance(message.payload, list) else []
            for message_id in ids:
                submission = self._pending.get(message_id) if isinstance(message_id, str) else None
                if submission is not None and not submission._accepted.done():
                    self.stats.accepted += 1
                    submission._on_accepted()
        elif kind == "result":
            result = protocol.as_result(message)
            submission = self._pending.pop(message.id, None)
            if submission is not None:
                self.stats.results += 1
                self._remember(message.id)
                submission._on_result(result)
                self._slots.release()
                return
            if message.id in self._finished:
                self.stats.duplicates += 1
                return
            fut = self._pings.get(message.id)
            if fut is not None and not fut.done():  # a refused ping (code 2, 19)
                fut.set_exception(HandshakeError(f"the node refused the ping: {failure(message.envelope)}"))
                return
            for prefix, route in list(self._routes.items()):
                if message.id.startswith(prefix):
                    await route(message)
                    return
            self.stats.unexpected += 1
            self.unexpected.append(result)
            if self.on_unexpected is not None:
                self.on_unexpected(result)

    def _remember(self, message_id: str) -> None:
        self._finished[message_id] = None
        if len(self._finished) > _REMEMBERED:
            self._finished.popitem(last=False)

    def _forget(self, submission: Submission, error: BaseException) -> None:
        if self._pending.pop(submission.id, None) is submission:
            self._remember(submission.id)
            self._slots.release()
        if submission._task is not None:
            submission._task.cancel()
        submission._fail(error)

    def _close_sockets(self) -> None:
        for socket in (self._sub, self._monitor):
            if socket is not None:
                socket.close(linger=0)
        self._push.close()

    # -- pinging ------------------------------------------------------------

    async def ping(self, timeout: float = 1.0) -> None:
        """Pings the node every :data:`PING_EVERY` s until one comes back on
        the reply topic: the node is there and hears this service (and has
        taken everything this service sent before the ping: it takes one
        connection's messages in order). :class:`HandshakeError` after
        ``timeout`` seconds."""
        message_id = f"{self.session}-ping-{next(self._counter)}"
        await self._probe(message_id, self.reply_to, self._sub_future(message_id), timeout)

    def _sub_future(self, message_id: str) -> "asyncio.Future[None]":
        fut: "asyncio.Future[None]" = asyncio.get_running_loop().create_future()
        self._pings[message_id] = fut
        return fut

    async def _probe(self, message_id: str, reply_to: str, echoed: "asyncio.Future[None]",
                     timeout: float) -> None:
        """Sends pings ``message_id`` (reply_to ``reply_to``) every
        PING_EVERY until ``echoed`` resolves or ``timeout`` passes."""
        if self._closed:
            raise ClosedError("the service is closed")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        env = protocol.envelope("ping", message_id, service=self.id, reply_to=reply_to)
        frames = protocol.frames(reply_to, env, NIL)
        sent = 0
        try:
            while True:
                try:
                    await self._push.send_multipart(frames, flags=zmq.NOBLOCK)
                    sent += 1
                except zmq.Again:
                    pass  # full (the node is away): try again at the next tick
                left = deadline - loop.time()
                if left <= 0:
                    break
                done, _ = await asyncio.wait({echoed}, timeout=min(PING_EVERY, left))
                if done:
                    echoed.result()  # raises a refusal
                    return
        finally:
            self._pings.pop(message_id, None)
            if not echoed.done():
                echoed.cancel()
        raise self._handshake_error(timeout, sent, reply_to)

    def _handshake_error(self, timeout: float, sent: int, reply_to: str) -> HandshakeError:
        if self.keys is not None and self._curve_failures:
            return CurveHandshakeError(
                f"no ping came back on {reply_to!r} within {timeout:g} s ({sent} sent), and "
                f"the CURVE handshake with {self.intake} failed: {self._curve_failures[-1]}. "
                f"Is the server key the node's public key, and does the node's [security] "
                f"list this service's public key ({self.keys.public}) with id {self.id!r}?"
            )
        why = ("is the node running at these endpoints?" if self.keys is None else
               f"does the node's [security] list this service's public key with id {self.id!r}, "
               f"and is the server key the node's?")
        return HandshakeError(
            f"no ping came back on {reply_to!r} from {self.intake} / {self.publish} within "
            f"{timeout:g} s ({sent} sent): {why} (A node with [security] takes only clients "
            f"with keys.)"
        )

    async def _socket_handshake(self, socket: zmq.asyncio.Socket, ping_to: str,
                                timeout: float,
                                on_other: Optional[Callable[[Message], Any]] = None) -> None:
        """Pings with reply_to ``ping_to`` until one comes back on
        ``socket`` (a new SUB): its subscriptions are then live."""
        message_id = f"{self.session}-probe-{next(self._counter)}"
        echoed: "asyncio.Future[None]" = asyncio.get_running_loop().create_future()

        async def listen() -> None:
            while True:
                message = protocol.decode(await socket.recv_multipart())
                if message is None:
                    continue
                if message.topic == ping_to and message.id == message_id:
                    if message.kind == "ping":
                        echoed.set_result(None)
                    elif not message.ok:
                        echoed.set_exception(HandshakeError(
                            f"the node refused the ping: {failure(message.envelope)}"))
                    return
                if on_other is not None:
                    on_other(message)

        listener = asyncio.ensure_future(listen())
        try:
            await self._probe(message_id, ping_to, echoed, timeout)
        finally:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)

    def _sub_socket(self, topics: Iterable[str]) -> zmq.asyncio.Socket:
        socket = self._socket(zmq.SUB)
        socket.setsockopt(zmq.LINGER, 0)
        for topic in topics:
            socket.setsockopt(zmq.SUBSCRIBE, topic.encode())
        socket.connect(self.publish)
        return socket

    # -- requests -----------------------------------------------------------

    def new_id(self) -> str:
        """A new message id: ``SESSION-N``, N from 0, unique to this
        connection (the session has 16 random hex digits)."""
        return f"{self.session}-{next(self._ids)}"

    async def submit(
        self,
        flow: str,
        payload: Payload = None,
        *,
        id: Optional[str] = None,
        raw: bool = False,
        key: Optional[str] = None,
        order_key: Optional[str] = None,
        traceparent: Optional[str] = None,
        tracestate: Optional[str] = None,
    ) -> Submission:
        """Pushes ``payload`` (any MessagePack value; MessagePack bytes with
        ``raw=True``) into ``flow``, asking for an acknowledgement, and
        returns at once: await the :class:`Submission`'s ends.

        ``id``: a message id of the caller's (default :meth:`new_id`). To
        resend a request — after this process restarted, say — submit it
        again with its id: the node runs an id once, and within its
        ``dedupe_window`` publishes the first run's result again. The
        result may then be published more than once; each submission gets
        it once. ``key``: the step the request is at (an entry point of
        the flow; default its step 0). ``order_key``: for a flow ordered by
        ``envelope``. ``traceparent``/``tracestate``: W3C trace context.

        Raises :class:`ConfigError` for a payload that does not encode or a
        flow that is not a string; the node's refusals (an unknown flow:
        :class:`~zmanager.errors.UnknownFlow`) come as the result's error.
        """
        if not isinstance(flow, str):
            raise ConfigError(f"a flow is a string, not {type(flow).__name__}")
        body = _encode(payload, raw)
        message_id = id if id is not None else self.new_id()
        if not isinstance(message_id, str) or not message_id:
            raise ConfigError("a message id is a non-empty string")
        if message_id in self._pending:
            return self._pending[message_id]  # already on its way: the same one
        await self._slots.acquire()
        if self._closed:
            self._slots.release()
            raise ClosedError("the service is closed")
        env = protocol.envelope(
            "request", message_id, flow=flow, service=self.id, reply_to=self.reply_to,
            ack=True, key=key or None, order_key=order_key, traceparent=traceparent,
            tracestate=tracestate,
        )
        frames = protocol.frames(protocol.entry_topic(flow), env, body)
        submission = Submission(self, message_id, flow, frames)
        self._pending[message_id] = submission
        submission._task = asyncio.ensure_future(submission._drive(self.ack_after, self.retry_after))
        return submission

    async def request(self, flow: str, payload: Payload = None, *,
                      timeout: Optional[float] = None, id: Optional[str] = None,
                      raw: bool = False, key: Optional[str] = None,
                      order_key: Optional[str] = None) -> Result:
        """:meth:`submit`, then the result of a success
        (:meth:`Submission.finished`): raises the :class:`RequestFailed`
        subclass of an error's code. With ``timeout``, gives up after that
        many seconds (:class:`ResultTimeout`) and stops resending."""
        submission = await self.submit(flow, payload, id=id, raw=raw, key=key,
                                       order_key=order_key)
        try:
            return await submission.finished(timeout)
        except ResultTimeout:
            submission.cancel()
            raise

    # -- topics and @ASYNC answers -----------------------------------------

    async def subscribe(self, prefixes: Sequence[str], *, maxsize: int = 10_000) -> Subscription:
        """Subscribes to topic prefixes on the node's publisher (the topics
        of ``@PUBLISH`` steps, ``Announce~PUBLISH~``, or a flow's results,
        ``Greeting~~~~done``), on a SUB socket of its own, and returns once
        the subscription is live: it pings on a topic subscribed to after
        the prefixes until the echo comes back there (with keys, the
        service's own reply topic, the only ``reply_to`` the node takes
        then). At most ``maxsize`` messages wait to be read; then the
        socket is not read, and the node drops for it (PUB/SUB). With
        ``standbys``, the subscription moves with the service to the next
        node (what that node published before it arrived is not received)."""
        prefixes = [str(p) for p in prefixes]
        if not prefixes:
            raise ConfigError("subscribe to at least one prefix")
        probe = (self.reply_to if self.keys is not None
                 else f"@probe~{self.session}-{next(self._counter)}~")
        socket = self._sub_socket([*prefixes, probe])
        subscription = Subscription(self, prefixes, socket, probe, maxsize)
        early: List[Message] = []
        try:
            await self._socket_handshake(socket, probe, self.handshake_timeout,
                                         lambda m: early.append(m) if subscription._wanted(m) else None)
        except BaseException:
            socket.close(linger=0)
            raise
        if not any(probe.startswith(p) for p in prefixes):
            socket.setsockopt(zmq.UNSUBSCRIBE, probe.encode())
        for message in early:
            subscription._queue.put_nowait(message)
        subscription._task = asyncio.ensure_future(subscription._read())
        self._children.add(subscription)
        return subscription

    async def answer(self, message: Message, payload: Payload = None, *, raw: bool = False) -> None:
        """Answers a message published at a ``@PUBLISH`` step before an
        ``@ASYNC`` one (§7a): the flow suspended there, keyed by the
        message's ``service`` and ``id``, resumes with ``payload``, and its
        result goes to the service that started it. A refusal (code 14
        ``unknown_async``: answered already, timed out; 20 ``forbidden``)
        comes on this service's reply topic, into :attr:`unexpected`."""
        await self._send(self._answer_frames(message, _encode(payload, raw), None))

    async def answer_error(self, message: Message, error_message: str, *, code: int = 7,
                           name: str = "action_failed") -> None:
        """Answers a suspended flow with an error: the flow ends with it."""
        await self._send(self._answer_frames(message, NIL,
                                             protocol.error_map(code, name, error_message)))

    def _answer_frames(self, message: Message, payload: bytes,
                       error: Optional[Dict[str, Any]]) -> List[bytes]:
        env = protocol.envelope(
            "result", message.id, origin=message.service, flow=message.flow, service=self.id,
            reply_to=self.reply_to, status="error" if error is not None else None, error=error,
        )
        return protocol.frames(f"{message.flow}~", env, payload)

    # -- service management -------------------------------------------------

    async def register(self, topics: Sequence[str] = (), flows: Sequence[str] = (), *,
                       timeout: float = 10.0) -> Dict[str, Any]:
        """Registers this service with the node's service management (what
        ``zmanager services`` lists): the topics it subscribes to, the
        flows it serves. Registering again replaces both. Returns its entry
        (``id``, ``topics``, ``flows``, ``status``, ``last_seen_ms``).
        With keys, the key needs ``register = true`` (else
        :class:`~zmanager.errors.Forbidden`)."""
        payload = {"id": self.id, "topics": list(topics), "flows": list(flows)}
        entry: Dict[str, Any] = (await self.request(REGISTER, payload, timeout=timeout)).payload
        return entry

    async def heartbeat(self, *, timeout: float = 10.0) -> Dict[str, Any]:
        """Tells the node this service is alive (a service silent for
        ``service_liveness``, 10 s, is listed down); returns its entry.
        :class:`~zmanager.errors.UnknownService` if it is not registered
        (the node restarted: its registry is in memory)."""
        entry: Dict[str, Any] = (await self.request(HEARTBEAT, None, timeout=timeout)).payload
        return entry

    async def services(self, *, timeout: float = 10.0) -> List[Dict[str, Any]]:
        """Every registered service's entry."""
        entries: List[Dict[str, Any]] = (await self.request(LIST, None, timeout=timeout)).payload
        return entries

    def heartbeat_every(self, every: float, topics: Sequence[str] = (),
                        flows: Sequence[str] = ()) -> "asyncio.Task[None]":
        """A task that heartbeats every ``every`` seconds, and registers
        again with ``topics`` and ``flows`` when the node does not know this
        service (it restarted). Cancel it to stop."""

        async def beat() -> None:
            while True:
                try:
                    await self.heartbeat(timeout=max(every, 1.0))
                except UnknownService:
                    try:
                        await self.register(topics, flows, timeout=max(every, 1.0))
                    except (RequestFailed, ResultTimeout):
                        pass
                except (RequestFailed, ResultTimeout):
                    pass
                except ClosedError:
                    return
                await asyncio.sleep(every)

        task = asyncio.ensure_future(beat())
        self._tasks.append(task)
        return task

    # -- steps and durable subscriptions -----------------------------------

    async def serve_steps(self, credits: int = 16) -> StepServer:
        """Takes the steps the node's flows give to this service (its id is
        the name ``[services]`` gives them to, so connect with
        ``service_id``): see :class:`StepServer`. Returns once its topic's
        subscription is live and the first take is sent; a take the node
        refuses (code 11) is raised by :meth:`StepServer.next`."""
        if not isinstance(credits, int) or not 1 <= credits < 2**32:
            raise ConfigError("credits: 1 or more steps at once (below 2**32)")
        topic = f"{self.reply_to}steps-{secrets.token_hex(4)}~"
        ping_to = topic if self.keys is None else self.reply_to
        socket = self._sub_socket([topic] if ping_to == topic else [topic, ping_to])
        try:
            await self._socket_handshake(socket, ping_to, self.handshake_timeout)
        except BaseException:
            socket.close(linger=0)
            raise
        if ping_to != topic:
            socket.setsockopt(zmq.UNSUBSCRIBE, ping_to.encode())
        server = StepServer(self, topic, credits, socket)
        server._tasks = [asyncio.ensure_future(server._read()),
                         asyncio.ensure_future(server._heartbeat())]
        self._children.add(server)
        return server

    async def subscribe_durable(self, name: str, prefixes: Sequence[str], *, window: int = 100,
                                auto_ack: bool = False,
                                timeout: Optional[float] = None) -> DurableSubscription:
        """Subscribes under the durable ``name`` to ``prefixes`` (or takes
        the subscription up again: its prefixes and window become these,
        and what was not acknowledged comes again first). Returns once the
        node's ``accepted`` came: :attr:`DurableSubscription.acked` is what
        was acknowledged before. ``auto_ack``: acknowledge each delivery as
        it is handed over (then one not yet read when the process dies is
        lost to it). Raises the node's refusal (code 20 for a prefix the
        key may not read, 12 past ``max_durables``, 6 for a bad name)."""
        protocol.check_name(name, "durable subscription name")
        prefixes = [str(p) for p in prefixes]
        if not prefixes:
            raise ConfigError("a durable subscription needs at least one prefix "
                              "(an empty list deletes one: DurableSubscription.delete)")
        if not isinstance(window, int) or not 1 <= window < 2**32:
            raise ConfigError("window: 1 or more deliveries (below 2**32)")
        timeout = self.handshake_timeout if timeout is None else timeout
        topic = f"{self.reply_to}durable-{name}~"
        ping_to = topic if self.keys is None else self.reply_to
        socket = self._sub_socket([topic] if ping_to == topic else [topic, ping_to])
        durable = DurableSubscription(self, name, prefixes, window, socket, auto_ack)
        try:
            await self._socket_handshake(socket, ping_to, timeout)
            if ping_to != topic:
                socket.setsockopt(zmq.UNSUBSCRIBE, ping_to.encode())
            await durable._open(timeout)
        except BaseException:
            if durable._task is not None:
                durable._task.cancel()
            socket.close(linger=0)
            raise
        self._children.add(durable)
        return durable

    # -- closing ------------------------------------------------------------

    async def close(self, *, linger: bool = True) -> None:
        """Stops resending, fails what still waits with
        :class:`ClosedError`, closes every subscription and step server of
        this service (a step server sends its take of 0), then the sockets.
        The PUSH socket lingers up to 2 s for what is queued, unless
        ``linger`` is False."""
        if self._closed:
            return
        for child in list(self._children):
            if isinstance(child, StepServer):
                await child.stop()
            else:
                await child.close()
        self._closed = True
        for submission in list(self._pending.values()):
            self._forget(submission, ClosedError("the service is closed"))
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if not linger:
            self._push.setsockopt(zmq.LINGER, 0)
        self._close_sockets()
        if self._own_context:
            self._ctx.term()
