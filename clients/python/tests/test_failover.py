"""An active node and a standby on one PostgreSQL journal
(docs/deployment.md, "Active and standby on PostgreSQL"): a service given
both nodes moves to the standby by itself when the active node is killed,
and every request it submitted is answered, once; its subscription moves
with it.

Needs ``ZMANAGER_TEST_POSTGRES_URL``, a fresh database of a PostgreSQL
server (tests/tests/python_client.rs makes one on a private server of its
own); without it the test is skipped, except under CI, where it fails."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import zmanager
from conftest import Node, record_lines, wait_until


def postgres_url() -> str:
    url = os.environ.get("ZMANAGER_TEST_POSTGRES_URL")
    if not url:
        message = ("ZMANAGER_TEST_POSTGRES_URL is not set: a PostgreSQL database for the "
                   "failover test (tests/tests/python_client.rs sets it)")
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return url


def test_a_service_given_both_nodes_moves_to_the_standby_by_itself(workdir: Path) -> None:
    journal = ("[journal]\nbackend = \"postgres\"\n"
               f"url = {json.dumps(postgres_url())}\nlease = \"1s\"\nstandby = true\n")
    nodes = []
    for name in ("active", "standby"):
        (workdir / name).mkdir()
        nodes.append(Node(workdir / name, extra=journal))
    active, standby = nodes
    active.start()
    standby.spawn()  # waits for the lease, listening on nothing
    log = workdir / "record.log"
    try:
        with zmanager.Service.connect(active.intake, active.publish,
                                      standbys=[(standby.intake, standby.publish)],
                                      retry_after=1.0, ack_after=0.5,
                                      handshake_timeout=3.0) as service:
            announced = service.subscribe(["Announce~PUBLISH~"])
            service.request("Announce", "before", timeout=30)
            assert announced.next(timeout=10).payload == "before"
            payloads = [{"log": str(log), "key": "failover", "seq": n, "sleep_ms": 100}
                        for n in range(40)]
            submissions = [service.submit("Record", p) for p in payloads]
            wait_until(lambda: len(record_lines(log)) >= 5, timeout=30,
                       what="the active node's worker ran some")
            active.kill()  # the node and its worker, mid-work
            standby.ready(timeout=60)  # it took the lease over
            results = [s.finished(timeout=90) for s in submissions]
            assert [r.payload for r in results] == payloads
            assert service.stats.moved >= 1, service.stats
            assert service.stats.results == len(payloads) + 1  # and "before"'s
            assert service.stats.unexpected == 0
            assert service.intake == standby.intake
            # Published by the new active node, on the moved subscription.
            service.request("Announce", "after", timeout=30)
            got = announced.next(timeout=10)
            assert (got.topic, got.payload) == ("Announce~PUBLISH~Subject~Announce~announced",
                                                "after")
    finally:
        standby.stop()
        active.kill()
    assert "journal: this node holds the lease" in standby.log(), standby.log()
