"""The fail-open fallback's rules on a real iptables (nft and legacy backends, IPv4 and IPv6): the DNAT chain is
created before the jumps to it, reprogrammed in one transaction when the endpoints change, left alone while they are
unknown, and removed with everything else; switching the fallback off or on removes the other variant's rules."""
from __future__ import annotations

import pytest

from tests.conftest import require_tool
from tests.netsetup.netns import Netns
from tests.netsetup.node import run_node_network

V4, V6 = "169.254.20.10", "fd00:ec::10"


@pytest.fixture
def ns(ns):
    """The namespace of tests/netsetup/conftest.py, for rules: iptables-nft is needed too."""
    require_tool("iptables-nft")
    return ns




def chain(ns: Netns, family: int = 4, backend: str = "nft") -> list[str]:
    tool = f"{'iptables' if family == 4 else 'ip6tables'}-{backend}"
    done = ns.run(tool, "-t", "nat", "-S", "LOCALDNS-FALLBACK", check=False)
    return [line for line in done.stdout.splitlines() if line.startswith("-A")] if done.returncode == 0 else []


def dnat_targets(ns: Netns, family: int = 4, backend: str = "nft") -> list[str]:
    return [line.split("--to-destination ")[1] for line in chain(ns, family, backend)]


def test_the_chain_holds_the_endpoints_and_follows_their_changes(ns):
    result = run_node_network(ns, """
        from ipaddress import ip_address as ip
        net.fallback_endpoints = [ip("10.77.0.4"), ip("10.77.0.2")]
        result["first"] = net.ensure_rules()
        result["programmed"] = [str(a) for a in net.programmed]
    """, fallback=True)
    assert result == {"first": True, "programmed": ["10.77.0.2", "10.77.0.4"], "errors": []}
    assert dnat_targets(ns) == ["10.77.0.2", "10.77.0.4"]
    assert "--every 2 --packet 0" in chain(ns)[0]
    assert len(ns.our_rules()) == 15 + 2  # the table's rules (13 + 2 jumps) and the chain's two DNATs
    jumps = [line for line in ns.our_rules() if "-j LOCALDNS-FALLBACK" in line]
    assert len(jumps) == 2 and {"-p udp" in line for line in jumps} == {True, False}
    raw = [line for line in ns.iptables_save().splitlines() if line.startswith("-A PREROUTING") and "NOTRACK" in line]
    assert len(raw) == 2 and all("-m socket --nowildcard" in line for line in raw)

    # A new set replaces the old one; None (a cache that has not resolved yet) leaves it.
    changed = run_node_network(ns, """
        from ipaddress import ip_address as ip
        net.fallback_endpoints = [ip("10.77.0.9")]
        result["ok"] = net.ensure_rules()
    """, fallback=True)
    assert changed == {"ok": True, "errors": []}
    assert dnat_targets(ns) == ["10.77.0.9"] and "--every" not in chain(ns)[0]
    kept = run_node_network(ns, "result['ok'] = net.ensure_rules(); result['programmed'] = "
                                "[str(a) for a in net.programmed]", fallback=True)
    assert kept == {"ok": True, "programmed": ["10.77.0.9"], "errors": []}
    assert dnat_targets(ns) == ["10.77.0.9"]


def test_ipv6_addresses_get_their_own_chain_with_the_ipv6_endpoints_only(ns):
    result = run_node_network(ns, """
        from ipaddress import ip_address as ip
        net.fallback_endpoints = [ip("10.77.0.2"), ip("fd00:77::2"), ip("fd00:77::3")]
        result["ok"] = net.ensure_rules()
    """, addresses=(V4, V6), fallback=True)
    assert result == {"ok": True, "errors": []}
    assert dnat_targets(ns, 4) == ["10.77.0.2"]
    assert dnat_targets(ns, 6) == ["fd00:77::2", "fd00:77::3"]
    assert len([line for line in ns.our_rules(6) if "-j LOCALDNS-FALLBACK" in line]) == 2


def test_switching_the_fallback_off_and_on_leaves_only_the_variant_asked_for(ns):
    run_node_network(ns, "from ipaddress import ip_address as ip\n"
                         "net.fallback_endpoints = [ip('10.77.0.2')]\nnet.ensure_rules()", fallback=True)
    assert len(ns.our_rules()) == 16
    off = run_node_network(ns, "result['ok'] = net.ensure_rules()")
    assert off == {"ok": True, "errors": []}
    assert len(ns.our_rules()) == 13 and chain(ns) == []
    assert "LOCALDNS-FALLBACK" not in ns.iptables_save() and "socket" not in ns.iptables_save()
    on = run_node_network(ns, "result['ok'] = net.ensure_rules()", fallback=True)
    assert on == {"ok": True, "errors": []}
    assert len(ns.our_rules()) == 15  # an empty chain until a cache resolves the endpoints
    raw = [line for line in ns.iptables_save().splitlines() if line.startswith("-A PREROUTING") and "NOTRACK" in line]
    assert len(raw) == 2 and all("-m socket" in line for line in raw)


@pytest.mark.parametrize("backend", ["nft", "legacy"])
def test_teardown_removes_rules_and_chains_of_both_families(ns, backend):
    require_tool(f"iptables-{backend}")
    result = run_node_network(ns, """
        from ipaddress import ip_address as ip
        net.fallback_endpoints = [ip("10.77.0.2"), ip("fd00:77::2")]
        net.ensure_interface()
        result["ok"] = net.ensure_rules()
        result["removed"] = net.teardown()
    """, addresses=(V4, V6), fallback=True, backend=backend)
    assert result == {"ok": True, "removed": True, "errors": []}
    for family in (4, 6):
        assert ns.our_rules(family, backend) == []
        assert "LOCALDNS" not in ns.iptables_save(family, backend)
    assert ns.addresses("nodelocaldns") is None


def test_a_teardown_without_the_fallback_flag_still_removes_the_fallback(ns):
    # deploy/uninstall runs `python -m cache.netsetup teardown` without --fallback-endpoints.
    run_node_network(ns, "from ipaddress import ip_address as ip\n"
                         "net.fallback_endpoints = [ip('10.77.0.2')]\nnet.ensure_rules()", fallback=True)
    result = run_node_network(ns, "result['removed'] = net.teardown()")
    assert result == {"removed": True, "errors": []}
    assert ns.our_rules() == [] and "LOCALDNS" not in ns.iptables_save()
