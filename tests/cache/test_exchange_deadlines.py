"""Each exchange's time limit, kept by `Deadlines` (one event-loop timer per tick, not one per miss): an exchange
with no answer in its share of the time moves on to the next upstream and, with none left, ends in an error; one
answered in time is forgotten at once, so what the deadlines hold follows the exchanges in flight."""
from __future__ import annotations

import asyncio

from cache.exchange import Deadlines, Exchange, UpstreamError


class Silent:
    """An upstream that never answers."""

    def __init__(self) -> None:
        self.asked = 0
        self.failures: list[str] = []

    def send(self, exchange: Exchange) -> None:
        self.asked += 1

    def answered(self, data: bytes, started: float) -> None:
        raise AssertionError("a silent upstream cannot answer")

    def failed(self, error: UpstreamError) -> None:
        self.failures.append(str(error))


class Prompt(Silent):
    """An upstream that answers on the next loop turn."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self.loop = loop
        self.answers = 0

    def send(self, exchange: Exchange) -> None:
        self.asked += 1
        self.loop.call_soon(exchange.answer, b"answer")

    def answered(self, data: bytes, started: float) -> None:
        self.answers += 1


def run(scenario) -> None:
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(scenario(loop))
    finally:
        loop.close()


def held(deadlines: Deadlines) -> int:
    return sum(len(due) for due in deadlines.ticks.values())


def test_a_silent_upstream_times_out_and_the_next_one_answers():
    async def scenario(loop: asyncio.AbstractEventLoop) -> None:
        silent, prompt = Silent(), Prompt(loop)
        done = loop.create_future()
        Exchange(b"q", False, False, 0.2, (silent, prompt), "zone", done.set_result, Deadlines(loop)).begin()
        assert await asyncio.wait_for(done, 5) == b"answer"
        assert silent.asked == prompt.asked == prompt.answers == 1
        assert len(silent.failures) == 1 and "no answer within" in silent.failures[0]

    run(scenario)


def test_with_every_upstream_silent_the_exchange_ends_in_one_error():
    async def scenario(loop: asyncio.AbstractEventLoop) -> None:
        results: list[object] = []
        ended = loop.create_future()

        def on_done(result: object) -> None:
            results.append(result)
            ended.set_result(None)

        deadlines = Deadlines(loop)
        Exchange(b"q", False, False, 0.1, (Silent(), Silent()), "zone", on_done, deadlines).begin()
        await asyncio.wait_for(ended, 5)
        await asyncio.sleep(0.05)  # nothing more may come after the end
        assert len(results) == 1 and isinstance(results[0], UpstreamError)
        assert held(deadlines) == 0

    run(scenario)


def test_answered_exchanges_are_not_kept_until_their_deadline():
    async def scenario(loop: asyncio.AbstractEventLoop) -> None:
        prompt, deadlines = Prompt(loop), Deadlines(loop)
        answers: list[object] = []
        for _ in range(1000):
            Exchange(b"q", False, False, 30.0, (prompt,), "zone", answers.append, deadlines).begin()
        assert held(deadlines) == 1000
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert answers == [b"answer"] * 1000
        assert held(deadlines) == 0  # the 30 s ticks hold nothing of them

    run(scenario)
