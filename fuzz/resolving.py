"""The cache's query pipeline (cache/resolver.py) in process, as the daemon wires it, with an upstream that answers
at once: what a client sends goes through `Resolver.handle`, a miss reaches `upstream(question)`, and its bytes (or
its error) go back through the resolver's own checks (`wire.parse_answer`), store and renderer. A fresh resolver
per input, so a crash reproduces from its input alone."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cache.exchange import Done
from cache.limits import Limits
from cache.resolver import TCP, UDP, Resolver
from cache.stats import Stats
from cache.store import Store
from cache.upstream import Group

CLIENT = ("127.0.0.1", 40000)
Answer = Callable[[bytes], "bytes | Exception"]  # the upstream: question (lowercased) -> answer bytes or error


class AtOnce(Group):
    """A zone's upstreams that answer every question before `start` returns (the resolver allows it: the waiter is
    registered before the exchange starts)."""

    def __init__(self, answer: Answer) -> None:
        super().__init__(".", [], Stats())
        self.answer = answer
        self.asked = 0

    def start(self, question: bytes, do: bool, cd: bool, timeout: float, on_done: Done) -> None:
        self.asked += 1
        on_done(self.answer(question))


class Pipeline:
    def __init__(self, answer: Answer) -> None:
        self.upstream = AtOnce(answer)
        self.store = Store(Limits())
        self.resolver = Resolver({".": self.upstream}, self.store, Stats(), Limits())

    def ask(self, data: bytes, proto: str = UDP) -> list[bytes]:
        """The replies the resolver sends for one datagram (or one TCP message)."""
        replies: list[bytes] = []

        def send(reply: bytes, addr: Any) -> None:
            assert addr == CLIENT, addr
            replies.append(reply)

        self.resolver.handle(data, CLIENT, send, proto)
        return replies


__all__ = ["TCP", "UDP", "Answer", "AtOnce", "Pipeline"]
