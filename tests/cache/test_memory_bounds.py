"""The cache's memory stays within its budget (issue 3: RSS at most 40 MiB with both caches full).

What decides it, checked here without timing anything: what one cache entry costs on the Python heap (both maps
full, 9984 + 9984 answers as kube-dns sends them), the bound on the client addresses the batched listener
remembers, and the modules the daemon leaves unloaded unless a flag needs them. The whole-process figure is
measured by `python -m bench` (docs/bench/report.md).
"""
from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import dns.message
import dns.rcode
import dns.rrset
import pytest

from cache import batchio, wire
from cache.limits import Limits
from cache.store import DENIAL, SUCCESS, Store
from tests.cache.conftest import ROOT
from tests.cache.test_batchio import LoopThread, client, echo, stats_of

# Key, entry, answer and its records, expiry and the map's slot and link: about 410 bytes on CPython 3.11 (the
# OrderedDict's links are 45 of them; the earlier representation, entries holding five objects each, took 530).
BYTES_PER_ENTRY = 420


def kube_dns_answer(name: str, nxdomain: bool) -> bytes:
    """An answer shaped as dnsmasq/CoreDNS send it for the cluster zone: with EDNS, NXDOMAIN carrying the SOA."""
    query = dns.message.make_query(name, "A", use_edns=0)
    response = dns.message.make_response(query)
    if nxdomain:
        response.set_rcode(dns.rcode.NXDOMAIN)
        response.authority.append(dns.rrset.from_text(
            "cluster.local.", 30, "IN", "SOA", "ns.cluster.local. hostmaster.cluster.local. 1 1200 180 1209600 30"))
    else:
        response.answer.append(dns.rrset.from_text(name, 30, "IN", "A", "10.1.2.3"))
    return response.to_wire()


def test_both_caches_full_fit_the_per_entry_budget():
    limits = Limits()
    upstream = []
    for index in range(limits.success_size + limits.denial_size):
        nxdomain = index % 2 == 1
        name = f"{'nx' if nxdomain else 'svc'}{index}.default.svc.cluster.local."
        upstream.append((wire.encode_name(name) + b"\x00\x01\x00\x01", kube_dns_answer(name, nxdomain)))
    store = Store(limits)
    now = time.monotonic()
    tracemalloc.start()
    try:
        for question, data in upstream:
            # What the resolver keeps per entry: the key built from the query, the answer parsed from the wire.
            store.put(question + b"\x00", wire.parse_answer(data, question), now)
        used, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert store.sizes() == {SUCCESS: limits.success_size, DENIAL: limits.denial_size}
    assert used / len(upstream) < BYTES_PER_ENTRY, f"{used / len(upstream):.0f} bytes per entry"


def test_a_stored_answer_renders_exactly_as_the_upstream_sent_it():
    """The compact form loses nothing: every record comes back, TTLs set to what is left."""
    query_message = dns.message.make_query("Multi.Cluster.Local", "A", use_edns=0, payload=4096)
    upstream = dns.message.make_response(query_message)
    upstream.answer.append(dns.rrset.from_text("multi.cluster.local.", 30, "IN", "CNAME", "web.cluster.local."))
    upstream.answer.append(dns.rrset.from_text("web.cluster.local.", 25, "IN", "A",
                                               *[f"10.0.0.{i}" for i in range(1, 21)]))
    upstream.additional.append(dns.rrset.from_text("web.cluster.local.", 20, "IN", "TXT", "a note"))
    query = wire.parse_query(query_message.to_wire())
    stored = wire.parse_answer(upstream.to_wire(), query.key[:-1])
    _flags, *counts, ttl_fields, _body_start = wire.ANSWER_HEAD.unpack_from(stored.packed)
    assert stored.ttl == 20 and counts == [21, 0, 1] and ttl_fields == 22
    reply = dns.message.from_wire(wire.render(query, stored, 7, 4096))
    assert records(reply) == records(upstream, ttl=7)
    assert reply.question[0].name.labels == query_message.question[0].name.labels and reply.edns == 0


def records(message: dns.message.Message, ttl: int | None = None) -> list:
    """Each RRset as (name, type, its records' text, TTL); names compared case-insensitively, as DNS does (the
    cache's answers point into the question, which keeps the client's case)."""
    return [(rrset.name, rrset.rdtype, sorted(rd.to_text().lower() for rd in rrset), rrset.ttl if ttl is None else ttl)
            for rrset in message.answer + message.additional]


def test_the_listener_remembers_a_bounded_number_of_client_addresses(monkeypatch):
    """Pods' resolvers use a new source port for every lookup: the address memo must not grow with them."""
    if not batchio.available():
        pytest.skip("recvmmsg/sendmmsg need Linux (batchio.available())")
    monkeypatch.setattr(batchio, "ADDRESS_CACHE_MAX", 8)
    server = LoopThread(socket.AF_INET, echo, asyncio.new_event_loop)
    server.start()
    clients = [client() for _ in range(30)]
    try:
        for round_ in range(2):
            for index, sock in enumerate(clients):
                sock.sendto(b"q%d-%d" % (round_, index), server.address)
                assert sock.recv(100) == b"re:q%d-%d" % (round_, index)  # each client still gets its own answer
                server.call(lambda: None)
                assert len(server.listener._addresses) <= 8
                assert len(server.listener._raw_addresses) <= 8
        assert stats_of(server)["sent"] == 60
    finally:
        for sock in clients:
            sock.close()
        server.stop()


def test_the_daemon_loads_neither_yaml_nor_compression_modules_unless_asked():
    """PyYAML is imported for --config only; libc is reached without ctypes.util (which pulls in bz2, lzma,
    tempfile and shutil): together some 2 MB of RSS on every node."""
    probe = ("import sys, cache.__main__, cache.daemon, cache.batchio\n"
             "print(' '.join(m for m in ('yaml', 'bz2', 'lzma', 'ctypes.util') if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert loaded.stdout.strip() == ""


def test_the_daemon_with_text_logs_loads_neither_json_nor_pathlib():
    """json is for JSON logs and kube-dns's ConfigMap, pathlib for nothing the cache needs: 0.5 MB of RSS between
    them on every node. (-S: this test environment's site hooks import pathlib themselves; the image's do not.)"""
    probe = ("import sys, cache.__main__, cache.daemon, cache.batchio\n"
             "cache.daemon.setup_logging('info', 'text')\n"
             "print(' '.join(m for m in ('json', 'pathlib') if m in sys.modules))")
    repository = Path(__file__).resolve().parents[2]
    loaded = subprocess.run([sys.executable, "-S", "-c", probe], capture_output=True, text=True, timeout=60,
                            check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{repository}"})
    assert loaded.stdout.strip() == ""


def test_node_setup_speaks_netlink_without_pyroute2():
    """--setup-network (every DaemonSet pod): pyroute2's package import alone was 11.4 MB of RSS and a quarter of a
    second at start; the few rtnetlink requests the interface needs are cache/netsetup/rtnl.py's. (What they do
    is proved in a network namespace by tests/netsetup/test_netsetup_interface.py.)"""
    probe = ("import sys, cache.netsetup\nfrom cache.netsetup import NodeNetwork, netif\n"
             "print([m for m in sys.modules if m.startswith('pyroute2')])")
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert loaded.stdout.strip() == "[]"


def test_the_running_cache_loads_no_openssl_and_serves_on_uvloop(cache):
    """The cache speaks no TLS: OpenSSL (libssl, libcrypto) would be 4.5 MB of RSS on every node for nothing. It
    still runs on uvloop, which names ssl's classes at import (cache/nossl.py gives it a stand-in). Nor does it
    keep what only argparse's terminal width (shutil: bz2, lzma) or uvloop's host encoding (the idna codec:
    unicodedata) would load: another 0.7 MB."""
    pytest.importorskip("uvloop")
    libraries = {Path(line.split()[-1]).name for line in Path(f"/proc/{cache.proc.pid}/maps").read_text().splitlines()
                 if line.split()[-1].startswith("/")}
    unwanted = ("libssl", "libcrypto", "_ssl.", "_bz2.", "_lzma.", "unicodedata.")
    assert not [name for name in libraries if name.startswith(unwanted)]
    assert [name for name in libraries if name.startswith("loop.cpython")], "uvloop's loop is not loaded"
    query = dns.message.make_query("web.default.svc.cluster.local", "A")
    assert cache.udp(query).rcode() == dns.rcode.NOERROR


def test_ssl_works_as_ever_after_the_event_loop_is_imported_without_it():
    """What imports ssl after the cache started (the startup taint's HTTPS client) gets the real module."""
    probe = ("import sys, cache.nossl as n\nloop = n.import_event_loop()\n"
             "assert 'ssl' not in sys.modules and '_ssl' not in sys.modules, sorted(sys.modules)\n"
             "import ssl\nprint(type(ssl.create_default_context()).__name__, loop is not None)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split() == ["SSLContext", "True"]
