"""Batched answers go to the client that asked, whatever client the same send slot served in the batch before.

The batched listener leaves a send slot's destination as it is when the next answer in that slot goes to the same
client (the common case: a resolver that keeps its socket), so a destination must change exactly when the client
does: across batches, with clients interleaved at random, and when the listener forgets the addresses it learned
and learns them again. Real loopback sockets and the real recvmmsg/sendmmsg; no timing asserted.
"""
from __future__ import annotations

import random

import pytest

from cache import batchio, mmsg
from tests.cache.test_batchio import client, receive, serve, stats_of  # noqa: F401  (serve is a fixture)

pytestmark = pytest.mark.skipif(not batchio.available(), reason="recvmmsg/sendmmsg need Linux (batchio.available())")


@pytest.mark.parametrize("copying", [False, True], ids=["answers-in-place", "answers-copied"])
@pytest.mark.parametrize("remembered", [batchio.ADDRESS_CACHE_MAX, 3], ids=["addresses-kept", "addresses-forgotten"])
def test_each_batch_answers_its_own_clients(serve, monkeypatch, copying, remembered):  # noqa: F811
    if copying:  # the path where sockaddrs are copied into the slots rather than pointed at
        monkeypatch.setattr(mmsg, "BYTES_DATA", None)
    monkeypatch.setattr(batchio, "ADDRESS_CACHE_MAX", remembered)
    server = serve(run=False)
    clients = [client() for _ in range(5)]
    chooser = random.Random(20261127)
    try:
        for round_ in range(3):
            order = [chooser.randrange(len(clients)) for _ in range(150)]  # queued: batches of 64, 64 and 22
            for n, who in enumerate(order):
                clients[who].sendto(b"r%d-%d" % (round_, n), server.address)
            if round_ == 0:
                server.start()
            else:
                server.call(server.listener.start, server.loop)
            for who, sock in enumerate(clients):
                expected = [b"re:r%d-%d" % (round_, n) for n, asker in enumerate(order) if asker == who]
                assert receive(sock, len(expected)) == expected
            server.call(server.listener.close)  # stop reading, so the next round queues up whole batches again
        stats = stats_of(server)
        assert stats["received"] == stats["sent"] == 450 and stats["batches"] >= 9
    finally:
        for sock in clients:
            sock.close()
