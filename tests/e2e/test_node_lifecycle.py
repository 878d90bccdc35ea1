"""kill -9 leaves the node answering-ready and the next start repairs it; a clean uninstall leaves nothing behind."""
from __future__ import annotations

import signal
import subprocess

from tests.e2e.topology import LOCAL_IP, PYTHON, Cache, Topology


def test_after_kill_9_the_next_start_repairs_interface_and_rules(clean_node: Topology):
    topo = clean_node
    first = Cache(topo, "killed", sync_interval=60)
    try:
        first.wait_serving()
        first.wait_rules()
        first.kill()
    finally:
        first.close()
    # SIGKILL runs no teardown: what it set up is still there.
    assert len(topo.node.our_rules()) == 13
    # Now someone breaks the node while no cache runs: interface gone, some rules gone.
    topo.node.run("ip", "link", "del", "nodelocaldns")
    for line in topo.node.our_rules()[:3]:
        table = "raw" if "NOTRACK" in line else "filter"
        subprocess.run(topo.node.command("sh", "-c", f"iptables-nft -t {table} {line.replace('-A', '-D', 1)}"),
                       check=True)
    assert len(topo.node.our_rules()) == 10

    second = Cache(topo, "restarted", sync_interval=60)
    try:
        second.wait_serving()
        second.wait_rules()
        assert topo.node.addresses("nodelocaldns") == [LOCAL_IP]
        assert len(topo.node.our_rules()) == 13
    finally:
        second.terminate()


def test_the_last_instance_leaving_removes_rules_and_interface(clean_node: Topology):
    topo = clean_node
    cache = Cache(topo, "last", sync_interval=60)
    cache.wait_serving()
    cache.wait_rules()
    assert cache.terminate() == 0, cache.output
    assert "localdns" not in topo.node.iptables_save()
    assert "localdns" not in topo.node.iptables_save(6)
    assert topo.node.addresses("nodelocaldns") is None


def test_skip_teardown_keeps_the_node_ready_and_uninstall_removes_everything(clean_node: Topology):
    topo = clean_node
    cache = Cache(topo, "kept", "--skip-teardown", sync_interval=60)
    cache.wait_serving()
    cache.wait_rules()
    assert cache.terminate() == 0, cache.output
    assert len(topo.node.our_rules()) == 13
    assert topo.node.addresses("nodelocaldns") == [LOCAL_IP]

    # docs/node.md's uninstall step, run on the node once the DaemonSet is gone.
    topo.node.run(PYTHON, "-m", "cache.netsetup", "teardown", "--listen", f"{LOCAL_IP}:53",
                  "--interface-kind", "bridge")
    assert "localdns" not in topo.node.iptables_save()
    assert topo.node.addresses("nodelocaldns") is None


def test_sigterm_while_the_rules_go_in_still_stops_cleanly(clean_node: Topology):
    """A pod deleted as it starts: SIGTERM arrives while the cache inserts its rules (after its sockets serve). It
    must stop as on any SIGTERM (exit 0, teardown), not die of the signal's default action halfway through."""
    topo = clean_node
    cache = Cache(topo, "early-term", sync_interval=60)
    try:
        cache.wait_until(lambda: "serving DNS on" in cache.output, "the sockets serving", timeout=20, poll=0.005)
        cache.process.send_signal(signal.SIGTERM)  # the rules take ~100 ms more: they are going in right now
        assert cache.process.wait(timeout=30) == 0, cache.output
    finally:
        cache.close()
    assert "localdns" not in topo.node.iptables_save()
    assert topo.node.addresses("nodelocaldns") is None
