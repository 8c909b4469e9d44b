#!/usr/bin/env python3
"""Push requests into a zmanager node's `Greeting` flow and print the results.

A standalone client that needs only pyzmq and msgpack. It follows
docs/protocol.md step by step:

1. pick a service id `py-<8 hex>` and the reply topic `@reply~<id>~`;
2. SUBscribe to the reply topic on the node's publish endpoint, and connect a
   PUSH socket to its intake endpoint;
3. ping every 100 ms until the node publishes a ping back on the reply topic
   (the subscription is then known to be live: ZeroMQ's "slow joiner");
4. push N requests into the flow `Greeting` (Text.trim -> Greeter.greet ->
   Text.upper), each with the payload {"name": "  ada <n> "};
5. print each result as it arrives, and count the "accepted" messages the
   node sends for requests that ask for them (docs/protocol.md §7b); exit 0
   when all N came back ok.

Exit status: 0 all results ok; 1 an error result, or results missing after the
timeout; 2 the node never answered the ping (is `zmanager up` running?).

    python3 examples/python/quickstart.py [--intake tcp://127.0.0.1:19030]
        [--publish tcp://127.0.0.1:19034] [--count 3] [--timeout 10]
"""

import argparse
import secrets
import sys
import time

import msgpack
import zmq

PROTOCOL_VERSION = 1
FLOW = "Greeting"
# The flow's entry topic (flow~decorator~sender~context~action of its step 0,
# `?Greeting?Push`). The node does not read the topic frame of a request; it
# is there for logs and for ZeroMQ tools that expect a topic first.
ENTRY_TOPIC = b"Greeting~~~Greeting~Push"
NIL = msgpack.packb(None)  # b"\xc0": the payload of a ping
PING_EVERY_S = 0.1
LINGER_MS = 2000  # how long close() may wait for queued requests to go out
DRAIN_S = 0.2  # how long to keep listening once every result is in


def now_us():
    """Microseconds since the Unix epoch (the envelope's created_us)."""
    return time.time_ns() // 1000


def envelope(kind, message_id, service, reply_to, flow=""):
    """A request or ping envelope: a MessagePack map with string keys.

    Fields left out (step, key, attempt, accepted_us, status, error) take
    their defaults on the node; key "" means "from the flow's entry step".
    """
    return msgpack.packb(
        {
            "v": PROTOCOL_VERSION,
            "kind": kind,
            "id": message_id,
            "flow": flow,
            "service": service,
            "reply_to": reply_to,
            "created_us": now_us(),
            # Ask for an "accepted" message once the node has taken (and
            # journaled) the request; only requests use it.
            "ack": kind == "request",
        }
    )


def read_message(frames):
    """Decodes published frames [topic, envelope, payload].

    Returns (envelope dict, payload value, payload note) or None when the
    message does not have the expected shape. The node always sends a
    MessagePack payload; an empty frame is still read leniently, as none.
    """
    if len(frames) != 3:
        return None
    _topic, raw_envelope, raw_payload = frames
    try:
        env = msgpack.unpackb(raw_envelope, raw=False)
    except Exception:  # noqa: BLE001 - any decoding failure means "not ours"
        return None
    if not isinstance(env, dict):
        return None
    if not raw_payload:
        return env, None, "(no payload)"
    try:
        # strict_map_key=False: a payload map may have non-string keys.
        payload = msgpack.unpackb(raw_payload, raw=False, strict_map_key=False)
    except Exception as e:  # noqa: BLE001
        return env, None, f"(payload does not decode: {e}; {raw_payload[:32].hex()})"
    return env, payload, None


def handshake(push, sub, service, reply_to, timeout_s):
    """Pings until the node publishes a ping back on reply_to.

    Returns None on success, or a message saying why it failed.
    """
    poller = zmq.Poller()
    poller.register(sub, zmq.POLLIN)
    deadline = time.monotonic() + timeout_s
    next_ping = 0.0
    sent = 0
    while True:
        now = time.monotonic()
        if now >= deadline:
            return (
                f"no ping came back on {reply_to!r} within {timeout_s:g} s "
                f"({sent} sent): is `zmanager up` running, and are the "
                f"endpoints right?"
            )
        if now >= next_ping:
            ping_id = f"{service}-ping-{sent}"
            try:
                push.send_multipart(
                    [reply_to.encode(), envelope("ping", ping_id, service, reply_to), NIL],
                    flags=zmq.NOBLOCK,
                )
                sent += 1
            except zmq.Again:
                pass  # the intake pushes back; try again at the next tick
            next_ping = now + PING_EVERY_S
        wait_ms = max(0, int(1000 * (min(next_ping, deadline) - time.monotonic())))
        if not dict(poller.poll(wait_ms)):
            continue
        decoded = read_message(sub.recv_multipart())
        if decoded is None:
            continue
        env = decoded[0]
        if env.get("kind") == "ping":
            return None
        if env.get("status") == "error":
            error = env.get("error") or {}
            return (
                f"the node refused the ping: {error.get('code')} "
                f"{error.get('name')}: {error.get('message')}"
            )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--intake", default="tcp://127.0.0.1:19030",
                        help="the node's intake endpoint (PUSH requests here)")
    parser.add_argument("--publish", default="tcp://127.0.0.1:19034",
                        help="the node's publish endpoint (SUBscribe here)")
    parser.add_argument("--count", type=int, default=3, help="requests to push (default 3)")
    parser.add_argument("--timeout", type=float, default=10.0,
                        help="seconds for the handshake, then for all results (default 10)")
    args = parser.parse_args()
    if args.count < 0:
        parser.error("--count must be 0 or more")

    service = f"py-{secrets.token_hex(4)}"
    # The trailing `~` keeps one service's topic from being a prefix of
    # another's (`@reply~py-1~` vs `@reply~py-10~`); `@` cannot start a flow
    # name, so no flow's topics match either.
    reply_to = f"@reply~{service}~"

    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, reply_to.encode())
    sub.connect(args.publish)
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, LINGER_MS)
    push.connect(args.intake)

    try:
        return run(args, service, reply_to, push, sub)
    finally:
        push.close()  # waits up to LINGER_MS for queued messages to be sent
        sub.close()
        ctx.term()


def run(args, service, reply_to, push, sub):
    print(f"service {service}, results on {reply_to!r}")
    failure = handshake(push, sub, service, reply_to, args.timeout)
    if failure:
        print(failure, file=sys.stderr)
        return 2
    print(f"subscribed: the node answered the ping; pushing {args.count} request(s)")

    expected = [f"{service}-{n}" for n in range(args.count)]
    for n, message_id in enumerate(expected):
        push.send_multipart([
            ENTRY_TOPIC,
            envelope("request", message_id, service, reply_to, flow=FLOW),
            msgpack.packb({"name": f"  ada {n} "}),
        ])

    results = {}  # id -> status
    accepted = set()  # ids the node acknowledged
    duplicates = 0
    unexpected = 0
    malformed = 0
    poller = zmq.Poller()
    poller.register(sub, zmq.POLLIN)
    deadline = time.monotonic() + args.timeout
    draining = False
    while True:
        if not draining and len(results) == len(expected) and len(accepted) == len(expected):
            # Everything is here: listen a little longer, to count any
            # duplicate or unexpected message instead of missing it.
            draining = True
            deadline = min(deadline, time.monotonic() + DRAIN_S)
        wait_ms = int(1000 * (deadline - time.monotonic()))
        if wait_ms <= 0 or not dict(poller.poll(wait_ms)):
            break
        decoded = read_message(sub.recv_multipart())
        if decoded is None:
            malformed += 1
            print("ignoring a published message that is not [topic, envelope, payload]")
            continue
        env, payload, note = decoded
        kind = env.get("kind")
        if kind == "ping":
            continue  # a late echo of the handshake
        if kind == "accepted":
            # One acknowledgement may cover many requests: its payload is
            # the list of their ids. A result may come before it.
            accepted.update(i for i in (payload or []) if i in expected)
            continue
        message_id = env.get("id")
        if message_id not in expected:
            unexpected += 1
            print(f"unexpected {kind} {message_id!r}: {env}")
            continue
        if message_id in results:
            duplicates += 1
            print(f"duplicate result for {message_id}: status {env.get('status', 'ok')}")
            continue
        status = env.get("status", "ok")
        results[message_id] = status
        shown = note if note is not None else repr(payload)
        if status == "ok":
            print(f"{message_id} ok {shown}")
        else:
            error = env.get("error") or {}
            print(
                f"{message_id} {status} {error.get('code')} {error.get('name')}: "
                f"{error.get('message')} (step {env.get('step')} {env.get('key')!r}, "
                f"payload {shown})"
            )

    missing = [i for i in expected if i not in results]
    failed = [i for i, status in results.items() if status != "ok"]
    print(
        f"{len(results)}/{len(expected)} result(s), {len(accepted)} accepted, "
        f"{len(failed)} error(s), {duplicates} duplicate(s), {unexpected} unexpected, "
        f"{malformed} malformed"
    )
    if missing:
        print(
            f"missing after {args.timeout:g} s: {', '.join(missing)}",
            file=sys.stderr,
        )
    return 0 if not missing and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
