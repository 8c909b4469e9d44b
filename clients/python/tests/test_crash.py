"""The node as a failing machine: SIGKILLed (with its workers) in the middle
of a request, down when a request is pushed, restarted on the same journal.
The caller gets each result exactly once; the action runs at least once."""

from __future__ import annotations

import time
from pathlib import Path

import zmanager
from conftest import Node, record_lines, wait_until


def connect(node: Node, **options) -> zmanager.Service:  # type: ignore[no-untyped-def]
    return zmanager.Service.connect(node.intake, node.publish, **options)


def test_killed_mid_request_then_restarted_the_caller_gets_the_result_once(
    node: Node, workdir: Path
) -> None:
    log = workdir / "record.log"
    payload = {"log": str(log), "key": "crash", "seq": 1, "sleep_ms": 1500}
    with connect(node, retry_after=1.0, ack_after=0.5) as service:
        submission = service.submit("Record", payload)
        submission.accepted(timeout=10)  # journaled: the node's from now on
        wait_until(lambda: len(record_lines(log)) == 1, what="the action started")
        node.kill()  # node and worker, while the action sleeps
        assert not submission.done
        # Down for longer than retry_after: the service sends the request
        # again (same id); the copies wait in its socket for the node.
        time.sleep(2.5)
        assert submission.resent >= 1
        node.start()  # the same journal: the request is unfinished there
        result = submission.finished(timeout=60)
        assert result.payload == payload
        # Resends go on until the result, not after it: wait, and nothing
        # else reaches the caller.
        resent = submission.resent
        time.sleep(2.5)
        assert submission.resent == resent
        assert service.stats.results == 1
        assert service.stats.unexpected == 0
    # At least once: the killed run, and the one recovery took up again;
    # the resends that reached the restarted node were absorbed, not run a
    # third time.
    lines = record_lines(log)
    assert len(lines) == 2, lines
    assert "unfinished=1" in node.log(), node.log()


def test_a_request_pushed_while_the_node_is_down_runs_once_it_is_back(
    node: Node, workdir: Path
) -> None:
    log = workdir / "record.log"
    payload = {"log": str(log), "key": "down", "seq": 1}
    with connect(node, retry_after=1.0, ack_after=0.5) as service:
        node.kill()
        submission = service.submit("Record", payload)
        time.sleep(1.5)  # resent (same id) a few times meanwhile
        assert not submission.done
        node.start()
        assert submission.finished(timeout=60).payload == payload
        assert submission.resent >= 1
        time.sleep(1.5)
        assert service.stats.results == 1
    # Every copy had the same id: it ran once.
    assert len(record_lines(log)) == 1, record_lines(log)


def test_a_result_missed_across_a_restart_is_published_again_not_rerun(
    node: Node, workdir: Path
) -> None:
    log = workdir / "record.log"
    payload = {"log": str(log), "key": "again", "seq": 1}
    with connect(node) as service:
        first = service.request("Record", payload, id="keep-1", timeout=30)
        node.restart()  # SIGKILL, then the same journal
        # As a service that never saw the result would: the same id again.
        # The restarted node loaded the results within dedupe_window from
        # its journal, and publishes this one again.
        again = service.request("Record", payload, id="keep-1", timeout=60)
        assert again.payload == first.payload
        assert again.envelope["accepted_us"] == first.envelope["accepted_us"]
    assert len(record_lines(log)) == 1, record_lines(log)
