#!/usr/bin/env python3
"""A durable subscriber: print what a zmanager node kept for it, in order.

pyzmq and msgpack only, written from docs/protocol.md §7d (and §6 for the
handshake); docs/durable.md says what is promised. The node keeps what it
publishes on the PREFIXES under the subscription's name, owned by service
--service-id, until the subscriber acknowledges it; a subscriber that comes
back under the name gets first what it missed, then what comes. The Rust
twin is `Service::subscribe_durable` (clients/rust/src/service/durable.rs).

1. SUBscribe to the subscription's topic `@reply~ID~durable-NAME~` and
   connect a PUSH socket to the intake;
2. ping until a ping comes back (protocol.md §6). With keys the ping goes
   to the service's own `@reply~ID~`, the only reply_to the node takes on
   a ping then (as moderator.py does);
3. send a `subscribe` {name, prefixes, window} and wait for the node's
   `accepted` on the topic: its payload is the sequence number acknowledged
   so far, and the deliveries go on after it; its envelope's `accepted_us`
   says when the node made the subscription. It says so on stderr;
4. print one line per delivery on stdout, `SEQ TOPIC ID` (the sequence
   number, the topic the message was published on, its id), flushed, and
   `ack` it. A number it printed already is skipped; a number missing (a
   delivery lost on the way, or dropped by the node's retention) makes it
   send the subscribe again, once, until the next one in order comes;
5. send the subscribe again when nothing at all came on the topic for
   RESUBSCRIBE_IDLE_S (2 s), and when the node refuses an ack (once, until
   the next `accepted`; with keys a refusal goes to `@reply~ID~`, not
   heard then, and the quiet tells instead): the node keeps subscriptions
   in memory, one that restarted has lost this one, and libzmq reconnects
   without a word. An `accepted` whose `accepted_us` is not the one it had
   is a subscription the node made afresh, numbered from 1 again: it goes
   on from that accepted's number, and says so on stderr;
6. after --count messages, or on Ctrl-C (or SIGTERM), make sure the last
   ack reached the node (a ping's round trip behind it: the node takes one
   PUSH connection's messages in order), say so on stderr, and exit 0.

    python3 examples/python/durable.py --service-id audit --name log \
        'Greeting~~~~done'

With keys (a node with `[security]`, docs/security.md), the key must be the
one listed under --service-id, and the prefixes ones it may read:

    python3 examples/python/durable.py --service-id audit --name log \
        --key-file audit.key --server-key node.pub 'Greeting~~~~done'

Exit status: 0 stopped (Ctrl-C, SIGTERM, or --count messages printed); 1 the
node refused the subscribe, or the last ack as it exits (its error is
printed); 2 the node did not answer the ping, the subscribe or the last
ping in time; 3 a wrong option or key file.

    python3 examples/python/durable.py --service-id ID --name NAME
        [--intake tcp://127.0.0.1:19030] [--publish tcp://127.0.0.1:19034]
        [--window 100] [--count N] [--timeout 10]
        [--key-file ID.key --server-key node.pub] PREFIX [PREFIX ...]
"""

import argparse
import os
import secrets
import signal
import string
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
NIL = msgpack.packb(None)  # b"\xc0": the payload of a ping
PING_EVERY_S = 0.1
# Nothing at all on the subscription's topic this long, while waiting for
# deliveries: send the subscribe again. A node that restarted has lost the
# subscription and sends nothing, and libzmq reconnects without a word;
# the accepted that answers says whether the subscription is the same.
RESUBSCRIBE_IDLE_S = 2.0
LINGER_MS = 2000  # how long close() may wait for the last acks
# A service id or a durable name: no `~`, so that the topics keep their
# shape (protocol.md §6, §7d).
NAME_CHARS = set(string.ascii_letters + string.digits + "_-.")
MAX_WINDOW = 2**32 - 1  # the subscribe's window is a uint32


class Parser(argparse.ArgumentParser):
    """argparse, with usage errors on exit status 3 (2 means "no answer")."""

    def error(self, message):
        self.print_usage(sys.stderr)
        self.exit(3, f"{self.prog}: error: {message}\n")


class Stop(BaseException):
    """Ctrl-C or SIGTERM: acknowledge, flush and exit 0. A BaseException,
    as KeyboardInterrupt is: no `except Exception` swallows it."""


class Refused(Exception):
    """The node refused the subscribe, or an ack as it exits (exit status 1)."""


def now_us():
    """Microseconds since the Unix epoch (the envelope's created_us)."""
    return time.time_ns() // 1000


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


def refusal(env):
    """What refused what, from an error result: the id of what it refuses
    says its kind (`…-ack-7`), and the error its code, name and message."""
    error = env.get("error") or {}
    return (f"the node refused {env.get('id')!r}: {error.get('code')} "
            f"{error.get('name')}: {error.get('message')}")


class Subscriber:
    """One durable subscription's sockets and state."""

    def __init__(self, args, keys, push, sub):
        self.args = args
        self.service = args.service_id
        self.name = args.name
        self.own = f"@reply~{self.service}~"
        # The subscription's topic (§7d point 1): under the service's reply
        # topic, ending in `~` so that no other name's topic starts with it.
        self.topic = f"{self.own}durable-{self.name}~"
        # Without keys a ping comes back on the subscription's topic itself.
        # With keys the node takes no other reply_to on a ping (nor on an
        # ack) than the service's own `@reply~ID~` (code 19 otherwise): a
        # subscribe alone may name a topic under it.
        self.ping_to = self.topic if keys is None else self.own
        self.ack_to = self.topic if keys is None else self.own
        self.keys = keys
        self.push = push
        self.sub = sub
        self.run_id = f"{self.service}-durable-{self.name}-{secrets.token_hex(4)}"
        self.sent = 0  # messages sent, for their ids
        self.last = 0  # the last sequence number printed (or acknowledged before)
        self.acked = 0  # the last sequence number acknowledged
        self.acks = 0  # acks this run sent
        # When the node made the subscription (the accepted's accepted_us):
        # another value is another subscription, numbered from 1 again.
        self.made = None
        self.resyncing = False
        # An ack was refused and the subscribe sent again: until the next
        # accepted, the other acks refused say the same.
        self.asking_again = False
        self.poller = zmq.Poller()
        self.poller.register(sub, zmq.POLLIN)

    def send(self, kind, reply_to, payload):
        """An intake message [topic, envelope, payload]; returns its id."""
        message_id = f"{self.run_id}-{kind}-{self.sent}"
        self.sent += 1
        env = msgpack.packb({"v": PROTOCOL_VERSION, "kind": kind, "id": message_id,
                             "service": self.service, "reply_to": reply_to,
                             "created_us": now_us()})
        self.push.send_multipart([b"~", env, payload])
        return message_id

    def send_subscribe(self):
        payload = {"name": self.name, "prefixes": self.args.prefixes,
                   "window": self.args.window}
        return self.send("subscribe", self.topic, msgpack.packb(payload))

    def send_ack(self, seq):
        self.send("ack", self.ack_to, msgpack.packb({"name": self.name, "seq": seq}))
        self.acked = seq
        self.acks += 1

    def ours(self, env, kind=""):
        """True when a message the node sent back is about one of this
        run's (of `kind`, such as "ack", when given): the ids carry run_id
        and the kind. (Another process of the service, or under the same
        name, hears the same topics.)"""
        prefix = f"{self.run_id}-{kind}-" if kind else f"{self.run_id}-"
        return str(env.get("id", "")).startswith(prefix)

    def ping_round_trip(self, what, why):
        """Pings every PING_EVERY_S until one of these pings comes back on
        ping_to (§6). Everything pushed before the ping has then reached the
        node. Returns None, or why it failed."""
        # With keys the pings come back on the service's own topic, which
        # matches the service's results and its other subscriptions too:
        # subscribed to only while pinging. The node applies a connection's
        # subscriptions in order, so the echo proves both are live.
        if self.ping_to != self.topic:
            self.sub.setsockopt(zmq.SUBSCRIBE, self.ping_to.encode())
        try:
            prefix = f"{self.run_id}-ping-{what}-"
            deadline = time.monotonic() + self.args.timeout
            next_ping = 0.0
            pings = 0
            while True:
                now = time.monotonic()
                if now >= deadline:
                    return (f"no {what} ping came back on {self.ping_to!r} within "
                            f"{self.args.timeout:g} s ({pings} sent): {why}")
                if now >= next_ping:
                    env = msgpack.packb({"v": PROTOCOL_VERSION, "kind": "ping",
                                         "id": f"{prefix}{pings}", "service": self.service,
                                         "reply_to": self.ping_to, "created_us": now_us()})
                    try:
                        self.push.send_multipart([b"~", env, NIL], flags=zmq.NOBLOCK)
                        pings += 1
                    except zmq.Again:
                        pass  # the intake pushes back; try again at the next tick
                    next_ping = now + PING_EVERY_S
                wait_ms = max(0, int(1000 * (min(next_ping, deadline) - time.monotonic())))
                if not dict(self.poller.poll(wait_ms)):
                    continue
                decoded = decode(self.sub.recv_multipart())
                if decoded is None or decoded[0] != self.ping_to:
                    continue  # a delivery: it comes again after the next subscribe
                _, env, _ = decoded
                ours = str(env.get("id", "")).startswith(prefix)
                if env.get("kind") == "ping" and ours:
                    return None
                if env.get("status") == "error" and self.ours(env):
                    if ours:
                        return refusal(env)
                    raise Refused(refusal(env))  # an ack pushed before the ping
        finally:
            if self.ping_to != self.topic:
                self.sub.setsockopt(zmq.UNSUBSCRIBE, self.ping_to.encode())

    def wait_accepted(self):
        """Sends the subscribe and waits for the node's `accepted` on the
        topic (§7d point 2). Returns None, or why it did not come; raises
        Refused when the node refused it."""
        sent = self.send_subscribe()
        deadline = time.monotonic() + self.args.timeout
        while True:
            wait_ms = int(1000 * (deadline - time.monotonic()))
            if wait_ms <= 0 or not dict(self.poller.poll(wait_ms)):
                return (f"the node did not answer the subscribe {sent!r} within "
                        f"{self.args.timeout:g} s")
            decoded = decode(self.sub.recv_multipart())
            # Deliveries before it (on `TOPIC SEQ~…`) were sent before the
            # subscribe was taken: they come again after the accepted.
            if decoded is None or decoded[0] != self.topic:
                continue
            _, env, raw_payload = decoded
            # The answer is the subscribe's envelope, its kind "accepted".
            if env.get("kind") == "accepted" and env.get("id") == sent:
                self.last = self.acked = self.acked_in(raw_payload)
                self.made = env.get("accepted_us")
                return None
            if env.get("status") == "error" and self.ours(env):
                raise Refused(refusal(env))
            # Anything else (a late ping echo) is not the answer.

    def on_accepted(self, env, raw_payload):
        """The answer to a subscribe sent again (§7d point 2)."""
        acked = self.acked_in(raw_payload)
        made = env.get("accepted_us")
        if made != self.made:
            # Not the subscription this run had: the node lost that one
            # (it restarted) and made this one afresh, numbered from 1
            # again. What the new one had acknowledged is where it goes
            # on, even below what was printed.
            self.made = made
            self.last = self.acked = acked
            print("durable: the node made the subscription afresh (did it restart?); "
                  f"going on from {acked}", file=sys.stderr, flush=True)
        else:
            # Deliveries go on after what the node has acknowledged, past
            # what its retention dropped meanwhile.
            self.last = max(self.last, acked)
        self.resyncing = False
        self.asking_again = False

    @staticmethod
    def acked_in(raw_payload):
        """The payload of the node's `accepted`: the sequence number
        acknowledged so far, a MessagePack unsigned integer."""
        try:
            acked = msgpack.unpackb(raw_payload)
        except Exception:  # noqa: BLE001
            acked = None
        if not isinstance(acked, int) or isinstance(acked, bool) or acked < 0:
            raise Refused(f"an accepted whose payload is not a sequence number: {raw_payload!r}")
        return acked

    def parse(self, topic):
        """(seq, original topic) of a delivery's topic, `TOPIC SEQ ~ ORIGINAL`
        (§7d point 3), or None when it is not one."""
        if not topic.startswith(self.topic):
            return None
        seq, tilde, original = topic[len(self.topic):].partition("~")
        if not tilde or not (seq.isascii() and seq.isdigit()):
            return None
        return int(seq), original

    def deliveries(self):
        """Prints and acknowledges each delivery once, in order, until
        --count of them (or forever)."""
        printed = 0
        idle_until = time.monotonic() + RESUBSCRIBE_IDLE_S
        while self.args.count is None or printed < self.args.count:
            wait_ms = int(1000 * (idle_until - time.monotonic()))
            if wait_ms <= 0 or not dict(self.poller.poll(wait_ms)):
                if time.monotonic() >= idle_until:
                    # Nothing at all for a while: has the node still
                    # got the subscription? Its accepted says (on_accepted).
                    self.send_subscribe()
                    idle_until = time.monotonic() + RESUBSCRIBE_IDLE_S
                continue
            idle_until = time.monotonic() + RESUBSCRIBE_IDLE_S
            decoded = decode(self.sub.recv_multipart())
            if decoded is None:
                continue
            topic, env, raw_payload = decoded
            delivery = self.parse(topic)
            if delivery is None:
                # Go by the topic, not by the envelope: a delivery's is the
                # published message's own (an error result's status is
                # "error"). Only what comes on the topic itself is the
                # node's word to this subscriber.
                if topic != self.topic or not self.ours(env):
                    continue
                if env.get("kind") == "accepted":
                    self.on_accepted(env, raw_payload)
                elif env.get("status") == "error" and self.ours(env, "ack"):
                    # The node has no subscription under the name: it
                    # restarted (or the subscription was deleted). Once:
                    # the acks on the way are refused too.
                    if not self.asking_again:
                        print(f"durable: {refusal(env)}; subscribing again",
                              file=sys.stderr, flush=True)
                        self.asking_again = True
                        self.send_subscribe()
                elif env.get("status") == "error":
                    raise Refused(refusal(env))
                continue  # a late ping echo
            seq, original = delivery
            if seq <= self.last:
                continue  # sent again after a subscribe: printed already
            if seq > self.last + 1:
                # One went missing on the way: the node sends again all it
                # has not had acknowledged, in order. Once: the rest of what
                # was on the way has the same gap.
                if not self.resyncing:
                    print(f"durable: got {seq} after {self.last}; subscribing again",
                          file=sys.stderr, flush=True)
                    self.resyncing = True
                    self.send_subscribe()
                continue
            # Printed, then counted as printed: stopped in between, it is
            # not acknowledged and comes again next time (at least once).
            print(f"{seq} {original} {env.get('id', '')}", flush=True)
            self.last = seq
            self.resyncing = False
            self.send_ack(seq)
            printed += 1

    def finish(self):
        """The last ack, and a ping's round trip behind it. Returns None, or
        why the node may not have it."""
        if self.last > self.acked:
            self.send_ack(self.last)  # printed, then stopped before its ack
        if self.acks == 0:
            return None  # nothing acknowledged in this run
        return self.ping_round_trip(
            "flush", f"the ack of {self.acked} may not have reached the node")


def main():
    parser = Parser(description=__doc__.splitlines()[0])
    parser.add_argument("prefixes", nargs="+", metavar="PREFIX",
                        help="topic prefixes to keep, such as 'Greeting~~~~done' "
                             "(a flow's results)")
    parser.add_argument("--intake", default="tcp://127.0.0.1:19030",
                        help="the node's intake endpoint (PUSH here)")
    parser.add_argument("--publish", default="tcp://127.0.0.1:19034",
                        help="the node's publish endpoint (SUBscribe here)")
    parser.add_argument("--service-id", metavar="ID", required=True,
                        help="the service the subscription belongs to; with keys, the id "
                             "the node's [security] lists the key under")
    parser.add_argument("--name", required=True,
                        help="the subscription's name: a run under the same name goes on "
                             "where the last one stopped")
    parser.add_argument("--window", type=int, default=100,
                        help="messages delivered and unacknowledged at once (default 100)")
    parser.add_argument("--count", type=int,
                        help="stop after printing this many messages (default: until Ctrl-C)")
    parser.add_argument("--timeout", type=float, default=10.0,
                        help="seconds for the ping handshake, for the node's accepted, "
                             "and for the last ping (default 10)")
    parser.add_argument("--key-file", metavar="PATH",
                        help="this service's key pair, the .key file `zmanager keys new` writes")
    parser.add_argument("--server-key", metavar="KEY_OR_PATH",
                        help="the node's public key in Z85, or its .pub file "
                             "(a key that begins with - is given as --server-key=KEY)")
    args = parser.parse_args()
    for option, value in (("--service-id", args.service_id), ("--name", args.name)):
        if not value or not set(value) <= NAME_CHARS:
            parser.error(f"{option}: use letters, digits, `_`, `-` and `.`")
    if not 1 <= args.window <= MAX_WINDOW:
        parser.error(f"--window must be 1 to {MAX_WINDOW}")
    if args.count is not None and args.count < 1:
        parser.error("--count must be 1 or more")
    if args.timeout <= 0:
        parser.error("--timeout must be more than 0")
    try:
        keys = zmanager_keys.curve_keys(args.key_file, args.server_key)
    except SetupError as e:
        parser.error(str(e))

    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    zmanager_keys.apply(sub, keys)  # before connect
    sub.setsockopt(zmq.LINGER, 0)
    push = ctx.socket(zmq.PUSH)
    zmanager_keys.apply(push, keys)
    push.setsockopt(zmq.LINGER, LINGER_MS)
    subscriber = Subscriber(args, keys, push, sub)
    sub.setsockopt(zmq.SUBSCRIBE, subscriber.topic.encode())
    sub.connect(args.publish)
    push.connect(args.intake)

    def on_signal(_signum, _frame):
        # Once: a second Ctrl-C while the last ack is flushed ends it at once.
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise Stop()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        return run(subscriber)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        push.close()  # waits up to LINGER_MS for the last messages to go out
        sub.close()
        ctx.term()


def run(subscriber):
    args, keys = subscriber.args, subscriber.keys
    if keys is None:
        why = ("is `zmanager up` running, and are the endpoints right? (A node "
               "with [security] takes only clients with keys: --key-file, --server-key.)")
    else:
        why = (f"the node may have refused the keys: is the public key of "
               f"{args.key_file} ({keys[1]}) listed in the node's [security] with id "
               f"{subscriber.service!r}, and is --server-key the node's public key?")
    try:
        failure = subscriber.ping_round_trip("handshake", why)
        if failure is None:
            failure = subscriber.wait_accepted()
    except Stop:
        return 0  # nothing printed, nothing to acknowledge
    except Refused as e:
        print(e, file=sys.stderr)
        return 1
    if failure:
        subscriber.push.setsockopt(zmq.LINGER, 0)  # the queued pings are of no use now
        print(failure, file=sys.stderr)
        return 2
    print(f"durable: subscribed as {subscriber.name!r} of {subscriber.service!r} to "
          f"{' '.join(args.prefixes)}, acknowledged so far {subscriber.last}; "
          f"deliveries on {subscriber.topic!r}", file=sys.stderr, flush=True)

    status = 0
    try:
        subscriber.deliveries()
    except Stop:
        pass
    except Refused as e:
        print(e, file=sys.stderr)
        status = 1
    try:
        failure = subscriber.finish()
    except Refused as e:  # an ack refused while flushing
        print(e, file=sys.stderr)
        return 1
    except Stop:  # Ctrl-C or SIGTERM while flushing
        print(f"durable: stopped before the node confirmed the ack of {subscriber.acked}",
              file=sys.stderr)
        return 2
    if failure:
        print(failure, file=sys.stderr)
        return 2 if status == 0 else status
    if subscriber.acks:
        print(f"durable: the node has the ack of {subscriber.acked}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
