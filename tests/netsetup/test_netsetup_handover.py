"""An exiting instance leaves the node network alone while another instance still serves its addresses."""
from __future__ import annotations

import ipaddress
import subprocess

from cache.netsetup.sockets import parse_proc_net
from tests.netsetup.netns import PYTHON
from tests.netsetup.node import run_node_network

# Lines as the kernel prints them (one UDP socket on 169.254.20.10:53, one TCP listener on [fd00::10]:53 and an
# established connection that must not count), trailing columns cut.
PROC_UDP = """\
   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer
  123: 0A14FEA9:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4242 2 0000000000000000
"""
PROC_TCP6 = (
    "  sl  local_address                         remote_address                        st tx_queue rx_queue tr "
    "tm->when retrnsmt   uid  timeout inode\n"
    "   0: 000000FD000000000000000010000000:0035 00000000000000000000000000000000:0000 0A 00000000:00000000 "
    "00:00000000 00000000     0        0 777 1 0000000000000000 100 0 0 10 0\n"
    "   1: 000000FD000000000000000010000000:0035 000000FD000000000000000011000000:A000 01 00000000:00000000 "
    "00:00000000 00000000     0        0 778 1 0000000000000000 100 0 0 10 0\n"
)


def test_proc_net_tables_decode_to_addresses_ports_and_inodes():
    assert parse_proc_net(PROC_UDP, 4, listen_only=False) == [(ipaddress.ip_address("169.254.20.10"), 53, "4242")]
    assert parse_proc_net(PROC_TCP6, 6, listen_only=True) == [(ipaddress.ip_address("fd00::10"), 53, "777")]


SERVE = """
import socket, sys, time
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
udp.bind(("169.254.20.10", 53))
tcp = socket.socket()
tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
tcp.bind(("169.254.20.10", 53))
tcp.listen()
print("serving", flush=True)
time.sleep(60)
"""


def test_teardown_is_skipped_while_another_process_serves_the_address(ns):
    run_node_network(ns, "net.ensure_interface(); net.ensure_rules()")
    other = ns.popen(PYTHON, "-c", SERVE, stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline().strip() == "serving"
        # The exiting instance still has its own sockets open on the same address: they do not count.
        result = run_node_network(ns, """
            import socket
            own = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            own.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            own.bind(("169.254.20.10", 53))
            result["others"] = len(net.other_listeners())
            result["removed"] = net.teardown()
        """)
        assert result == {"others": 2, "removed": False, "errors": []}  # the other's UDP socket and TCP listener
        assert len(ns.our_rules()) == 13
        assert ns.addresses("nodelocaldns") == ["169.254.20.10"]
    finally:
        other.kill()
        other.wait()
    result = run_node_network(ns, """
        import socket
        own = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        own.bind(("169.254.20.10", 53))
        result["removed"] = net.teardown()
    """)
    assert result == {"removed": True, "errors": []}
    assert ns.our_rules() == [] and ns.addresses("nodelocaldns") is None


def test_uninstall_command_refuses_while_a_cache_serves_and_cleans_up_after(ns):
    listen = ["--listen", "169.254.20.10:53", "--interface-kind", "bridge"]
    assert ns.run(PYTHON, "-m", "cache.netsetup", "setup", *listen).returncode == 0
    assert len(ns.our_rules()) == 13
    other = ns.popen(PYTHON, "-c", SERVE, stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline().strip() == "serving"
        refused = ns.run(PYTHON, "-m", "cache.netsetup", "teardown", *listen, check=False)
        assert refused.returncode == 1 and "still serves" in refused.stderr
        assert len(ns.our_rules()) == 13
    finally:
        other.kill()
        other.wait()
    status = ns.run(PYTHON, "-m", "cache.netsetup", "status", *listen).stdout
    assert "13 of 13" in status
    assert ns.run(PYTHON, "-m", "cache.netsetup", "teardown", *listen).returncode == 0
    assert ns.our_rules() == [] and ns.addresses("nodelocaldns") is None
