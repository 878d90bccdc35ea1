"""Slow and hostile clients cannot exhaust the webhook's memory: connections are counted from accept and bounded,
every wait for a client (TLS handshake, idle, request head, body) has a deadline, a head has a size limit, and the
bodies held at once have a budget. Memory is what is checked, never time: waits below only bound how long a test
may take to see a connection closed."""
from __future__ import annotations

import json
import os
import re
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import pytest

from tests.webhook.samples import pod
from tests.webhook.test_decision_log import admit_over_https
from tests.webhook.test_webhook_drain import REPO, accepts, free_port, read_response, tls_connect, wait_until
from webhook.app import create_app
from webhook.config import BODY_ALLOWANCE_BYTES, DEFAULT_LIMITS, ServerLimits, Settings
from webhook.review import review_for
from webhook.server import running

MIB = 1024 * 1024
# Measured on this server (docs/webhook.md, Limits): a connection mid-body, after a client's burst of 300 KB, holds
# about 0.6 MiB beyond the body budget (TLS buffers, uvicorn's and the app's copies); idle or mid-head about 50 KiB.
PER_CONNECTION_BYTES = 1 * MIB


def status_kib(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith(key + ":"))


def open_sockets(pid: int) -> int:
    return sum(os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:") for fd in os.listdir(f"/proc/{pid}/fd"))


def deployment_memory_limit() -> int:
    text = (REPO / "deploy/base/webhook/deployment.yaml").read_text()
    value = re.search(r"limits:\s*\n\s*memory:\s*(\d+)Mi", text)
    assert value, "the webhook Deployment sets a memory limit"
    return int(value.group(1)) * MIB


def slow(port: int, ca: Path, state: str) -> socket.socket:
    """A connection left waiting in `state`: no TLS at all, TLS then nothing, half a head, or half a large body
    after a burst of 300 KB."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    if state == "tcp":
        return sock
    tls = ssl.create_default_context(cafile=str(ca)).wrap_socket(sock, server_hostname="localhost")
    if state == "head":
        tls.sendall(b"POST /mutate HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
    elif state == "body":
        tls.sendall(b"POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                    b"Content-Length: 4000000\r\n\r\n" + b'{"apiVersion":"' + b"x" * 300_000)
    return tls


def test_slowloris_far_above_the_limit_keeps_memory_bounded_and_admissions_answered(tls_files):
    """`python -m webhook serve` as shipped (default limits) against seven times as many slow connections as it
    allows, in every state, four in seven of them holding 300 KB of body each: its peak RSS stays below the bound
    the limits give, and below the Deployment's memory limit, and a real admission on a new connection is answered.
    (Before the limits, the same load took it to about 340 MiB.)"""
    limit = DEFAULT_LIMITS.max_connections
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "webhook", "serve", "--host", "127.0.0.1", "--port", str(port),
         "--tls-cert", str(tls_files.cert), "--tls-key", str(tls_files.key), "--drain-seconds", "1"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    held: list[socket.socket] = []
    try:
        wait_until(lambda: accepts(port) or process.poll() is not None, "the webhook to listen")
        assert "patch" in admit_over_https(port, tls_files.ca, review_for(pod(), "shop", uid="warm-up"))
        base = status_kib(process.pid, "VmRSS") * 1024
        for state in ("body", "tcp", "body", "tls", "body", "head", "body") * limit:
            try:
                held.append(slow(port, tls_files.ca, state))
            except OSError:  # closed to make room for a later one while it was being set up: that is the point
                pass
        answer = admit_over_https(port, tls_files.ca, review_for(pod(), "shop", uid="during-the-attack"))
        assert answer["allowed"] is True and "patch" in answer
        peak = status_kib(process.pid, "VmHWM") * 1024
        bound = base + limit * PER_CONNECTION_BYTES + DEFAULT_LIMITS.body_budget_bytes
        assert peak < bound, f"peak RSS {peak / MIB:.0f} MiB, bound {bound / MIB:.0f} MiB"
        assert peak < deployment_memory_limit()
        # the listener and the connections it keeps, nothing more (a few for stdio, the event loop, the warm-up's)
        assert open_sockets(process.pid) <= limit + 8
    finally:
        for sock in held:
            sock.close()
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
            raise


@pytest.fixture
def strict_webhook(tls_files):
    """The webhook with short deadlines and small budgets, to see each limit act."""
    limits = ServerLimits(max_connections=8, handshake_seconds=0.5, header_seconds=0.5, body_seconds=0.5,
                          idle_seconds=0.5, max_head_bytes=4096)
    app = create_app(Settings(), body_budget_bytes=200_000)
    with running(app, str(tls_files.cert), str(tls_files.key), limits=limits) as server:
        yield server, tls_files.ca, app.state.connections


def closed_by_server(sock: socket.socket) -> bool:
    """Whether the server closed it: read until EOF or reset (the socket's own 10 s timeout bounds the wait)."""
    try:
        while sock.recv(65536):
            pass
    except (ConnectionResetError, ssl.SSLError):
        pass
    except TimeoutError:
        return False
    return True


@pytest.mark.parametrize("state", ["tcp", "tls", "head", "body"])
def test_a_client_that_stops_half_way_is_closed_at_the_deadline(strict_webhook, state):
    server, ca, guard = strict_webhook
    with slow(server.port, ca, state) as sock:
        assert closed_by_server(sock)
    wait_until(lambda: guard.open == 0, "the connection to be released")


def test_the_connection_that_waited_longest_makes_room_for_a_new_one(strict_webhook):
    server, ca, guard = strict_webhook
    held = [slow(server.port, ca, "head") for _ in range(guard.limits.max_connections)]
    try:
        wait_until(lambda: guard.open == guard.limits.max_connections, "every connection to be counted")
        assert admit_over_https(server.port, ca, review_for(pod(), "shop", uid="new"))["allowed"] is True
        assert closed_by_server(held[0])  # the oldest waiter
        assert guard.open <= guard.limits.max_connections
    finally:
        for sock in held:
            sock.close()


def test_a_head_over_the_limit_gets_431(strict_webhook):
    server, ca, _ = strict_webhook
    with tls_connect(server.port, ca) as tls:
        tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n" + b"X-Big: " + b"a" * 8000)
        status, body = read_response(tls)
    assert status == 431 and b"over the limit of 4096 bytes" in body


def test_bodies_beyond_the_budget_get_503_and_the_budget_is_given_back(strict_webhook):
    server, ca, guard = strict_webhook
    app = server.server.config.app
    # 64 KiB of every body is its own; the first request holds 150 KB more of the 200 KB budget, and stalls.
    held = tls_connect(server.port, ca)
    held.sendall(b"POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000000\r\n\r\n"
                 + b"x" * (BODY_ALLOWANCE_BYTES + 150_000))
    body = json.dumps(review_for(pod(annotations={"big": "x" * 200_000}), "shop", uid="big")).encode()
    with held, tls_connect(server.port, ca) as tls:
        wait_until(lambda: app.state.connections.open == 2, "both connections")
        tls.sendall(b"POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        status, answer = read_response(tls)
        assert status == 503 and b"retry later" in answer
    wait_until(lambda: guard.open == 0, "both connections to be released")
    assert admit_over_https(server.port, ca, review_for(pod(annotations={"big": "x" * 200_000}), "shop",
                                                        uid="after"))["allowed"] is True
