"""Upstream answers with the wrong ID or the wrong question are dropped (and counted); the right one is used.

The sender of the wrong answers is an attacker racing the real upstream: a socket in this test plays it, answering
each query first with two forgeries, then correctly.
"""
from __future__ import annotations

import socket
import threading

import dns.message
import dns.name
import dns.rrset

from tests.cache.conftest import Cache


def forging_upstream(sock: socket.socket, stop: threading.Event) -> None:
    sock.settimeout(0.2)
    while not stop.is_set():
        try:
            data, addr = sock.recvfrom(4096)
        except TimeoutError:
            continue
        query = dns.message.from_wire(data)
        name = query.question[0].name

        def answer(qid: int, owner, address: str, query=query, name=name) -> bytes:
            response = dns.message.make_response(query)
            response.id = qid
            if owner != name:
                response.question = [dns.rrset.RRset(owner, 1, 1)]
            response.answer.append(dns.rrset.from_text(owner, 60, "IN", "A", address))
            return response.to_wire()

        sock.sendto(answer((query.id + 1) % 65536, name, "10.6.6.6"), addr)  # wrong ID
        sock.sendto(answer(query.id, dns.name.from_text("evil.spoof.test."), "10.6.6.7"), addr)  # wrong question
        sock.sendto(answer(query.id, name, "10.9.9.9"), addr)


def test_forged_answers_are_dropped(tmp_path, kube_dns):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    stop = threading.Event()
    thread = threading.Thread(target=forging_upstream, args=(sock, stop), daemon=True)
    thread.start()
    cache = Cache(tmp_path, "--forward", f"spoof.test=udp://127.0.0.1:{port}", kube_dns=kube_dns)
    try:
        response = cache.udp(dns.message.make_query("www.spoof.test", "A"))
        assert [rd.to_text() for rd in response.answer[0]] == ["10.9.9.9"]
        assert cache.metrics()[f'localdns_forward_mismatched_answers_total{{to="udp://127.0.0.1:{port}"}}'] >= 2
    finally:
        cache.stop()
        stop.set()
        thread.join(5)
        sock.close()
