"""Every cluster specific is one line of deploy/cluster/cluster.yaml, and that line reaches every object that uses
the value. Each test edits one line in a copy of the tree, as a user would, renders with the real kustomize, and
follows the value into each place (after the kubelet's $(VAR) expansion), and checks that the old value is gone."""
from __future__ import annotations

import json
import re

import pytest
import yaml

from tests.deploy.render import (
    CLUSTER_DOMAIN,
    DEFAULT,
    DEPLOY,
    HEALTH_PORT,
    IMAGE,
    KUBE_DNS,
    KUBE_DNS_UPSTREAM,
    LOCAL_IP,
    METRICS_PORT,
    OPTIONAL_COMPONENTS,
    RUNBOOK_URL,
    all_containers,
    container,
    expanded_args,
    find,
    flag_values,
    plain_env,
    rendered,
    validation_failures,
)

DOWNWARD = {"status.hostIP": "192.0.2.7", "metadata.namespace": "localdns-system", "spec.nodeName": "node-1"}
EVERYTHING = ("builtin-certs", *OPTIONAL_COMPONENTS)


def webhook_env(objects: list[dict]) -> dict[str, str]:
    return plain_env(container(find(objects, "Deployment", "localdns-webhook"), "webhook"))


def cache_args(objects: list[dict]) -> list[str]:
    return expanded_args(container(find(objects, "DaemonSet", "localdns-cache"), "cache"), DOWNWARD)


def text_of(objects: list[dict]) -> str:
    return json.dumps(objects)


def test_cluster_yaml_holds_each_value_once() -> None:
    data = yaml.safe_load((DEPLOY / "cluster" / "cluster.yaml").read_text())["data"]
    assert data == {"localIP": LOCAL_IP, "clusterDomain": CLUSTER_DOMAIN, "kubeDNS": KUBE_DNS,
                    "kubeDNSUpstream": KUBE_DNS_UPSTREAM, "healthPort": str(HEALTH_PORT),
                    "metricsPort": str(METRICS_PORT), "runbookURL": RUNBOOK_URL, "image": IMAGE}
    # No other file of the tree repeats a value (a second copy is a second place to forget).
    for path in DEFAULT.parent.rglob("*.yaml"):
        if path.name == "cluster.yaml":
            continue
        text = path.read_text()
        for value in (LOCAL_IP, KUBE_DNS, KUBE_DNS_UPSTREAM, IMAGE, "cluster.local", HEALTH_PORT, METRICS_PORT,
                      RUNBOOK_URL):
            assert not re.search(rf"(?<![\w.]){re.escape(str(value))}(?![\w.])", text), \
                f"{path.relative_to(DEFAULT.parent)} repeats {value}"


PLACEHOLDERS = {"LOCAL_IP", "KUBE_DNS_IP", "KUBE_DNS_UPSTREAM_IP", "CLUSTER_DOMAIN", "HEALTH_PORT", "METRICS_PORT"}
PORT_KEYS = {"port", "targetPort", "containerPort", "hostPort"}


def leftover_placeholders(node, path: str = "") -> list[str]:
    """Values still holding a placeholder of deploy/base or a component (names of env vars are not values)."""
    if isinstance(node, dict):
        hits = [f"{path}.image = localdns" for key, value in node.items() if key == "image" and value == "localdns"]
        hits += [f"{path}.{key} = 0" for key, value in node.items() if key in PORT_KEYS and value == 0]
        return hits + [hit for key, value in node.items() if key != "name"
                       for hit in leftover_placeholders(value, f"{path}.{key}")]
    if isinstance(node, list):
        return [hit for i, item in enumerate(node) for hit in leftover_placeholders(item, f"{path}[{i}]")]
    if isinstance(node, str) and (node in PLACEHOLDERS or re.search(r"svc\.CLUSTER_DOMAIN$|^RUNBOOK_URL#", node)):
        return [f"{path} = {node}"]
    return []


@pytest.mark.parametrize("components", [("builtin-certs",), ("cert-manager", *OPTIONAL_COMPONENTS), EVERYTHING])
def test_no_placeholder_survives_the_render(components) -> None:
    objects = rendered(components)
    leftovers = [f"{o['kind']}/{o['metadata']['name']}{hit}" for o in objects for hit in leftover_placeholders(o)]
    assert not leftovers


def test_kube_dns_ip_is_a_one_line_edit() -> None:
    new = "10.100.0.10"
    objects = rendered(EVERYTHING, kubeDNS=new)
    assert KUBE_DNS not in text_of(objects)
    # iptables mode: the cache answers on kube-dns's IP ...
    assert f"{new}:53" in flag_values(cache_args(objects), "--listen")
    # ... and the fallback nameserver injected into pods is kube-dns.
    assert webhook_env(objects)["LOCALDNS_FALLBACK_NAMESERVER"] == new
    # Without iptables mode the cache forwards to it.
    assert flag_values(cache_args(rendered(("builtin-certs",), kubeDNS=new)), "--kube-dns") == [new]


def test_kube_dns_upstream_ip_is_a_one_line_edit() -> None:
    new = "10.100.0.53"
    objects = rendered(EVERYTHING, kubeDNSUpstream=new)
    assert KUBE_DNS_UPSTREAM not in text_of(objects)
    assert find(objects, "Service", "kube-dns-upstream", "kube-system")["spec"]["clusterIP"] == new
    assert flag_values(cache_args(objects), "--kube-dns") == [new]


def test_local_ip_is_a_one_line_edit() -> None:
    new = "169.254.0.53"
    for components in (("builtin-certs",), EVERYTHING):
        objects = rendered(components, localIP=new)
        assert LOCAL_IP not in text_of(objects)
        assert webhook_env(objects)["LOCALDNS_LOCAL_IP"] == new
        args = cache_args(objects)
        assert flag_values(args, "--listen")[0] == f"{new}:53"
        assert flag_values(args, "--health") == [f"{new}:{HEALTH_PORT}"]
        cache = container(find(objects, "DaemonSet", "localdns-cache"), "cache")
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert cache[probe]["httpGet"]["host"] == new


@pytest.mark.parametrize("tls", ["builtin-certs", "cert-manager"])
def test_cluster_domain_is_a_one_line_edit(tls: str) -> None:
    new = "k8s.example.internal"
    objects = rendered((tls, *OPTIONAL_COMPONENTS), clusterDomain=new)
    assert "cluster.local" not in text_of(objects)
    assert webhook_env(objects)["LOCALDNS_CLUSTER_DOMAIN"] == new
    assert flag_values(cache_args(objects), "--cluster-domain") == [new]
    deployment = find(objects, "Deployment", "localdns-webhook")
    if tls == "builtin-certs":
        for name, init in (("certs-bootstrap", True), ("certs-watch", False)):
            args = expanded_args(container(deployment, name, init=init), DOWNWARD)
            assert flag_values(args, "--cluster-domain") == [new]
    else:
        names = find(objects, "Certificate", "localdns-webhook")["spec"]["dnsNames"]
        assert names[-1] == f"localdns-webhook.localdns-system.svc.{new}"


@pytest.mark.parametrize("tls", ["builtin-certs", "cert-manager"])
def test_image_is_a_one_line_edit(tls: str) -> None:
    new = "registry.example.com/platform/localdns:1.2.3"
    objects = rendered((tls, *OPTIONAL_COMPONENTS), image=new)
    workloads = [find(objects, "Deployment", "localdns-webhook"), find(objects, "DaemonSet", "localdns-cache")]
    images = {c["name"]: c["image"] for w in workloads for c in all_containers(w)}
    assert set(images.values()) == {new}, images
    assert len(images) == (5 if tls == "builtin-certs" else 3)  # webhook, cache, kube-dns-mirror (+ certs pair)


def test_ports_are_one_line_edits() -> None:
    """healthPort and metricsPort reach every place the cache, its probes and its metrics Service use them, nothing
    keeps the old number (8080 is taken by other agents on many nodes), and the result still validates. The
    uninstall's side: test_uninstall.py."""
    from cache import config as cache_config_module

    health, metrics = "18080", "19253"
    old = re.compile(rf"(?<![\w.])({HEALTH_PORT}|{METRICS_PORT})(?![\w.])")
    for components in (("builtin-certs",), EVERYTHING, ("cert-manager", *OPTIONAL_COMPONENTS)):
        objects = rendered(components, healthPort=health, metricsPort=metrics)
        assert not old.findall(text_of(objects))
        assert not validation_failures(objects)
        daemonset = find(objects, "DaemonSet", "localdns-cache")
        cache = container(daemonset, "cache")
        args = cache_args(objects)
        assert flag_values(args, "--health") == [f"{LOCAL_IP}:{health}"]
        assert flag_values(args, "--metrics") == [f"[{DOWNWARD['status.hostIP']}]:{metrics}"]
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert cache[probe]["httpGet"]["port"] == int(health), probe  # a number: a string names a port
        settings, _ = cache_config_module.load([a for a in args if not a.startswith("--config=")], environ={})
        assert settings.http_address("health") == (LOCAL_IP, int(health))
        assert settings.http_address("metrics") == (DOWNWARD["status.hostIP"], int(metrics))
        service = find(objects, "Service", "localdns-cache-metrics")
        assert service["spec"]["ports"] == [
            {"name": "metrics", "port": int(metrics), "targetPort": int(metrics), "protocol": "TCP"}]
        if "servicemonitor" in components:  # scrapes the Service's port by name, so it follows the number
            monitor = find(objects, "ServiceMonitor", "localdns-cache")
            assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"]
