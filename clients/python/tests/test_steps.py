"""Steps given to a service (§7c): the ``Review`` flow's middle step is
given to service ``moderator``."""

from __future__ import annotations

import pytest

import zmanager
from conftest import Node, wait_until


def connect(node: Node, **options) -> zmanager.Service:  # type: ignore[no-untyped-def]
    return zmanager.Service.connect(node.intake, node.publish, **options)


def test_a_step_server_answers_and_refuses_steps(node: Node) -> None:
    with connect(node, service_id="moderator") as moderator, connect(node) as client:
        steps = moderator.serve_steps(credits=4)
        approved = client.submit("Review", "  a fine text ")
        refused = client.submit("Review", "spam, spam")
        seen = {}
        for _ in range(2):
            step = steps.next(timeout=20)
            assert step.kind == "step"
            assert step.origin == client.id
            assert step.key == "?Review?moderate"
            seen[step.id] = step
            if "spam" in step.payload:
                steps.refuse(step, "refused by the moderator")
            else:
                steps.answer(step, f"{step.payload} (approved)")
        assert set(seen) == {approved.id, refused.id}
        assert approved.finished(timeout=30).payload == "A FINE TEXT (APPROVED)"
        with pytest.raises(zmanager.ActionFailed) as caught:
            refused.finished(timeout=30)
        assert caught.value.key == "?Review?moderate"
        assert caught.value.message == "refused by the moderator"
        assert caught.value.payload == "spam, spam"  # what the step received
        steps.stop()


def test_a_step_held_by_an_instance_that_stops_goes_to_another(node: Node) -> None:
    with connect(node, service_id="moderator") as first, \
            connect(node, service_id="moderator") as second, connect(node) as client:
        one = first.serve_steps(credits=1)
        submission = client.submit("Review", "held")
        step = one.next(timeout=20)
        assert step.id == submission.id
        other = second.serve_steps(credits=1)
        one.stop()  # without answering: the node gives the step again
        again = other.next(timeout=20)
        assert (again.origin, again.id) == (step.origin, step.id)
        other.answer(again, "taken over")
        assert submission.finished(timeout=30).payload == "TAKEN OVER"
        other.stop()


def test_a_step_given_again_while_held_is_handed_over_once(node: Node) -> None:
    # service_step_timeout is 3 s in these nodes: a step not answered by
    # then is given again (the same origin and id).
    with connect(node, service_id="moderator") as moderator, connect(node) as client:
        steps = moderator.serve_steps(credits=1)
        submission = client.submit("Review", "slow")
        step = steps.next(timeout=20)
        wait_until(lambda: steps.given_again >= 1, timeout=15, what="the step given again")
        with pytest.raises(zmanager.ResultTimeout):
            steps.next(timeout=0.5)  # not handed over a second time
        steps.answer(step, "at last")
        assert submission.finished(timeout=30).payload == "AT LAST"
        assert client.stats.results == 1


def test_a_take_for_a_service_no_step_is_given_to_is_refused(node: Node) -> None:
    with connect(node, service_id="nobody-gives-me-steps") as service:
        steps = service.serve_steps()
        with pytest.raises(zmanager.NotSupported) as caught:
            steps.next(timeout=10)
        assert caught.value.code == 11
        steps.stop()
