"""Bad node conditions get a clear error or a repair, are counted, and never stop the cache from answering."""
from __future__ import annotations

import fcntl
import os
import shutil
import subprocess

import pytest

from tests.e2e.topology import LOCAL_IP, Cache, Topology

SETUP_ERRORS = "coredns_nodecache_setup_errors_total"


def test_a_listen_ip_owned_by_another_interface_is_refused_clearly(clean_node: Topology):
    topo = clean_node
    topo.node.run("ip", "link", "add", "other0", "type", "bridge")
    try:
        topo.node.run("ip", "addr", "add", f"{LOCAL_IP}/32", "dev", "other0")
        cache = Cache(topo, "conflict", sync_interval=60)
        try:
            code = cache.process.wait(timeout=30)
        finally:
            cache.close()
        assert code != 0
        assert LOCAL_IP in cache.output and "other0" in cache.output
        assert topo.node.addresses("other0") == [LOCAL_IP]  # not taken over
        assert topo.node.our_rules() == []
    finally:
        topo.node.run("ip", "link", "del", "other0", check=False)


@pytest.fixture
def bin_dir(tmp_path):
    directory = tmp_path / "bin"
    directory.mkdir()
    (directory / "ip").symlink_to(shutil.which("ip"))
    return directory


def test_a_missing_iptables_is_counted_and_dns_keeps_working(clean_node: Topology, bin_dir):
    topo = clean_node
    cache = Cache(topo, "no-iptables", env={"PATH": str(bin_dir)})
    try:
        cache.wait_serving()
        cache.wait_until(lambda: cache.metric(SETUP_ERRORS, errortype="iptables") >= 1, "the error being counted")
        assert "iptables-nft not found" in cache.output
        assert cache.process.poll() is None
    finally:
        cache.terminate()


def test_a_failing_iptables_is_counted_and_dns_keeps_working(clean_node: Topology, bin_dir):
    topo = clean_node
    fake = bin_dir / "iptables-nft"
    fake.write_text("#!/bin/sh\necho 'iptables: simulated kernel refusal' >&2\nexit 2\n")
    fake.chmod(0o755)
    cache = Cache(topo, "bad-iptables", env={"PATH": f"{bin_dir}:{os.environ['PATH']}"})
    try:
        cache.wait_serving()
        cache.wait_until(lambda: cache.metric(SETUP_ERRORS, errortype="iptables") >= 2, "errors at each sync")
        assert "simulated kernel refusal" in cache.output
        assert cache.process.poll() is None
    finally:
        cache.terminate()


def test_a_held_xtables_lock_delays_the_rules_until_it_is_released(clean_node: Topology):
    topo = clean_node
    fd = os.open(topo.node.lockfile, os.O_CREAT | os.O_RDWR)
    cache = None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        cache = Cache(topo, "locked")
        cache.wait_serving()
        cache.wait_until(lambda: cache.metric(SETUP_ERRORS, errortype="iptables_lock") >= 1, "the lock error")
        assert topo.node.our_rules() == []
    finally:
        os.close(fd)
    try:
        cache.wait_rules()
    finally:
        cache.terminate()


def test_a_rule_deleted_at_run_time_is_back_at_the_next_sync(clean_node: Topology):
    topo = clean_node
    cache = Cache(topo, "repair")
    try:
        cache.wait_serving()
        cache.wait_rules()
        victim = next(line for line in topo.node.our_rules() if line.startswith("-A PREROUTING") and "udp" in line)
        subprocess.run(topo.node.command("sh", "-c", f"iptables-nft -t raw {victim.replace('-A', '-D', 1)}"),
                       check=True)
        cache.wait_until(lambda: victim in topo.node.our_rules(), "the rule's repair")
        assert len(topo.node.our_rules()) == 13
    finally:
        cache.terminate()


def test_an_interface_kind_the_kernel_lacks_names_the_option_to_change(clean_node: Topology):
    topo = clean_node
    # This machine's kernel has no dummy module (the default kind); where it has one, an invented kind fails alike.
    probe = topo.node.run("ip", "link", "add", "probe0", "type", "dummy", check=False)
    kind = "dummy" if probe.returncode != 0 else "nosuchkind"
    topo.node.run("ip", "link", "del", "probe0", check=False)
    cache = Cache(topo, "no-kind", "--interface-kind", kind, sync_interval=60)
    try:
        code = cache.process.wait(timeout=30)
    finally:
        cache.close()
    assert code != 0
    assert "--interface-kind" in cache.output and f"'{kind}'" in cache.output
    assert topo.node.addresses("nodelocaldns") is None
    assert topo.node.our_rules() == []


def test_an_interface_deleted_at_run_time_is_back_at_the_next_sync_and_dns_answers_again(clean_node: Topology):
    topo = clean_node
    cache = Cache(topo, "interface-repair")
    try:
        cache.wait_serving()
        cache.wait_rules()
        topo.node.run("ip", "link", "del", "nodelocaldns")
        cache.wait_until(lambda: topo.node.addresses("nodelocaldns") == [LOCAL_IP], "the interface's repair")
        # The sockets stayed bound to the address; with it back, the pod's queries are answered again.
        cache.wait_serving()
        assert cache.process.poll() is None
    finally:
        cache.terminate()
