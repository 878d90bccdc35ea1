"""`python -m webhook serve` as the Deployment runs it: SIGTERM stops new connections, finishes the request in
flight, and exits 0; /readyz says 503 while draining."""
from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.webhook.samples import pod
from webhook.review import review_for

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tls_connect(port: int, ca: Path) -> ssl.SSLSocket:
    context = ssl.create_default_context(cafile=str(ca))
    return context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10), server_hostname="localhost")


def wait_until(condition, what: str, limit: float = 20.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


def accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


@pytest.fixture
def served(tls_files):
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "webhook", "serve", "--host", "127.0.0.1", "--port", str(port),
         "--tls-cert", str(tls_files.cert), "--tls-key", str(tls_files.key), "--drain-seconds", "20",
         "--networkpolicies", "off"],  # no cluster here: test_serve_networkpolicies.py serves with one
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=os.environ.copy())
    try:
        wait_until(lambda: accepts(port) or process.poll() is not None, "the webhook to listen")
        assert process.poll() is None, process.stdout.read()
        yield process, port
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)


def in_flight(port: int, ca: Path) -> float:
    with tls_connect(port, ca) as tls:
        tls.sendall(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        _, body = read_response(tls)
    in_flight = "localdns_webhook_admissions_in_flight "
    line = next(line for line in body.decode().splitlines() if line.startswith(in_flight))
    return float(line.split()[1])


def read_response(tls: ssl.SSLSocket) -> tuple[int, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = tls.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    headers = dict(line.split(b":", 1) for line in head.split(b"\r\n")[1:])
    length = int(next(value for name, value in headers.items() if name.strip().lower() == b"content-length"))
    while len(body) < length:
        body += tls.recv(65536)
    return int(head.split()[1]), body


def test_sigterm_finishes_the_request_in_flight_then_exits_0(served, tls_files):
    process, port = served
    body = json.dumps(review_for(pod(), "shop", uid="in-flight")).encode()
    tls = tls_connect(port, tls_files.ca)
    with tls:
        tls.sendall(b"POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n" % len(body) + body[:100])
        wait_until(lambda: in_flight(port, tls_files.ca) == 1, "the server to start the request")
        process.send_signal(signal.SIGTERM)
        wait_until(lambda: not accepts(port), "the listener to close")
        assert process.poll() is None, "exited with a request in flight"
        tls.sendall(body[100:])
        status, answer = read_response(tls)
    assert status == 200
    response = json.loads(answer)["response"]
    assert response["uid"] == "in-flight" and response["allowed"] is True and response["patch"]
    assert process.wait(timeout=30) == 0
    log = process.stdout.read()
    assert "draining" in log


def test_readyz_answers_503_once_draining_is_set(webhook):
    app = webhook.server.server.config.app
    assert webhook.client.get(f"{webhook.url}/readyz").status_code == 200
    app.state.draining = True
    try:
        answer = webhook.client.get(f"{webhook.url}/readyz")
        assert answer.status_code == 503 and "draining" in answer.text
        assert webhook.client.get(f"{webhook.url}/healthz").status_code == 200  # alive, just not ready
    finally:
        app.state.draining = False
