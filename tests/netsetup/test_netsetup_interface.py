"""The interface holds each listen IP as a host route, is reused when present and never steals an address."""
from __future__ import annotations

from tests.netsetup.node import run_node_network


def test_addresses_land_as_host_routes_and_can_be_bound(ns):
    result = run_node_network(ns, """
        net.ensure_interface()
        import socket
        for family, ip in ((socket.AF_INET, "169.254.20.10"), (socket.AF_INET6, "fd00:ec::10")):
            s = socket.socket(family, socket.SOCK_DGRAM)
            s.bind((ip, 0))
            s.close()
        result["bound"] = True
    """, addresses=("169.254.20.10", "fd00:ec::10"))
    assert result == {"bound": True, "errors": []}
    assert ns.addresses("nodelocaldns") == ["169.254.20.10", "fd00:ec::10"]
    shown = ns.run("ip", "addr", "show", "dev", "nodelocaldns").stdout
    assert "169.254.20.10/32" in shown and "fd00:ec::10/128" in shown
    assert "tentative" not in shown.split("fd00:ec::10")[1].splitlines()[0]


def test_setting_up_twice_reuses_interface_and_addresses(ns):
    first = run_node_network(ns, "net.ensure_interface()")
    index = ns.run("cat", "/sys/class/net/nodelocaldns/ifindex").stdout
    second = run_node_network(ns, "net.ensure_interface(); net.ensure_interface()")
    assert first["errors"] == second["errors"] == []
    assert ns.run("cat", "/sys/class/net/nodelocaldns/ifindex").stdout == index
    assert ns.addresses("nodelocaldns") == ["169.254.20.10"]


def test_a_removed_address_is_put_back(ns):
    run_node_network(ns, "net.ensure_interface()", addresses=("169.254.20.10", "169.254.20.11"))
    ns.run("ip", "addr", "del", "169.254.20.11/32", "dev", "nodelocaldns")
    result = run_node_network(ns, "result['ok'] = net.sync()", addresses=("169.254.20.10", "169.254.20.11"))
    assert result == {"ok": True, "errors": []}
    assert ns.addresses("nodelocaldns") == ["169.254.20.10", "169.254.20.11"]


def test_an_address_owned_by_another_interface_is_a_clear_error_and_stays_there(ns):
    ns.run("ip", "link", "add", "eth9", "type", "bridge")
    ns.run("ip", "addr", "add", "169.254.20.10/32", "dev", "eth9")
    result = run_node_network(ns, """
        try:
            net.ensure_interface()
        except SetupError as exc:
            result["error"] = str(exc)
    """)
    assert "169.254.20.10" in result["error"] and "'eth9'" in result["error"]
    assert result["errors"] == ["interfaceadd"]
    assert ns.addresses("eth9") == ["169.254.20.10"]
    assert ns.addresses("nodelocaldns") is None


def test_a_kernel_without_the_kind_names_the_option_to_change(ns):
    # This machine's kernel has no dummy module; elsewhere an invented kind fails the same way.
    kind = "dummy" if ns.run("ip", "link", "add", "probe0", "type", "dummy", check=False).returncode else "nosuchkind"
    result = run_node_network(ns, """
        try:
            net.ensure_interface()
        except SetupError as exc:
            result["error"] = str(exc)
    """, kind=kind)
    assert "--interface-kind" in result["error"] and repr(kind) in result["error"]
    assert result["errors"] == ["interfaceadd"]
