"""One node/pod/kube-dns topology for the e2e run; each test starts its own cache and leaves the node clean."""
from __future__ import annotations

import shutil

import pytest

from tests.conftest import require_root, require_tool
from tests.e2e.topology import LOCAL_IP, LOCAL_IP6, PYTHON, Topology, build, destroy, tmpdir


@pytest.fixture(scope="session")
def topo():
    require_root()
    for tool in ("dnsmasq", "dig", "dnsperf", "conntrack", "iptables-nft", "getent"):
        require_tool(tool)
    workdir = tmpdir("localdns-e2e-")
    topology = build(workdir)
    try:
        yield topology
    finally:
        destroy(topology)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def clean_node(topo: Topology):
    """The node as a fresh install finds it, and again after the test whatever the test left."""
    reset(topo)
    yield topo
    reset(topo)


def reset(topo: Topology) -> None:
    topo.node.run(PYTHON, "-m", "cache.netsetup", "teardown", "--force", "--listen", f"{LOCAL_IP}:53",
                  "--listen", f"[{LOCAL_IP6}]:53", "--interface-kind", "bridge", check=False)
    topo.flush_conntrack()
