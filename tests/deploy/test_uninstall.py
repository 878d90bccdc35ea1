"""deploy/uninstall removes from every node exactly what the cache set up: the same addresses, health port and
interface, read from the same cluster.yaml. The cache DaemonSet passes --skip-teardown (a stopping pod is not an
uninstall), so this is the only way the nodes get clean; docs/install.md gives the order of steps.

The teardown command line is parsed by the real `python -m cache.netsetup` entry point; its NodeNetwork is
replaced by a recorder that reports a cache still serving, so main() stops at its refusal and this machine's
network is never touched (the teardown itself is tested in tests/netsetup and tests/e2e as root)."""
from __future__ import annotations

import ipaddress
import shlex

import pytest

from tests.deploy.render import (
    KUBE_DNS,
    LOCAL_IP,
    OPTIONAL_COMPONENTS,
    cache_config,
    container,
    expanded_args,
    find,
    flag_values,
    pod_spec,
    rendered,
    validation_failures,
)

DOWNWARD = {"status.hostIP": "192.0.2.7", "spec.nodeName": "node-1"}


def cleanup_command(objects: list[dict]) -> list[str]:
    cleanup = container(find(objects, "DaemonSet", "localdns-cache-cleanup", "localdns-system"), "cleanup")
    assert cleanup["command"] == ["sh", "-c"]
    [script] = expanded_args(cleanup)
    first, _, rest = script.partition("&&")
    assert "touch /tmp/done" in rest  # ready only once the teardown succeeded on this node
    assert cleanup["readinessProbe"]["exec"]["command"] == ["cat", "/tmp/done"]
    words = shlex.split(first)
    assert words[:3] == ["python", "-m", "cache.netsetup"]
    return words[3:]


def parsed_teardown(argv: list[str], monkeypatch) -> dict:
    import cache.netsetup.__main__ as netsetup
    seen: dict = {}

    class Recorder:
        def __init__(self, addresses, dns_port, health_port, interface_name, interface_kind, on_error, **_):
            seen.update(addresses=addresses, dns_port=dns_port, health_port=health_port,
                        interface_name=interface_name, interface_kind=interface_kind)

        def other_listeners(self) -> set[str]:
            return {"udp:recorder"}  # "a cache still serves": main() refuses before removing anything

        def remove(self) -> None:  # pragma: no cover - must never be reached
            raise AssertionError("teardown went ahead in a test")

    monkeypatch.setattr(netsetup, "NodeNetwork", Recorder)
    assert netsetup.main(argv) == 1
    seen["action"] = argv[0]
    return seen


@pytest.mark.parametrize("components", [("builtin-certs",), ("builtin-certs", *OPTIONAL_COMPONENTS)],
                         ids=["default", "iptables-mode"])
def test_cleanup_removes_what_the_cache_set_up(components, monkeypatch) -> None:
    install = rendered(components)
    cache = container(find(install, "DaemonSet", "localdns-cache"), "cache")
    cache_args = expanded_args(cache, DOWNWARD)
    _, config = cache_config(install)
    teardown = parsed_teardown(cleanup_command(rendered((), directory="uninstall")), monkeypatch)
    assert teardown["action"] == "teardown"
    listen = {f"{address}:{teardown['dns_port']}" for address in teardown["addresses"]}
    assert set(flag_values(cache_args, "--listen")) <= listen
    assert listen == {f"{LOCAL_IP}:53", f"{KUBE_DNS}:53"}
    assert teardown["health_port"] == int(flag_values(cache_args, "--health")[0].rsplit(":", 1)[1])
    assert teardown["interface_name"] == config["interface-name"]
    assert teardown["interface_kind"] == config.get("interface-kind", "dummy")


def test_cleanup_follows_cluster_yaml(monkeypatch) -> None:
    objects = rendered((), directory="uninstall", localIP="169.254.0.53", kubeDNS="10.100.0.10",
                       image="registry.example.com/localdns:9", healthPort="18080")
    assert not validation_failures(objects)
    teardown = parsed_teardown(cleanup_command(objects), monkeypatch)
    assert teardown["addresses"] == [ipaddress.ip_address("169.254.0.53"), ipaddress.ip_address("10.100.0.10")]
    assert teardown["health_port"] == 18080  # the ACCEPT rules for the health port are removed too
    assert container(find(objects, "DaemonSet", "localdns-cache-cleanup"), "cleanup")["image"] == \
        "registry.example.com/localdns:9"


def test_cleanup_runs_on_every_node_with_the_cache_privileges_and_no_more() -> None:
    objects = rendered((), directory="uninstall")
    kinds = sorted(o["kind"] for o in objects)
    assert kinds == ["DaemonSet"]  # nothing else: applying it cannot change the install
    spec = pod_spec(objects[0])
    assert spec["hostNetwork"] is True and spec["tolerations"] == [{"operator": "Exists"}]
    assert spec["nodeSelector"] == pod_spec(find(rendered(("builtin-certs",)), "DaemonSet", "localdns-cache"))[
        "nodeSelector"]  # exactly the cache's nodes
    assert spec["automountServiceAccountToken"] is False
    context = spec["containers"][0]["securityContext"]
    assert context["privileged"] is False and context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"], "add": ["NET_ADMIN", "NET_RAW"]}
    assert [v["hostPath"]["path"] for v in spec["volumes"] if "hostPath" in v] == ["/run/xtables.lock"]
