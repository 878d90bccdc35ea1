"""Safety properties of the cache DaemonSet, asserted on the rendered output: it runs on every node with the
least privilege that node setup needs, is upgraded with zero downtime, and never binds a wildcard address.

The cache's own argument parser and config loader (`cache.config`) read the rendered arguments and cache.yaml
exactly as the container would, after the kubelet's $(VAR) expansion, so a flag or key the cache does not know,
or a value it rejects, fails here and not on the nodes."""
from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from tests.deploy.render import (
    HEALTH_PORT,
    KUBE_DNS,
    KUBE_DNS_UPSTREAM,
    LOCAL_IP,
    METRICS_PORT,
    cache_config,
    container,
    expanded_args,
    find,
    flag_values,
    plain_env,
    pod_spec,
    rendered,
)

NODE_IP = "192.0.2.7"  # what the kubelet puts in status.hostIP (documentation range)
DOWNWARD = {"status.hostIP": NODE_IP}


@pytest.fixture(scope="module", params=[("builtin-certs",), ("builtin-certs", "iptables-mode"),
                                        ("builtin-certs", "legacy-iptables-backend")],
                ids=["default", "iptables-mode", "legacy-iptables-backend"])
def objects(request) -> list[dict]:
    return rendered(request.param)


def cache_container(objects: list[dict]) -> dict:
    return container(find(objects, "DaemonSet", "localdns-cache", "localdns-system"), "cache")


def test_runs_on_every_node_on_the_host_network(objects) -> None:
    spec = pod_spec(find(objects, "DaemonSet", "localdns-cache"))
    assert spec["hostNetwork"] is True
    assert spec["dnsPolicy"] == "Default"  # the node's resolvers, not kube-dns through itself
    assert spec["priorityClassName"] == "system-node-critical"
    assert spec["tolerations"] == [{"operator": "Exists"}]
    assert spec["nodeSelector"] == {"kubernetes.io/os": "linux"}  # every taint tolerated: Windows nodes too


def test_upgrade_surges_and_never_leaves_a_node_without_a_cache(objects) -> None:
    daemonset = find(objects, "DaemonSet", "localdns-cache")
    assert daemonset["spec"]["updateStrategy"] == {
        "type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    # With hostNetwork every containerPort becomes a hostPort, and the scheduler would then never place the surge
    # pod beside the old one: the rollout would hang on the first node.
    for c in pod_spec(daemonset)["containers"]:
        assert not c.get("ports"), f"container {c['name']} declares ports; surge needs none"
    # Time to drain (cache.yaml) and tear down before SIGKILL.
    _, config = cache_config(objects)
    assert pod_spec(daemonset)["terminationGracePeriodSeconds"] > config["drain"] + 10


def test_capabilities_are_the_minimum_and_nothing_is_privileged(objects) -> None:
    spec = pod_spec(find(objects, "DaemonSet", "localdns-cache"))
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert not spec.get("hostPID") and not spec.get("hostIPC")
    [c] = spec["containers"]
    context = c["securityContext"]
    assert context["privileged"] is False
    assert context["allowPrivilegeEscalation"] is False
    assert context["readOnlyRootFilesystem"] is True
    assert context["runAsUser"] == 0  # iptables and the xtables lock (see the comment in the manifest)
    assert context["capabilities"]["drop"] == ["ALL"]
    added = set(context["capabilities"]["add"])
    assert {"NET_ADMIN", "NET_BIND_SERVICE"} <= added <= {"NET_ADMIN", "NET_BIND_SERVICE", "NET_RAW"}
    assert spec["automountServiceAccountToken"] is False


def test_only_the_xtables_lock_comes_from_the_host(objects) -> None:
    spec = pod_spec(find(objects, "DaemonSet", "localdns-cache"))
    host_paths = [v for v in spec["volumes"] if "hostPath" in v]
    assert host_paths == [{"name": "xtables-lock", "hostPath": {"path": "/run/xtables.lock", "type": "FileOrCreate"}}]
    mounts = {m["name"]: m for m in spec["containers"][0]["volumeMounts"]}
    assert mounts["xtables-lock"]["mountPath"] == "/run/xtables.lock"


def test_probes_ask_the_cache_on_the_local_ip(objects) -> None:
    c = cache_container(objects)
    for probe, path in (("startupProbe", "/health"), ("livenessProbe", "/health"), ("readinessProbe", "/ready")):
        assert c[probe]["httpGet"] == {"host": LOCAL_IP, "path": path, "port": HEALTH_PORT}, probe
    assert flag_values(expanded_args(c, DOWNWARD), "--health") == [f"{LOCAL_IP}:{HEALTH_PORT}"]


def test_requests_and_a_memory_ceiling(objects) -> None:
    resources = cache_container(objects)["resources"]
    assert resources["requests"]["cpu"] and resources["requests"]["memory"]
    assert resources["limits"]["memory"]
    assert "cpu" not in resources["limits"]  # CPU throttling would delay every pod's DNS on the node


def test_no_wildcard_bind_anywhere(objects) -> None:
    args = expanded_args(cache_container(objects), DOWNWARD)
    _, config = cache_config(objects)
    assert "--allow-wildcard" not in args and not config.get("allow-wildcard")
    addresses = (flag_values(args, "--listen") + list(config.get("listen", [])) + flag_values(args, "--health")
                 + flag_values(args, "--metrics") + [v for k, v in config.items() if k in ("health", "metrics")])
    assert addresses
    for address in addresses:
        host = address.rsplit(":", 1)[0].strip("[]")
        assert not ipaddress.ip_address(host).is_unspecified, address
    assert flag_values(args, "--metrics") == [f"[{NODE_IP}]:{METRICS_PORT}"]  # the node's own address, either family


def test_listens_and_forwards_as_the_mode_requires(objects) -> None:
    args = expanded_args(cache_container(objects), DOWNWARD)
    if any(o["metadata"]["name"] == "kube-dns-upstream" for o in objects):
        # iptables mode: also answer on kube-dns's own IP, so misses must go elsewhere: kube-dns-upstream.
        assert flag_values(args, "--listen") == [f"{LOCAL_IP}:53", f"{KUBE_DNS}:53"]
        assert flag_values(args, "--kube-dns") == [KUBE_DNS_UPSTREAM]
    else:
        assert flag_values(args, "--listen") == [f"{LOCAL_IP}:53"]
        assert flag_values(args, "--kube-dns") == [KUBE_DNS]
    assert "--setup-network" in args
    if any(o["metadata"]["name"] == "kube-dns-upstream" for o in objects):
        # Holding kube-dns's own IP: a stopped pod must not leave it local (DNS for the whole node would die), so it
        # tears down unless another instance still serves (the upgrade handover, docs/node.md).
        assert "--skip-teardown" not in args
    else:
        # A stopping pod (upgrade, eviction, drain) is not an uninstall: it leaves the node set up for the next one.
        # deploy/uninstall removes everything (test_uninstall.py).
        assert "--skip-teardown" in args


def test_config_comes_from_the_generated_configmap(objects) -> None:
    daemonset = find(objects, "DaemonSet", "localdns-cache")
    volume = next(v for v in pod_spec(daemonset)["volumes"] if v["name"] == "config")
    assert volume["configMap"]["name"].startswith("localdns-cache-config-")  # hashed: an edit rolls the DaemonSet
    mount = next(m for m in cache_container(objects)["volumeMounts"] if m["name"] == "config")
    assert flag_values(expanded_args(cache_container(objects), DOWNWARD), "--config") == \
        [f"{mount['mountPath']}/cache.yaml"]


def test_the_cache_accepts_its_rendered_arguments_and_config(objects, tmp_path: Path) -> None:
    """`cache.config.load` (the cache's own parser and checks) on exactly what the container gets."""
    from cache import config as cache_config_module

    text, _ = cache_config(objects)
    config_file = tmp_path / "cache.yaml"
    config_file.write_text(text)
    args = [f"--config={config_file}" if a.startswith("--config=") else a
            for a in expanded_args(cache_container(objects), DOWNWARD)]
    settings, _ = cache_config_module.load(args, environ={})
    assert [f"{host}:{port}" for host, port in settings.listen_addresses()] == flag_values(args, "--listen")
    assert settings.setup_network is True
    assert settings.skip_teardown is ("--skip-teardown" in args)
    assert settings.http_address("health") == (LOCAL_IP, HEALTH_PORT)
    assert settings.http_address("metrics") == (NODE_IP, METRICS_PORT)
    assert settings.cluster_domain == "cluster.local"
    # On an IPv6-primary node status.hostIP is IPv6; the same arguments still parse.
    ipv6_args = [f"--config={config_file}" if a.startswith("--config=") else a
                 for a in expanded_args(cache_container(objects), {"status.hostIP": "fd00::7"})]
    assert cache_config_module.load(ipv6_args, environ={})[0].http_address("metrics") == ("fd00::7", METRICS_PORT)
    # Every key of cache.yaml is one the cache knows (from_file raises on an unknown key) and is not a flag that
    # the DaemonSet also passes (which would silently win over the file).
    file_keys = set(cache_config_module.from_file(str(config_file)))
    flag_keys = {a[2:].split("=", 1)[0].replace("-", "_") for a in args}
    assert not file_keys & flag_keys


def test_cache_env_is_complete(objects) -> None:
    env = plain_env(cache_container(objects), DOWNWARD)
    assert env["LOCAL_IP"] == LOCAL_IP and env["HOST_IP"] == NODE_IP
    # enableServiceLinks off: no stray *_SERVICE_HOST variables (the cache reads KUBE_DNS_UPSTREAM_SERVICE_HOST).
    assert pod_spec(find(objects, "DaemonSet", "localdns-cache"))["enableServiceLinks"] is False


def test_metrics_service_is_headless_and_selects_the_cache(objects) -> None:
    service = find(objects, "Service", "localdns-cache-metrics", "localdns-system")
    daemonset = find(objects, "DaemonSet", "localdns-cache")
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"].items() <= daemonset["spec"]["template"]["metadata"]["labels"].items()
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": METRICS_PORT, "targetPort": METRICS_PORT, "protocol": "TCP"}]


def test_iptables_mode_upstream_service_mirrors_kube_dns() -> None:
    objects = rendered(("builtin-certs", "iptables-mode"))
    service = find(objects, "Service", "kube-dns-upstream", "kube-system")
    # A Service selects pods of its own namespace only: it must sit beside kube-dns.
    assert service["spec"]["selector"] == {"k8s-app": "kube-dns"}
    assert service["spec"]["clusterIP"] == KUBE_DNS_UPSTREAM != KUBE_DNS
    assert sorted((p["protocol"], p["port"], p["targetPort"]) for p in service["spec"]["ports"]) == [
        ("TCP", 53, 53), ("UDP", 53, 53)]


def test_legacy_backend_adds_net_raw_only_there() -> None:
    def added(components):
        return cache_container(rendered(components))["securityContext"]["capabilities"]["add"]
    assert "NET_RAW" not in added(("builtin-certs",))
    assert added(("builtin-certs", "legacy-iptables-backend")) == ["NET_ADMIN", "NET_BIND_SERVICE", "NET_RAW"]
