"""Start-up checks, reload without losing the cache, SIGTERM drain, and loop detection."""
from __future__ import annotations

import signal
import subprocess
import sys
import time

import dns.message
import dns.rcode

from tests.cache.conftest import ROOT, Cache, free_port


def run_cache(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cache", "--resolv-conf", "/dev/null", "--health", "off",
                           "--metrics", "off", *args], cwd=ROOT, capture_output=True, text=True, timeout=30)


def test_wildcard_listen_is_refused_unless_allowed(tmp_path, kube_dns):
    refused = run_cache("--listen", f"0.0.0.0:{free_port()}", "--kube-dns", f"127.0.0.1:{kube_dns.port}")
    assert refused.returncode != 0
    assert "wildcard" in refused.stderr and "--allow-wildcard" in refused.stderr
    allowed = Cache(tmp_path, "--allow-wildcard", kube_dns=kube_dns, host="0.0.0.0")
    try:
        response = allowed.udp(dns.message.make_query("web.default.svc.cluster.local", "A"))
        assert response.answer, (response, allowed.output())
    finally:
        allowed.stop()


def test_forwarding_to_our_own_address_is_refused():
    port = free_port()
    result = run_cache("--listen", f"127.0.0.1:{port}", "--kube-dns", f"127.0.0.1:{port}")
    assert result.returncode != 0 and "forwarding loop" in result.stderr


def test_missing_kube_dns_is_a_clear_error():
    result = run_cache("--listen", f"127.0.0.1:{free_port()}")
    assert result.returncode != 0 and "--kube-dns" in result.stderr


def test_a_loop_through_another_server_is_detected_at_run_time(tmp_path, kube_dns):
    # Two caches forwarding loop.test to each other: each one's probe comes back to it.
    port_a, port_b = free_port(), free_port()
    common = ["--kube-dns", f"127.0.0.1:{kube_dns.port}", "--upstream-timeout", "2"]
    a = Cache(tmp_path, "--forward", f"loop.test=udp://127.0.0.1:{port_b}", *common, port=port_a, wait=False)
    b = Cache(tmp_path, "--forward", f"loop.test=udp://127.0.0.1:{port_a}", *common, port=port_b, wait=False)
    try:
        deadline = time.monotonic() + 20
        while a.proc.poll() is None and b.proc.poll() is None:
            assert time.monotonic() < deadline, "no loop detected"
            time.sleep(0.1)
        assert 1 in (a.proc.poll(), b.proc.poll())
        assert "forwarding loop detected" in a.output() + b.output()
    finally:
        a.stop()
        b.stop()


def test_reload_keeps_the_cache_and_a_bad_file_changes_nothing(tmp_path, kube_dns, node_dns):
    config = tmp_path / "cache.yaml"
    config.write_text(f'kube-dns: "127.0.0.1:{kube_dns.port}"\n'
                      f'forward: ["cluster.local=udp://127.0.0.1:{kube_dns.port}"]\n')
    cache = Cache(tmp_path, "--config", str(config))
    try:
        name = "web.default.svc.cluster.local"
        before = kube_dns.queries(name)
        assert cache.udp(dns.message.make_query(name, "A")).answer
        assert cache.udp(dns.message.make_query("www.example.org", "A")).rcode() == dns.rcode.SERVFAIL
        # New forward zone through the file, applied on SIGHUP.
        config.write_text(config.read_text().replace(
            '"]', f'", "example.org=udp://127.0.0.1:{node_dns.port}"]'))
        cache.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while cache.metrics().get('localdns_config_reloads_total{result="ok"}', 0) < 1:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert cache.udp(dns.message.make_query("www.example.org", "A")).answer
        assert cache.udp(dns.message.make_query(name, "A")).answer
        assert kube_dns.queries(name) - before == 1  # still cached after the reload
        # A bad file (picked up by the file watch): the old settings stay, the error is logged.
        config.write_text("success-ttl: lots\n")
        deadline = time.monotonic() + 10
        while cache.metrics().get('localdns_config_reloads_total{result="failed"}', 0) < 1:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert "success-ttl must be a number" in cache.output()
        assert cache.udp(dns.message.make_query("www.example.org", "A")).answer
        assert cache.proc.poll() is None
    finally:
        cache.stop()


def test_sigterm_drains_then_exits(tmp_path, kube_dns):
    cache = Cache(tmp_path, "--drain", "2", kube_dns=kube_dns)
    try:
        assert cache.http("/ready")[0] == 200
        cache.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while cache.http("/ready")[0] != 503:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert cache.http("/health")[0] == 200  # alive while draining: no liveness restart
        response = cache.udp(dns.message.make_query("web.default.svc.cluster.local", "A"))
        assert response.answer  # still answering during the drain
        assert cache.proc.wait(20) == 0
        assert "draining" in cache.output()
    finally:
        cache.stop()
