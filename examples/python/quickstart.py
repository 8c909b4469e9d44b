#!/usr/bin/env python3
"""Push requests into a zmanager node's `Greeting` flow and print the results.

A service written with the `zmanager` package (clients/python: `pip install
./clients/python`), which speaks docs/protocol.md for it:

1. `zmanager.Service.connect` picks a service id `py-<16 hex>` (or takes
   --service-id), SUBscribes to its reply topic `@reply~<id>~`, connects a
   PUSH socket to the intake, and pings until the node publishes a ping back
   (ZeroMQ's "slow joiner": the subscription is then live);
2. `service.submit` pushes N requests into the flow `Greeting` (Text.trim ->
   Greeter.greet -> Text.upper), each with the payload {"name": "  ada <n> "},
   asking the node for an "accepted" acknowledgement (docs/protocol.md §7b);
3. each result is printed as it arrives; exit 0 when all N came back ok.

The package sends a request again, with the same id, when no
acknowledgement or result comes in time; the node runs an id once, and the
package hands each result over once (a result published again counts as a
duplicate in the summary).

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
        [--standby INTAKE PUBLISH]...

With --standby (an active node and its standby on one PostgreSQL journal,
docs/deployment.md), the service uses the first node that answers, and moves
to the next when the one in use stops answering.
"""

import argparse
import concurrent.futures
import os
import secrets
import string
import sys
import time

try:
    import zmanager
except ImportError:
    # Not installed: run from a checkout, on the package's source beside
    # this repository's examples (it needs pyzmq and msgpack all the same).
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                    "..", "..", "clients", "python", "src"))
    import zmanager

FLOW = "Greeting"
DRAIN_S = 0.2  # how long to keep listening once every result is in
# A service id: no `~`, so that `@reply~<id>~` keeps its shape (protocol.md §6).
SERVICE_ID_CHARS = set(string.ascii_letters + string.digits + "_-.")


class Parser(argparse.ArgumentParser):
    """argparse, with usage errors on exit status 3 (2 means "no ping")."""

    def error(self, message):
        self.print_usage(sys.stderr)
        self.exit(3, f"{self.prog}: error: {message}\n")


def curve_keys(args):
    """zmanager.CurveKeys from the options, or None without keys; raises
    zmanager.ConfigError (KeyFileError for a key file) saying what is wrong."""
    if (args.key_file is None) != (args.server_key is None):
        given, missing = (("--key-file", "--server-key") if args.server_key is None
                          else ("--server-key", "--key-file"))
        raise zmanager.ConfigError(
            f"{given} needs {missing} too: CURVE takes the service's key pair "
            f"(--key-file) and the node's public key (--server-key)")
    if args.key_file is None:
        return None
    if args.service_id is None:
        raise zmanager.ConfigError(
            "--key-file needs --service-id: the id the node's [security] table "
            "lists this key under")
    if not os.path.isfile(args.server_key) and len(args.server_key.strip()) != 40:
        raise zmanager.ConfigError(
            f"--server-key {args.server_key}: no such file, nor a 40-character Z85 key")
    return zmanager.CurveKeys.from_files(args.key_file, args.server_key)


def main():
    parser = Parser(description=__doc__.splitlines()[0])
    parser.add_argument("--intake", default=zmanager.DEFAULT_INTAKE,
                        help="the node's intake endpoint (PUSH requests here)")
    parser.add_argument("--publish", default=zmanager.DEFAULT_PUBLISH,
                        help="the node's publish endpoint (SUBscribe here)")
    parser.add_argument("--count", type=int, default=3, help="requests to push (default 3)")
    parser.add_argument("--timeout", type=float, default=10.0,
                        help="seconds for the handshake, then for all results (default 10)")
    parser.add_argument("--service-id", metavar="ID",
                        help="a fixed service id (default py-<16 random hex digits>); "
                             "with keys, the id the node's [security] lists the key under")
    parser.add_argument("--key-file", metavar="PATH",
                        help="this service's key pair, the .key file `zmanager keys new` writes")
    parser.add_argument("--server-key", metavar="KEY_OR_PATH",
                        help="the node's public key in Z85, or its .pub file "
                             "(a key that begins with - is given as --server-key=KEY)")
    parser.add_argument("--standby", nargs=2, action="append", default=[],
                        metavar=("INTAKE", "PUBLISH"),
                        help="a standby node's endpoints (docs/deployment.md): the service "
                             "moves to it when the node does not answer; repeatable")
    args = parser.parse_args()
    if args.count < 0:
        parser.error("--count must be 0 or more")
    if args.timeout <= 0:
        parser.error("--timeout must be more than 0")
    if args.service_id is not None and (
        not args.service_id or not set(args.service_id) <= SERVICE_ID_CHARS
    ):
        parser.error("--service-id: use letters, digits, `_`, `-` and `.`")
    try:
        keys = curve_keys(args)
    except zmanager.ConfigError as e:
        parser.error(str(e))

    # Without --service-id the id is `py-<16 hex>`, new each run. With it,
    # the request ids still carry a random part new each run (the
    # package's session, `<id>-<16 hex>`): the node runs a service's id
    # once, and a request pushed again with an id it finished less than a
    # minute ago (dedupe_window) gets the old result back instead of
    # running (protocol.md §8).
    name = args.service_id or "py"

    if keys is None:
        why = ("is `zmanager up` running, and are the endpoints right? (A node "
               "with [security] takes only clients with keys: --key-file, --server-key.)")
    else:
        why = (f"the node may have refused the keys. Is the public key of "
               f"{args.key_file} ({keys.public}) listed in the node's [security] "
               f"with id {args.service_id!r}, and is --server-key the node's public key? "
               f"(The node logs \"refused a connection\" with a key it does not know.) "
               f"Or is `zmanager up` not running, or are the endpoints wrong?")
    try:
        service = zmanager.Service.connect(
            args.intake, args.publish, name=name, service_id=args.service_id, keys=keys,
            handshake_timeout=args.timeout, standbys=[tuple(s) for s in args.standby],
        )
    except zmanager.ConfigError as e:
        parser.error(str(e))
    except zmanager.HandshakeError as e:
        # zmanager.CurveHandshakeError when the socket monitor saw the CURVE
        # handshake fail; a refused key is not told to the client otherwise.
        print(f"{e}\n{why}", file=sys.stderr)
        return 2
    with service:
        ids = "" if args.service_id is None else f", request ids {service.session}-<n>"
        print(f"service {service.id}, results on {service.reply_to!r}{ids}")
        if keys is not None:
            print(f"CURVE: node key {keys.server}, this service's public key {keys.public}")
        print(f"subscribed: the node answered the ping; pushing {args.count} request(s)")
        return run(args, service)


def run(args, service):
    submissions = [service.submit(FLOW, {"name": f"  ada {n} "}) for n in range(args.count)]
    by_future = {s.future: s for s in submissions}
    failed = 0
    deadline = time.monotonic() + args.timeout
    pending = set(by_future)
    while pending:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        done, pending = concurrent.futures.wait(
            pending, timeout=left, return_when=concurrent.futures.FIRST_COMPLETED)
        for future in done:
            submission = by_future[future]
            try:
                result = future.result()
                print(f"{submission.id} ok {result.payload!r}")
            except zmanager.RequestFailed as e:
                failed += 1
                print(f"{submission.id} error {e.code} {e.name}: {e.message} "
                      f"(step {e.step} {e.key!r}, payload {e.payload!r})")
            except zmanager.ZmanagerError as e:
                failed += 1
                print(f"{submission.id} {e}")
    # Everything is here (or the time is up): listen a little longer, to
    # count a duplicate or unexpected message instead of missing it.
    time.sleep(DRAIN_S)
    accepted = sum(1 for s in submissions if s.accepted_future.done()
                   and s.accepted_future.exception() is None)
    missing = [s.id for s in submissions if not s.done]
    results = len(submissions) - len(missing)
    stats = service.stats
    print(
        f"{results}/{len(submissions)} result(s), {accepted} accepted, "
        f"{failed} error(s), {stats.duplicates} duplicate(s), {stats.unexpected} unexpected, "
        f"{stats.malformed} malformed"
    )
    if missing:
        print(f"missing after {args.timeout:g} s: {', '.join(missing)}", file=sys.stderr)
        for s in submissions:
            s.cancel()
    return 0 if not missing and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
