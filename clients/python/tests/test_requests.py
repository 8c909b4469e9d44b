"""Requests with the synchronous API: results, errors with their codes,
acknowledgements, resends with the same id, bad input."""

from __future__ import annotations

import concurrent.futures
import time
from pathlib import Path

import pytest

import zmanager
from zmanager import ErrorCode
from conftest import Node, record_lines


def connect(node: Node, **options) -> zmanager.Service:  # type: ignore[no-untyped-def]
    return zmanager.Service.connect(node.intake, node.publish, **options)


def test_a_request_gets_its_result(node: Node) -> None:
    with connect(node, name="quick") as service:
        assert service.id.startswith("quick-")
        assert service.reply_to == f"@reply~{service.id}~"
        result = service.request("Greeting", {"name": "  ada "}, timeout=30)
        assert result.ok
        assert result.payload == {"greeting": "HELLO, ADA!"}
        assert result.key == "??done"
        assert result.envelope["service"] == service.id
        assert result.unwrap() == {"greeting": "HELLO, ADA!"}


def test_many_requests_as_futures_each_get_their_own_result(node: Node) -> None:
    with connect(node) as service:
        submissions = [service.submit("Greeting", {"name": f" ada {n} "}) for n in range(50)]
        assert len({s.id for s in submissions}) == 50
        done, not_done = concurrent.futures.wait([s.future for s in submissions], timeout=60)
        assert not not_done
        for n, submission in enumerate(submissions):
            assert submission.future.result().payload == {"greeting": f"HELLO, ADA {n}!"}
        # Every one was acknowledged (an id may come in an accepted, or be
        # implied by its result arriving first).
        for submission in submissions:
            assert submission.accepted_future.result(timeout=1) is None
        assert service.stats.results == 50
        assert service.stats.duplicates == 0
        assert service.stats.unexpected == 0


def test_submit_is_accepted_then_finished(node: Node, workdir: Path) -> None:
    log = workdir / "record.log"
    with connect(node) as service:
        submission = service.submit("Record", {"log": str(log), "key": "k", "seq": 1,
                                               "sleep_ms": 1500})
        started = time.monotonic()
        submission.accepted(timeout=10)
        accepted_after = time.monotonic() - started
        # Accepted (journaled) well before the action's 1.5 s are over.
        assert accepted_after < 1.2, accepted_after
        assert not submission.done
        assert service.stats.accepted == 1
        result = submission.finished(timeout=30)
        assert result.payload["seq"] == 1
        assert len(record_lines(log)) == 1


def test_an_unknown_flow_raises_unknown_flow_with_its_code(node: Node) -> None:
    with connect(node) as service:
        with pytest.raises(zmanager.UnknownFlow) as caught:
            service.request("Nope", {"x": 1}, timeout=10)
        error = caught.value
        assert isinstance(error, zmanager.RequestFailed)
        assert isinstance(error, zmanager.ZmanagerError)
        assert error.code == ErrorCode.UNKNOWN_FLOW == 3
        assert error.name == "unknown_flow"
        assert "Nope" in error.message
        assert error.envelope["status"] == "error"
        assert error.envelope["error"]["code"] == 3
        # A refusal at intake carries the request's payload unchanged (§8).
        assert error.payload == {"x": 1}
        assert str(error).startswith("3 (unknown_flow): ")


def test_an_action_error_surfaces_its_code_and_step(node: Node) -> None:
    with connect(node) as service:
        submission = service.submit("Fail", "boom")
        result = submission.outcome(timeout=30)
        assert not result.ok
        failure = result.error()
        assert isinstance(failure, zmanager.ActionFailed)
        assert failure.code == ErrorCode.ACTION_FAILED
        assert failure.key == "?Fail?fail"
        with pytest.raises(zmanager.ActionFailed):
            submission.finished(timeout=1)
        with pytest.raises(zmanager.ActionFailed):
            submission.future.result(timeout=1)
        with pytest.raises(zmanager.ActionFailed):
            result.unwrap()


def test_a_payload_that_is_not_messagepack_is_refused_with_bad_request(node: Node) -> None:
    with connect(node) as service:
        with pytest.raises(zmanager.BadRequest) as caught:
            service.request("Echo", b"\xc1", raw=True, timeout=10)
        assert caught.value.code == 6
        assert "0xc1" in caught.value.message


def test_a_resent_id_gets_the_same_result_and_is_not_run_again(node: Node, workdir: Path) -> None:
    log = workdir / "record.log"
    payload = {"log": str(log), "key": "once", "seq": 7}
    with connect(node) as service:
        first = service.request("Record", payload, id="order-7", timeout=30)
        # The same id again, as a service that lost the result would: the
        # node publishes the first run's result again (dedupe_window).
        again = service.request("Record", {**payload, "seq": 8}, id="order-7", timeout=30)
        assert again.payload == first.payload == payload
        assert again.envelope["accepted_us"] == first.envelope["accepted_us"]
        assert len(record_lines(log)) == 1, record_lines(log)
        assert service.stats.duplicates == 0


def test_a_resubmitted_id_gets_the_result_again_and_one_on_its_way_is_one(node: Node) -> None:
    with connect(node) as service:
        first = service.submit("Echo", "one", id="dup-1")
        assert first.finished(timeout=30).payload == "one"
        # Finished, then submitted again (a resend by hand): a new
        # submission, and the node publishes the first result again.
        second = service.submit("Echo", "one", id="dup-1")
        assert second.finished(timeout=30).payload == "one"
        assert second.outcome().envelope["accepted_us"] == first.outcome().envelope["accepted_us"]
        assert service.stats.results == 2  # one per submission
        # Submitting an id still on its way is that same submission: it
        # gets one result.
        third = service.submit("Echo", "x", id="dup-2")
        fourth = service.submit("Echo", "x", id="dup-2")
        assert fourth._inner is third._inner
        assert fourth.finished(timeout=30).payload == "x"
        assert service.stats.results == 3
        assert service.stats.duplicates == 0


def test_no_result_in_time_raises_result_timeout(node: Node, workdir: Path) -> None:
    log = workdir / "record.log"
    with connect(node) as service:
        with pytest.raises(zmanager.ResultTimeout) as caught:
            service.request("Record", {"log": str(log), "key": "slow", "seq": 1,
                                       "sleep_ms": 3000}, timeout=0.5)
        assert isinstance(caught.value, TimeoutError)


def test_options_it_cannot_use_raise_config_error_before_connecting(node: Node) -> None:
    with pytest.raises(zmanager.ConfigError):
        connect(node, service_id="a~b")
    with pytest.raises(zmanager.ConfigError):
        connect(node, name="")
    with pytest.raises(zmanager.ConfigError):
        connect(node, handshake_timeout=0)
    with connect(node) as service:
        with pytest.raises(zmanager.ConfigError):
            service.submit("Echo", object())
        with pytest.raises(zmanager.ConfigError):
            service.submit("Echo", "not bytes", raw=True)


def test_a_node_that_is_not_there_fails_the_handshake(workdir: Path) -> None:
    started = time.monotonic()
    with pytest.raises(zmanager.HandshakeError) as caught:
        zmanager.Service.connect(f"ipc://{workdir}/nobody-intake.sock",
                                 f"ipc://{workdir}/nobody-publish.sock",
                                 handshake_timeout=1.0)
    took = time.monotonic() - started
    assert 1.0 <= took < 5, took
    assert isinstance(caught.value, ConnectionError)
    assert "no ping came back" in str(caught.value)


def test_a_closed_service_refuses_work_and_fails_what_waits(node: Node, workdir: Path) -> None:
    log = workdir / "record.log"
    service = connect(node)
    waiting = service.submit("Record", {"log": str(log), "key": "c", "seq": 1, "sleep_ms": 2000})
    service.close()
    with pytest.raises(zmanager.ClosedError):
        waiting.future.result(timeout=5)
    with pytest.raises(zmanager.ClosedError):
        service.submit("Echo", 1)
