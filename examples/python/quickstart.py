#!/usr/bin/env python3
"""Push requests into a zmanager node's `Greeting` flow and print the results.

A standalone client that needs only pyzmq and msgpack. It follows
docs/protocol.md step by step:

1. pick a service id `py-<8 hex>` (or take --service-id) and the reply topic
   `@reply~<id>~`;
2. SUBscribe to the reply topic on the node's publish endpoint, and connect a
   PUSH socket to its intake endpoint;
3. ping every 100 ms until the node publishes a ping back on the reply topic
   (the subscription is then known to be live: ZeroMQ's "slow joiner");
4. push N requests into the flow `Greeting` (Text.trim -> Greeter.greet ->
   Text.upper), each with the payload {"name": "  ada <n> "};
5. print each result as it arrives, and count the "accepted" messages the
   node sends for requests that ask for them (docs/protocol.md §7b); exit 0
   when all N came back ok.

With keys (a node whose configuration has a `[security]` table, see
docs/security.md), give the service's fixed id, its key file and the node's
public key; both sockets then speak CURVE:

    python3 examples/python/quickstart.py --service-id ada \
        --key-file ada.key --server-key node.pub

Exit status: 0 all results ok; 1 an error result, or results missing after the
timeout; 2 the node never answered the ping (is `zmanager up` running? with
keys: does the node know this key?); 3 a wrong option or key file.

    python3 examples/python/quickstart.py [--intake tcp://127.0.0.1:19030]
        [--publish tcp://127.0.0.1:19034] [--count 3] [--timeout 10]
        [--service-id ID] [--key-file ID.key --server-key node.pub]
"""

import argparse
import os
import secrets
import string
import sys
import time

import msgpack
import zmq

# zmanager_keys.py sits beside this script; the directory is put first on
# the path for when the script is run some other way than by its path
# (runpy, say).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import zmanager_keys  # noqa: E402
from zmanager_keys import SetupError  # noqa: E402

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
# A service id: no `~`, so that `@reply~<id>~` keeps its shape (protocol.md §6).
SERVICE_ID_CHARS = set(string.ascii_letters + string.digits + "_-.")


class Parser(argparse.ArgumentParser):
    """argparse, with usage errors on exit status 3 (2 means "no ping")."""

    def error(self, message):
        self.print_usage(sys.stderr)
        self.exit(3, f"{self.prog}: error: {message}\n")


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


def curve_keys(args):
    """(server, public, secret) keys from the options, or None without keys."""
    if args.key_file is not None and args.server_key is not None and args.service_id is None:
        raise SetupError(
            "--key-file needs --service-id: the id the node's [security] table "
            "lists this key under"
        )
    return zmanager_keys.curve_keys(args.key_file, args.server_key)


def handshake(push, sub, service, reply_to, timeout_s, id_prefix, why):
    """Pings until the node publishes a ping back on reply_to.

    Returns None on success, or a message saying why it failed; `why` is
    what to check when nothing comes back.
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
                f"({sent} sent): {why}"
            )
        if now >= next_ping:
            ping_id = f"{id_prefix}-ping-{sent}"
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
    parser = Parser(description=__doc__.splitlines()[0])
    parser.add_argument("--intake", default="tcp://127.0.0.1:19030",
                        help="the node's intake endpoint (PUSH requests here)")
    parser.add_argument("--publish", default="tcp://127.0.0.1:19034",
                        help="the node's publish endpoint (SUBscribe here)")
    parser.add_argument("--count", type=int, default=3, help="requests to push (default 3)")
    parser.add_argument("--timeout", type=float, default=10.0,
                        help="seconds for the handshake, then for all results (default 10)")
    parser.add_argument("--service-id", metavar="ID",
                        help="a fixed service id (default py-<8 random hex digits>); "
                             "with keys, the id the node's [security] lists the key under")
    parser.add_argument("--key-file", metavar="PATH",
                        help="this service's key pair, the .key file `zmanager keys new` writes")
    parser.add_argument("--server-key", metavar="KEY_OR_PATH",
                        help="the node's public key in Z85, or its .pub file")
    args = parser.parse_args()
    if args.count < 0:
        parser.error("--count must be 0 or more")
    if args.service_id is not None and (
        not args.service_id or not set(args.service_id) <= SERVICE_ID_CHARS
    ):
        parser.error("--service-id: use letters, digits, `_`, `-` and `.`")
    try:
        keys = curve_keys(args)
    except SetupError as e:
        parser.error(str(e))

    if args.service_id is None:
        service = f"py-{secrets.token_hex(4)}"
        id_prefix = service
    else:
        service = args.service_id
        # The node runs a service's id once: a request pushed again with an
        # id it finished less than a minute ago (dedupe_window) gets the
        # old result back instead of running (protocol.md §8). A fixed
        # service id therefore takes a fresh random part for every run.
        id_prefix = f"{service}-{secrets.token_hex(4)}"
    # The trailing `~` keeps one service's topic from being a prefix of
    # another's (`@reply~py-1~` vs `@reply~py-10~`); `@` cannot start a flow
    # name, so no flow's topics match either. With keys, the node accepts
    # only this reply_to (or an empty one): the topic of the key's own id.
    reply_to = f"@reply~{service}~"

    ctx = zmq.Context()

    def socket(kind):
        s = ctx.socket(kind)
        zmanager_keys.apply(s, keys)  # before connect
        return s

    sub = socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, reply_to.encode())
    sub.connect(args.publish)
    push = socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, LINGER_MS)
    push.connect(args.intake)

    try:
        return run(args, service, id_prefix, reply_to, keys, push, sub)
    finally:
        push.close()  # waits up to LINGER_MS for queued messages to be sent
        sub.close()
        ctx.term()


def run(args, service, id_prefix, reply_to, keys, push, sub):
    ids = "" if id_prefix == service else f", request ids {id_prefix}-<n>"
    print(f"service {service}, results on {reply_to!r}{ids}")
    if keys is None:
        why = (
            "is `zmanager up` running, and are the endpoints right? (A node "
            "with [security] takes only clients with keys: --key-file, --server-key.)"
        )
    else:
        print(f"CURVE: node key {keys[0]}, this service's public key {keys[1]}")
        # A key the node refuses fails the CURVE handshake; libzmq connects
        # again and again, and this script does not watch socket events.
        why = (
            f"the node may have refused the keys. Is the public key of "
            f"{args.key_file} ({keys[1]}) listed in the node's [security] "
            f"with id {service!r}, and is --server-key the node's public key? "
            f"(The node logs \"refused a connection\" with a key it does not "
            f"know.) Or is `zmanager up` not running, or are the endpoints wrong?"
        )
    failure = handshake(push, sub, service, reply_to, args.timeout, id_prefix, why)
    if failure:
        # The queued pings are of no use now: do not wait LINGER_MS for them.
        push.setsockopt(zmq.LINGER, 0)
        print(failure, file=sys.stderr)
        return 2
    print(f"subscribed: the node answered the ping; pushing {args.count} request(s)")

    expected = [f"{id_prefix}-{n}" for n in range(args.count)]
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
