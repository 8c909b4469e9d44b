#!/usr/bin/env python3
"""Take the steps a zmanager node's flows give to service `moderator`.

The Python twin of examples/examples/moderator.rs: pyzmq and msgpack only,
written from docs/protocol.md §7c (and §6 for the handshake, §7a for the
answers). The shipped flow `Review` is Text.trim -> the step given to
service `moderator` -> Text.upper; this service approves each text
(a MessagePack string) as "<text> (approved)", or refuses one containing
`spam` with an error answer (code 7, "refused by the moderator").

1. pick an instance topic `@reply~moderator~steps-<8 hex>~`, SUBscribe to it
   and connect a PUSH socket to the intake;
2. ping until a ping comes back (protocol.md §6): the subscription is live.
   With keys the ping goes to the service's own `@reply~moderator~`, the
   only reply_to the node takes on a ping then;
3. send a `take` with --credits (how many steps it holds at once), and again
   every second: that is the instance's heartbeat. It says so on stderr;
4. answer each step the node publishes on the instance topic, printing
   `step ORIGIN ID` (the requester's service and id) on stdout as it comes.
   A step may come again (its answer was late or lost): it is answered
   again with the answer it had the first time;
5. on Ctrl-C (or SIGTERM), or after --count distinct steps, send a take of 0
   and exit 0.

With keys (a node with `[security]`, docs/security.md), the key must be the
one listed under id `moderator`:

    python3 examples/python/moderator.py --key-file moderator.key \
        --server-key node.pub

Exit status: 0 stopped (Ctrl-C, SIGTERM, or --count steps answered); 1 the
node refused the take (no flow gives steps to `moderator`?); 2 the node never
answered the ping; 3 a wrong option or key file.

    python3 examples/python/moderator.py [--intake tcp://127.0.0.1:19030]
        [--publish tcp://127.0.0.1:19034] [--credits 16] [--count N]
        [--timeout 10] [--key-file moderator.key --server-key node.pub]
"""

import argparse
import collections
import os
import secrets
import signal
import sys
import time

import msgpack
import zmq

# zmanager_keys.py sits beside this script; the directory is put first on
# the path for when the script is run some other way than by its path.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import zmanager_keys  # noqa: E402
from zmanager_keys import SetupError  # noqa: E402

PROTOCOL_VERSION = 1
# The name the node's `[services]` mapping gives the steps to
# (`?Review?moderate = moderator`); with keys, the id the key is listed under.
SERVICE = "moderator"
# The service's own reply topic (protocol.md §6). Answers name it as their
# reply_to: with keys it is the only one the node takes on an answer.
REPLY_TO = f"@reply~{SERVICE}~"
NIL = msgpack.packb(None)  # b"\xc0": the payload of a ping
PING_EVERY_S = 0.1
TAKE_EVERY_S = 1.0  # well inside the node's service_liveness (10 s)
LINGER_MS = 2000  # how long close() may wait for the last answers and take
# How many answers are kept, to answer a step given again the same way.
REMEMBERED = 10_000
ACTION_FAILED = {"code": 7, "name": "action_failed"}
BAD_REQUEST = {"code": 6, "name": "bad_request"}


class Parser(argparse.ArgumentParser):
    """argparse, with usage errors on exit status 3 (2 means "no ping")."""

    def error(self, message):
        self.print_usage(sys.stderr)
        self.exit(3, f"{self.prog}: error: {message}\n")


class Stop(Exception):
    """SIGTERM: stop as on Ctrl-C."""


def now_us():
    """Microseconds since the Unix epoch (the envelope's created_us)."""
    return time.time_ns() // 1000


def pack(fields):
    """An envelope: a MessagePack map with string keys."""
    return msgpack.packb({"v": PROTOCOL_VERSION, "service": SERVICE,
                          "created_us": now_us(), **fields})


def decode(frames):
    """(topic, envelope dict, raw payload) of published frames, or None when
    they are not [topic, envelope map, payload]."""
    if len(frames) != 3:
        return None
    topic, raw_envelope, raw_payload = frames
    try:
        env = msgpack.unpackb(raw_envelope, raw=False)
    except Exception:  # noqa: BLE001 - any decoding failure means "not ours"
        return None
    if not isinstance(env, dict):
        return None
    return topic.decode("utf-8", "replace"), env, raw_payload


def moderate(raw_payload):
    """The answer to a Review text: (payload bytes, None) to approve it,
    (payload bytes, error map) to refuse it (the error answer carries the
    text back, as an action's error result carries what it received)."""
    try:
        text = msgpack.unpackb(raw_payload, raw=False)
    except Exception as e:  # noqa: BLE001
        return raw_payload, {**BAD_REQUEST, "message": f"a Review payload is a string: {e}"}
    if not isinstance(text, str):
        kind = type(text).__name__
        return raw_payload, {**BAD_REQUEST, "message": f"a Review payload is a string, not {kind}"}
    if "spam" in text:
        return raw_payload, {**ACTION_FAILED, "message": "refused by the moderator"}
    return msgpack.packb(f"{text} (approved)"), None


def answer_frames(step, raw_payload):
    """The answer to a step (protocol.md §7a, §7c point 4): kind result, the
    step's id, origin its service; our own service and reply_to."""
    payload, error = moderate(raw_payload)
    fields = {
        "kind": "result",
        "id": step.get("id", ""),
        "origin": step.get("service", ""),
        "flow": step.get("flow", ""),
        "reply_to": REPLY_TO,
    }
    if error is not None:
        fields["status"] = "error"
        fields["error"] = error
    return [b"~", pack(fields), payload]


def send_take(push, topic, credits, take_id):
    """A take (§7c point 2): this instance holds `credits` steps at once, on
    `topic`. Sent again every TAKE_EVERY_S; a take of 0 stops it."""
    env = pack({"kind": "take", "id": take_id, "reply_to": topic})
    push.send_multipart([b"~", env, msgpack.packb(credits)])


def handshake(push, sub, instance, ping_to, timeout_s, why):
    """Pings (reply_to `ping_to`) until one comes back (§6). Returns None,
    or why it failed."""
    poller = zmq.Poller()
    poller.register(sub, zmq.POLLIN)
    deadline = time.monotonic() + timeout_s
    next_ping = 0.0
    sent = 0
    while True:
        now = time.monotonic()
        if now >= deadline:
            return f"no ping came back on {ping_to!r} within {timeout_s:g} s ({sent} sent): {why}"
        if now >= next_ping:
            env = pack({"kind": "ping", "id": f"{instance}-ping-{sent}", "reply_to": ping_to})
            try:
                push.send_multipart([b"~", env, NIL], flags=zmq.NOBLOCK)
                sent += 1
            except zmq.Again:
                pass  # the intake pushes back; try again at the next tick
            next_ping = now + PING_EVERY_S
        wait_ms = max(0, int(1000 * (min(next_ping, deadline) - time.monotonic())))
        if not dict(poller.poll(wait_ms)):
            continue
        decoded = decode(sub.recv_multipart())
        if decoded is None:
            continue
        got_topic, env, _ = decoded
        if env.get("kind") == "ping" and got_topic == ping_to:
            return None
        if env.get("status") == "error" and got_topic == ping_to:
            error = env.get("error") or {}
            return (f"the node refused the ping: {error.get('code')} "
                    f"{error.get('name')}: {error.get('message')}")


def main():
    parser = Parser(description=__doc__.splitlines()[0])
    parser.add_argument("--intake", default="tcp://127.0.0.1:19030",
                        help="the node's intake endpoint (PUSH here)")
    parser.add_argument("--publish", default="tcp://127.0.0.1:19034",
                        help="the node's publish endpoint (SUBscribe here)")
    parser.add_argument("--credits", type=int, default=16,
                        help="steps this instance holds at once (default 16)")
    parser.add_argument("--count", type=int,
                        help="stop after answering this many steps (default: run until Ctrl-C)")
    parser.add_argument("--timeout", type=float, default=10.0,
                        help="seconds for the ping handshake (default 10)")
    parser.add_argument("--key-file", metavar="PATH",
                        help="this service's key pair, the .key file `zmanager keys new` writes "
                             "(listed under id `moderator` in the node's [security])")
    parser.add_argument("--server-key", metavar="KEY_OR_PATH",
                        help="the node's public key in Z85, or its .pub file "
                             "(a key that begins with - is given as --server-key=KEY)")
    args = parser.parse_args()
    if args.credits < 1:
        parser.error("--credits must be 1 or more")
    if args.count is not None and args.count < 1:
        parser.error("--count must be 1 or more")
    try:
        keys = zmanager_keys.curve_keys(args.key_file, args.server_key)
    except SetupError as e:
        parser.error(str(e))

    # One topic per instance, under the service's reply topic (§7c point 1).
    instance = f"{SERVICE}-{secrets.token_hex(4)}"
    topic = f"{REPLY_TO}steps-{instance[len(SERVICE) + 1:]}~"
    # The ping proves the subscription is live (§6). Without keys it comes
    # back on the instance topic itself. With keys, the node takes no other
    # reply_to on a ping than the service's own `@reply~moderator~` (code 19
    # otherwise): subscribe to that too, after the instance topic (the node
    # applies a connection's subscriptions in order, so the echo proves
    # both), and drop it once the echo is in: it also matches the other
    # instances' topics.
    ping_to = topic if keys is None else REPLY_TO

    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    zmanager_keys.apply(sub, keys)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, topic.encode())
    if ping_to != topic:
        sub.setsockopt(zmq.SUBSCRIBE, ping_to.encode())
    sub.connect(args.publish)
    push = ctx.socket(zmq.PUSH)
    zmanager_keys.apply(push, keys)
    push.setsockopt(zmq.LINGER, LINGER_MS)
    push.connect(args.intake)

    def on_sigterm(_signum, _frame):
        raise Stop()

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        return run(args, keys, instance, topic, ping_to, push, sub)
    except (KeyboardInterrupt, Stop):
        return 0
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        push.close()  # waits up to LINGER_MS for the last messages to go out
        sub.close()
        ctx.term()


def run(args, keys, instance, topic, ping_to, push, sub):
    if keys is None:
        why = ("is `zmanager up` running, and are the endpoints right? (A node "
               "with [security] takes only clients with keys: --key-file, --server-key.)")
    else:
        why = (f"the node may have refused the keys: is the public key of "
               f"{args.key_file} ({keys[1]}) listed in the node's [security] with id "
               f"{SERVICE!r}, and is --server-key the node's public key?")
    failure = handshake(push, sub, instance, ping_to, args.timeout, why)
    if failure:
        push.setsockopt(zmq.LINGER, 0)  # the queued pings are of no use now
        print(failure, file=sys.stderr)
        return 2
    if ping_to != topic:
        sub.setsockopt(zmq.UNSUBSCRIBE, ping_to.encode())

    takes = 0
    # (origin, id) -> the answer's frames, to answer a step given again the
    # same way (§7c: the same step may come more than once).
    answers = collections.OrderedDict()
    answered = 0  # distinct steps answered
    poller = zmq.Poller()
    poller.register(sub, zmq.POLLIN)
    try:
        next_take = 0.0
        while args.count is None or answered < args.count:
            if time.monotonic() >= next_take:
                send_take(push, topic, args.credits, f"{instance}-take-{takes}")
                if takes == 0:
                    print(f"moderator: taking up to {args.credits} steps at once on {topic!r}",
                          file=sys.stderr, flush=True)
                takes += 1
                next_take = time.monotonic() + TAKE_EVERY_S
            wait_ms = max(0, int(1000 * (next_take - time.monotonic())))
            if not dict(poller.poll(wait_ms)):
                continue
            decoded = decode(sub.recv_multipart())
            # Only what comes on this instance's own topic is for it.
            if decoded is None or decoded[0] != topic:
                continue
            _, env, raw_payload = decoded
            kind = env.get("kind")
            if kind == "step":
                key = (env.get("service", ""), env.get("id", ""))
                print(f"step {key[0]} {key[1]}", flush=True)
                frames = answers.get(key)
                if frames is None:
                    frames = answer_frames(env, raw_payload)
                    answers[key] = frames
                    answered += 1
                    if len(answers) > REMEMBERED:
                        answers.popitem(last=False)
                push.send_multipart(frames)
            elif kind == "result" and env.get("status") == "error":
                # A refused take comes back here, on the topic it named.
                error = env.get("error") or {}
                print(f"the node refused {env.get('id')!r}: {error.get('code')} "
                      f"{error.get('name')}: {error.get('message')}", file=sys.stderr)
                if str(env.get("id", "")).startswith(f"{instance}-take-"):
                    return 1
            # Anything else (a late ping echo) is not for this loop.
        return 0
    finally:
        # The steps it still held go to the other instances (or wait).
        send_take(push, topic, 0, f"{instance}-take-{takes}")


if __name__ == "__main__":
    sys.exit(main())
