#!/usr/bin/env python3
"""Use a zmanager node over HTTP with nothing but `requests`.

It follows docs/http.md:

1. POST a request into the `Greeting` flow with `?wait=10s`: the answer is
   its result;
2. POST one without `wait`, with an Idempotency-Key: the answer is 202 once
   the node has taken it (journaled), with a Location to poll; poll it to its
   result;
3. POST the same key again: the node does not run it again, it answers with
   the same result;
4. print the request's journey (every step of its life the journal recorded);
5. POST into a flow that does not exist: a 404 with the stable error code.

With keys (a node with `[security]`), give the service's bearer token
(`zmanager keys token ada` makes `ada.token`): --token-file ada.token.

Exit status: 0 everything as described; 1 an answer that was not; 2 the node
did not answer at all (is `zmanager up` running?).

    python3 examples/python/http_quickstart.py [--url http://127.0.0.1:19080]
        [--token-file ada.token] [--name ada]
"""

import argparse
import sys
import time
import uuid

import requests


def fail(message):
    print(f"unexpected: {message}", file=sys.stderr)
    sys.exit(1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:19080")
    parser.add_argument("--token-file")
    parser.add_argument("--name", default="ada")
    args = parser.parse_args()

    session = requests.Session()
    if args.token_file:
        with open(args.token_file, encoding="utf-8") as f:
            session.headers["Authorization"] = f"Bearer {f.read().strip()}"
    base = args.url.rstrip("/")
    payload = {"name": f"  {args.name} "}

    # 1. A request that waits for its result.
    try:
        answer = session.post(f"{base}/v1/flows/Greeting/requests",
                              params={"wait": "10s"}, json=payload, timeout=30)
    except requests.ConnectionError as e:
        print(f"no node at {base}: {e}", file=sys.stderr)
        sys.exit(2)
    if answer.status_code != 200:
        fail(f"{answer.status_code} {answer.text}")
    print("with wait:", answer.json()["result"])

    # 2. A request taken now, its result polled.
    key = f"py-{uuid.uuid4().hex[:12]}"
    answer = session.post(f"{base}/v1/flows/Greeting/requests", json=payload,
                          headers={"Idempotency-Key": key}, timeout=30)
    if answer.status_code != 202:
        fail(f"{answer.status_code} {answer.text}")
    location = answer.headers["Location"]
    print("taken:", answer.json()["state"], "at", location)
    deadline = time.monotonic() + 20
    while True:
        state = session.get(f"{base}{location}", timeout=30)
        body = state.json()
        if state.status_code == 200 and body.get("status") == "ok":
            result = body["result"]
            print("polled:", result)
            break
        if time.monotonic() > deadline:
            fail(f"no result after 20 s: {state.status_code} {state.text}")
        time.sleep(0.05)

    # 3. The same key again: the same result, not a second run.
    again = session.post(f"{base}/v1/flows/Greeting/requests", json=payload,
                         params={"wait": "10s"},
                         headers={"Idempotency-Key": key}, timeout=30)
    if again.status_code != 200 or again.json()["result"] != result:
        fail(f"sent again: {again.status_code} {again.text}")
    print("sent again:", again.json()["result"])

    # 4. Its journey (recorded by the journal; 404 when the journal is off).
    # A result can be published a moment before its completion is on disk:
    # ask again until the journey has its end.
    deadline = time.monotonic() + 10
    while True:
        journey = session.get(f"{base}{location}/journey", timeout=30)
        if journey.status_code == 404:
            print("journey: none (the journal is off)")
            break
        if journey.status_code != 200:
            fail(f"journey: {journey.status_code} {journey.text}")
        events = [s["event"] for s in journey.json()["steps"]]
        if events[-1] in ("completed", "dead_lettered") or time.monotonic() > deadline:
            print("journey:", " -> ".join(events))
            break
        time.sleep(0.05)

    # 5. A flow that does not exist.
    missing = session.post(f"{base}/v1/flows/NoSuchFlow/requests",
                           params={"wait": "10s"}, json=payload, timeout=30)
    error = missing.json().get("error", {})
    if missing.status_code != 404 or error.get("name") != "unknown_flow":
        fail(f"unknown flow: {missing.status_code} {missing.text}")
    print("unknown flow:", missing.status_code, error["code"], error["name"])


if __name__ == "__main__":
    main()
