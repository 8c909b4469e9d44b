"""The asyncio API (zmanager.aio) against a real node."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import zmanager
import zmanager.aio
from conftest import Node, record_lines


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(asyncio.wait_for(coro, 120))


def test_async_requests_run_concurrently_and_each_gets_its_result(node: Node) -> None:
    async def main() -> None:
        async with await zmanager.aio.Service.connect(node.intake, node.publish,
                                                      name="aio") as service:
            results = await asyncio.gather(*(
                service.request("Greeting", {"name": f" ada {n} "}, timeout=60)
                for n in range(40)
            ))
            assert [r.payload["greeting"] for r in results] == [
                f"HELLO, ADA {n}!" for n in range(40)
            ]
            assert service.stats.results == 40
            assert service.stats.duplicates == 0

    run(main())


def test_async_submit_accepted_then_finished_and_errors(node: Node, workdir: Path) -> None:
    log = workdir / "record.log"

    async def main() -> None:
        async with await zmanager.aio.Service.connect(node.intake, node.publish) as service:
            submission = await service.submit(
                "Record", {"log": str(log), "key": "a", "seq": 1, "sleep_ms": 1000})
            await submission.accepted(timeout=10)
            assert not submission.done
            result = await submission.finished(timeout=30)
            assert result.payload["seq"] == 1
            with pytest.raises(zmanager.UnknownFlow) as caught:
                await service.request("Nope", None, timeout=10)
            assert caught.value.code == 3
            with pytest.raises(zmanager.ResultTimeout):
                await service.request("Record", {"log": str(log), "key": "b", "seq": 2,
                                                 "sleep_ms": 2000}, timeout=0.3)

    run(main())
    assert len(record_lines(log)) >= 1


def test_async_subscription_and_answer(node: Node) -> None:
    async def main() -> None:
        async with await zmanager.aio.Service.connect(node.intake, node.publish) as answerer, \
                await zmanager.aio.Service.connect(node.intake, node.publish) as asker:
            questions = await answerer.subscribe(["Ask~PUBLISH~"])

            async def serve() -> None:
                async for question in questions:
                    await answerer.answer(question, question.payload.upper())

            serving = asyncio.ensure_future(serve())
            results = await asyncio.gather(*(asker.request("Ask", f"q{n}", timeout=30)
                                             for n in range(5)))
            assert sorted(r.payload for r in results) == [f"Q{n}" for n in range(5)]
            serving.cancel()

    run(main())


def test_async_handshake_error(workdir: Path) -> None:
    async def main() -> None:
        with pytest.raises(zmanager.HandshakeError):
            await zmanager.aio.Service.connect(f"ipc://{workdir}/none-i.sock",
                                               f"ipc://{workdir}/none-p.sock",
                                               handshake_timeout=0.5)

    run(main())
