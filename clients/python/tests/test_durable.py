"""Durable subscriptions (§7d): what is published while the subscriber is
away is kept for it, delivered once and in order; across a restart of the
node (which keeps subscriptions in memory) it goes on afresh."""

from __future__ import annotations

from typing import List

import pytest

import zmanager
from conftest import Node, wait_until


def connect(node: Node, **options) -> zmanager.Service:  # type: ignore[no-untyped-def]
    return zmanager.Service.connect(node.intake, node.publish, **options)


def announce(service: zmanager.Service, texts: List[str]) -> None:
    for text in texts:
        service.request("Announce", text, timeout=30)


def read(durable: zmanager.DurableSubscription, n: int) -> List[zmanager.Delivery]:
    got = [durable.next(timeout=15) for _ in range(n)]
    return got


def test_a_durable_subscriber_gets_what_it_missed_then_what_comes(node: Node) -> None:
    with connect(node, name="pusher") as pusher:
        with connect(node, service_id="audit") as audit:
            durable = audit.subscribe_durable("log", ["Announce~PUBLISH~"])
            assert durable.acked == 0
            assert durable.topic == "@reply~audit~durable-log~"
            announce(pusher, ["one", "two"])
            first = read(durable, 2)
            assert [(d.seq, d.payload) for d in first] == [(1, "one"), (2, "two")]
            assert first[0].original_topic == "Announce~PUBLISH~Subject~Announce~announced"
            durable.ack(first[-1])
            durable.close()  # the node has the ack when this returns
        # Away: these are kept for it.
        announce(pusher, ["three", "four"])
        with connect(node, service_id="audit") as audit:
            durable = audit.subscribe_durable("log", ["Announce~PUBLISH~"])
            assert durable.acked == 2
            later = read(durable, 2)
            assert [(d.seq, d.payload) for d in later] == [(3, "three"), (4, "four")]
            # Not acknowledged: a third process would get them again.
            durable.close()
        with connect(node, service_id="audit") as audit:
            durable = audit.subscribe_durable("log", ["Announce~PUBLISH~"], auto_ack=True)
            again = read(durable, 2)
            assert [d.seq for d in again] == [3, 4]
            with pytest.raises(zmanager.ResultTimeout):
                durable.next(timeout=0.5)  # each once: nothing more
            durable.delete()


def test_after_the_node_restarts_the_subscription_goes_on_afresh(node: Node) -> None:
    with connect(node, name="pusher", retry_after=1.0) as pusher, \
            connect(node, service_id="audit", retry_after=1.0) as audit:
        durable = audit.subscribe_durable("log", ["Announce~PUBLISH~"], auto_ack=True)
        made = durable.made
        announce(pusher, ["one", "two"])
        assert [d.seq for d in read(durable, 2)] == [1, 2]
        node.restart()  # the node kept the subscription in memory only
        # Silence for 2 s: it subscribes again, and the node's accepted
        # (another accepted_us) says it made the subscription afresh.
        wait_until(lambda: durable.made_afresh == 1, timeout=30, what="made afresh")
        assert durable.made != made
        assert durable.last == 0
        announce(pusher, ["three", "four"])
        # Numbered from 1 again, and not skipped as "seen already".
        after = read(durable, 2)
        assert [(d.seq, d.payload) for d in after] == [(1, "three"), (2, "four")]
        durable.close()
