"""Rules are ensured idempotently, repaired when removed, and failures are counted, never raised."""
from __future__ import annotations

import fcntl
import os
import shutil

import pytest

from tests.conftest import require_tool
from tests.netsetup.node import run_node_network


@pytest.fixture
def ns(ns):
    """The namespace of tests/netsetup/conftest.py, for rules: iptables-nft is needed too."""
    require_tool("iptables-nft")
    return ns


def test_rules_go_in_first_and_only_once(ns):
    ns.run("iptables-nft", "-A", "INPUT", "-p", "udp", "--dport", "53", "-j", "DROP")  # a node's own firewall
    result = run_node_network(ns, "result['first'] = net.ensure_rules(); result['second'] = net.ensure_rules()")
    assert result == {"first": True, "second": True, "errors": []}
    rules = ns.our_rules()
    assert len(rules) == 13 and len(set(rules)) == 13
    input_chain = [line for line in ns.iptables_save().splitlines() if line.startswith("-A INPUT")]
    assert "localdns" in input_chain[0] and input_chain[-1].endswith("-j DROP")
    assert all(line.count("-p") == 1 for line in rules)


def test_ipv6_rules_go_to_ip6tables(ns):
    result = run_node_network(ns, "result['ok'] = net.ensure_rules()", addresses=("169.254.20.10", "fd00:ec::10"))
    assert result == {"ok": True, "errors": []}
    assert len(ns.our_rules(4)) == 13 and len(ns.our_rules(6)) == 13
    assert all("fd00:ec::10" in line for line in ns.our_rules(6))


def test_a_rule_deleted_by_someone_else_is_repaired(ns):
    run_node_network(ns, "net.ensure_rules()")
    victim = next(line for line in ns.our_rules() if line.startswith("-A PREROUTING") and "-p udp" in line)
    ns.run("sh", "-c", f"iptables-nft -t raw {victim.replace('-A', '-D', 1)}")
    assert victim not in ns.our_rules()
    assert run_node_network(ns, "result['ok'] = net.ensure_rules()") == {"ok": True, "errors": []}
    assert victim in ns.our_rules() and len(ns.our_rules()) == 13


def test_a_missing_iptables_binary_is_counted_and_logged(ns, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("ip",):  # everything the child needs except iptables
        (bin_dir / tool).symlink_to(shutil.which(tool))
    result = run_node_network(ns, "result['ok'] = net.ensure_rules()", env={"PATH": str(bin_dir)})
    assert result == {"ok": False, "errors": ["iptables"]}
    assert ns.our_rules() == []


def test_a_failing_iptables_binary_is_counted_and_logged(ns, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "iptables-nft"
    fake.write_text("#!/bin/sh\necho 'iptables: broken for this test' >&2\nexit 2\n")
    fake.chmod(0o755)
    result = run_node_network(ns, "result['ok'] = net.ensure_rules()",
                              env={"PATH": f"{bin_dir}:{os.environ['PATH']}"})
    assert result == {"ok": False, "errors": ["iptables"]}
    assert ns.our_rules() == []


def test_a_held_xtables_lock_is_waited_for_then_reported_and_the_next_sync_succeeds(ns):
    fd = os.open(ns.lockfile, os.O_CREAT | os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        held = run_node_network(ns, "result['ok'] = net.ensure_rules()")
    finally:
        os.close(fd)
    assert held == {"ok": False, "errors": ["iptables_lock"]}
    assert ns.our_rules() == []
    assert run_node_network(ns, "result['ok'] = net.ensure_rules()") == {"ok": True, "errors": []}
    assert len(ns.our_rules()) == 13


def test_teardown_removes_rules_then_interface_even_duplicated_ones(ns):
    run_node_network(ns, "net.ensure_interface(); net.ensure_rules()")
    duplicate = ns.our_rules()[0]
    ns.run("sh", "-c", f"iptables-nft -t raw {duplicate.replace('-A', '-I', 1)}")
    result = run_node_network(ns, "result['removed'] = net.teardown()")
    assert result == {"removed": True, "errors": []}
    assert ns.our_rules() == []
    assert ns.addresses("nodelocaldns") is None
    assert "localdns" not in ns.iptables_save()


def test_teardown_of_nothing_is_quiet(ns):
    assert run_node_network(ns, "result['removed'] = net.teardown()") == {"removed": True, "errors": []}
