"""The iptables backend is the node's own, decided the way kube-proxy's iptables-wrapper decides it."""
from __future__ import annotations

import pytest

from cache.netsetup.iptables import detect_backend
from tests.conftest import require_root, require_tool
from tests.netsetup.netns import Netns
from tests.netsetup.node import run_node_network

HINT = "*mangle\n:PREROUTING ACCEPT [0:0]\n:KUBE-IPTABLES-HINT - [0:0]\nCOMMIT\n"
CANARY = "*mangle\n:KUBE-KUBELET-CANARY - [0:0]\nCOMMIT\n"


def fake_save(outputs: dict[str, str]):
    calls = []

    def save(binary, args):
        calls.append((binary, tuple(args)))
        return outputs.get(binary, "")
    return save, calls


def rules(n: int) -> str:
    return "*filter\n" + "".join(f"-A INPUT -s 10.0.0.{i}/32 -j ACCEPT\n" for i in range(n)) + "COMMIT\n"


@pytest.mark.parametrize("outputs, expected", [
    ({"iptables-nft-save": HINT}, "nft"),
    ({"ip6tables-nft-save": CANARY}, "nft"),
    ({"iptables-legacy-save": HINT}, "legacy"),
    ({"ip6tables-legacy-save": CANARY, "iptables-nft-save": rules(3)}, "legacy"),
    ({"iptables-legacy-save": rules(5), "iptables-nft-save": rules(2)}, "legacy"),
    ({"iptables-legacy-save": rules(2), "iptables-nft-save": rules(5)}, "nft"),
    ({"iptables-legacy-save": rules(2), "iptables-nft-save": rules(2)}, "nft"),
    ({}, "nft"),
])
def test_detection_follows_kubelet_chains_then_rule_counts(outputs, expected):
    save, _ = fake_save(outputs)
    assert detect_backend(save) == expected


def test_kubelet_chains_in_nft_win_over_more_legacy_rules():
    save, _ = fake_save({"iptables-nft-save": HINT, "iptables-legacy-save": rules(50)})
    assert detect_backend(save) == "nft"


def test_legacy_save_is_never_asked_for_a_single_table():
    # `iptables-legacy-save -t mangle` would create the mangle table in the kernel.
    save, calls = fake_save({})
    detect_backend(save)
    assert all(args == () for binary, args in calls if "legacy" in binary)


def test_a_node_with_kubelet_on_legacy_gets_legacy_rules():
    require_root()
    require_tool("iptables-legacy")
    with Netns() as ns:
        ns.run("iptables-legacy", "-t", "mangle", "-N", "KUBE-IPTABLES-HINT")
        result = run_node_network(ns, """
            result["backend"] = net.iptables.backend
            result["ok"] = net.ensure_rules()
        """, backend=None)
        assert result == {"backend": "legacy", "ok": True, "errors": []}
        assert len(ns.our_rules(backend="legacy")) == 13
        assert ns.our_rules(backend="nft") == []
