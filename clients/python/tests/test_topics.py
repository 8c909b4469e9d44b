"""Topic subscriptions, ``@ASYNC`` answers (§7a) and service management."""

from __future__ import annotations

import pytest

import zmanager
from conftest import Node, wait_until


def connect(node: Node, **options) -> zmanager.Service:  # type: ignore[no-untyped-def]
    return zmanager.Service.connect(node.intake, node.publish, **options)


def test_a_subscription_receives_what_a_publish_step_publishes(node: Node) -> None:
    with connect(node, name="listener") as listener, connect(node, name="pusher") as pusher:
        announcements = listener.subscribe(["Announce~PUBLISH~"])
        # Live when subscribe returns: the first message is not lost.
        result = pusher.request("Announce", "hello", timeout=30)
        assert result.payload == "hello"
        message = announcements.next(timeout=10)
        assert message.topic == "Announce~PUBLISH~Subject~Announce~announced"
        assert message.kind == "request"
        assert message.payload == "hello"
        assert message.service == pusher.id
        # Nothing else came: a request of another flow is not on the prefix.
        pusher.request("Echo", 1, timeout=30)
        with pytest.raises(zmanager.ResultTimeout):
            announcements.next(timeout=0.5)
        announcements.close()
        with pytest.raises(zmanager.ClosedError):
            announcements.next(timeout=0.1)


def test_an_async_step_resumes_with_the_answer_and_a_second_answer_is_refused(node: Node) -> None:
    with connect(node, name="answerer") as answerer, connect(node, name="asker") as asker:
        questions = answerer.subscribe(["Ask~PUBLISH~"])
        submission = asker.submit("Ask", "what time is it?")
        question = questions.next(timeout=10)
        assert question.payload == "what time is it?"
        assert question.id == submission.id
        assert not submission.done  # suspended at the @ASYNC step
        answerer.answer(question, "noon")
        assert submission.finished(timeout=30).payload == "noon"
        # Answered already: the node refuses the second answer with code
        # 14, on the answering service's reply topic.
        answerer.answer(question, "midnight")
        wait_until(lambda: answerer.stats.unexpected == 1, what="the refusal")
        refusal = answerer.unexpected[-1].error()
        assert isinstance(refusal, zmanager.UnknownAsync)
        assert refusal.code == 14
        assert asker.stats.results == 1


def test_an_error_answer_ends_the_flow_with_that_error(node: Node) -> None:
    with connect(node) as answerer, connect(node) as asker:
        questions = answerer.subscribe(["Ask~PUBLISH~"])
        submission = asker.submit("Ask", "may I?")
        answerer.answer_error(questions.next(timeout=10), "no you may not")
        with pytest.raises(zmanager.ActionFailed) as caught:
            submission.finished(timeout=30)
        assert caught.value.message == "no you may not"


def test_register_heartbeat_and_list(node: Node) -> None:
    with connect(node, name="chat") as service:
        with pytest.raises(zmanager.UnknownService) as caught:
            service.heartbeat()
        assert caught.value.code == 16
        entry = service.register(["Chat~PUBLISH~"], ["Chat"])
        assert entry["id"] == service.id
        assert entry["topics"] == ["Chat~PUBLISH~"]
        assert entry["flows"] == ["Chat"]
        beat = service.heartbeat()
        assert beat["status"] == "up"
        listed = {e["id"]: e for e in service.services()}
        assert listed[service.id]["status"] == "up"


def test_heartbeats_in_the_background_register_again_after_a_restart(node: Node) -> None:
    with connect(node, name="beating", retry_after=1.0) as service:
        service.register(["T~"], ["F"])
        beat = service.heartbeat_every(0.3, ["T~"], ["F"])
        node.restart()  # the registry is in memory: the node forgot it

        def listed() -> bool:
            try:
                return any(e["id"] == service.id for e in service.services(timeout=2))
            except zmanager.ZmanagerError:
                return False

        wait_until(listed, timeout=30, what="registered again by the heartbeat")
        beat.stop()
