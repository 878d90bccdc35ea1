"""The default install and every component render with the real kubectl kustomize (v5.7), and every object they
produce is valid for Kubernetes 1.35 (kubernetes-validate, strict: an unknown or misspelled field is an error).

Objects of CRDs that are not part of Kubernetes (cert-manager.io, monitoring.coreos.com) have no schema in
kubernetes-validate; they are checked against the fields their CRDs require, by hand, below."""
from __future__ import annotations

import kubernetes_validate
import pytest

from tests.deploy.render import (
    ALL_COMPONENTS,
    CRD_GROUPS,
    DEFAULT,
    DEPLOY,
    K8S_VERSION,
    OPTIONAL_COMPONENTS,
    find,
    find_all,
    kustomize,
    rendered,
    validation_failures,
)

CONFIGURATIONS = {
    "default": ("builtin-certs",),
    "cert-manager": ("cert-manager",),
    **{name: ("builtin-certs", name) for name in OPTIONAL_COMPONENTS},
    "everything": ("builtin-certs", *OPTIONAL_COMPONENTS),
    "everything-cert-manager": ("cert-manager", *OPTIONAL_COMPONENTS),
}


@pytest.fixture(scope="module", params=[*sorted(CONFIGURATIONS), "uninstall"])
def configuration(request) -> tuple[str, list[dict]]:
    if request.param == "uninstall":
        return request.param, rendered((), directory="uninstall")
    return request.param, rendered(CONFIGURATIONS[request.param])


def test_kubernetes_validate_knows_the_version() -> None:
    # If a kubernetes-validate upgrade drops 1.35, fail here with a clear reason rather than validating nothing.
    kubernetes_validate.validate({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}},
                                 K8S_VERSION, strict=True)


def test_every_object_validates_against_the_kubernetes_schema(configuration) -> None:
    name, objects = configuration
    assert objects, f"{name} rendered nothing"
    failures = validation_failures(objects)
    assert not failures, "\n".join(failures)


def test_only_expected_custom_resources(configuration) -> None:
    name, objects = configuration
    custom = sorted((o["apiVersion"], o["kind"]) for o in objects if o["apiVersion"].startswith(CRD_GROUPS))
    expected = []
    if name == "uninstall":
        assert custom == []
        return
    if "cert-manager" in CONFIGURATIONS[name]:
        expected += [("cert-manager.io/v1", "Certificate")] * 2 + [("cert-manager.io/v1", "Issuer")] * 2
    if "servicemonitor" in CONFIGURATIONS[name]:
        expected += [("monitoring.coreos.com/v1", "ServiceMonitor")] * 2
        expected += [("monitoring.coreos.com/v1", "PrometheusRule")]
    assert custom == sorted(expected)


def test_no_object_twice_and_all_labelled(configuration) -> None:
    _, objects = configuration
    ids = [(o["apiVersion"], o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in objects]
    assert len(ids) == len(set(ids))
    # `kubectl get ... -l app.kubernetes.io/part-of=localdns -A` must find everything, e.g. to check an uninstall.
    unlabelled = [i for o, i in zip(objects, ids) if o["metadata"].get("labels", {}).get("app.kubernetes.io/part-of")
                  != "localdns"]
    assert not unlabelled


def pod_specs(node) -> list[dict]:
    """Every pod spec inside an object, whatever the kind (Pod, a workload's template, a CronJob's job template,
    or a custom resource that carries one): a mapping with a list of containers is a pod spec."""
    if isinstance(node, dict):
        if isinstance(node.get("containers"), list):
            return [node]
        return [spec for value in node.values() for spec in pod_specs(value)]
    if isinstance(node, list):
        return [spec for item in node for spec in pod_specs(item)]
    return []


def selects_only_linux_nodes(spec: dict) -> bool:
    """The scheduler can place this pod on Linux nodes only: the nodeSelector says so, or every term of the
    required node affinity (the terms are ORed) requires kubernetes.io/os In [linux]."""
    if spec.get("nodeSelector", {}).get("kubernetes.io/os") == "linux":
        return True
    required = spec.get("affinity", {}).get("nodeAffinity", {}).get("requiredDuringSchedulingIgnoredDuringExecution")
    terms = (required or {}).get("nodeSelectorTerms", [])
    return bool(terms) and all(
        any(e["key"] == "kubernetes.io/os" and e["operator"] == "In" and e.get("values") == ["linux"]
            for e in term.get("matchExpressions", []))
        for term in terms)


def test_every_pod_lands_on_linux_nodes(configuration) -> None:
    """The image, iptables and the link-local interface are Linux's; the DaemonSets tolerate every taint, so in a
    cluster with Windows nodes only a node selection keeps their pods off them (kubernetes/kubernetes#94366)."""
    name, objects = configuration
    workloads = [(o, spec) for o in objects for spec in pod_specs(o)]
    assert workloads, f"{name} renders no pod at all"
    unselected = [f"{o['kind']}/{o['metadata']['name']}" for o, spec in workloads if not selects_only_linux_nodes(spec)]
    assert not unselected, f"may be scheduled on Windows nodes: {unselected}"


@pytest.mark.parametrize("spec,linux_only", [
    ({"nodeSelector": {"kubernetes.io/os": "linux"}}, True),
    ({"nodeSelector": {"kubernetes.io/os": "windows"}}, False),
    ({"nodeSelector": {"kubernetes.io/arch": "amd64"}}, False),
    ({}, False),
    ({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]}]}]}}}}, True),
    # Terms are ORed: a second term without the OS lets the pod go anywhere.
    ({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]}]},
        {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["a"]}]}]}}}}, False),
    ({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "kubernetes.io/os", "operator": "NotIn", "values": ["linux"]}]}]}}}}, False),
])
def test_linux_node_selection_reads_both_forms(spec: dict, linux_only: bool) -> None:
    assert selects_only_linux_nodes(spec) is linux_only


def test_cluster_values_file_is_never_applied(configuration) -> None:
    _, objects = configuration
    assert not [o for o in objects if o["metadata"]["name"] == "localdns-cluster"]


def test_deploy_root_is_the_default_install() -> None:
    # `kubectl apply -k deploy/` and `kubectl apply -k deploy/default` apply the same objects.
    assert kustomize(DEPLOY) == kustomize(DEFAULT)
    assert kustomize(DEFAULT) == rendered(("builtin-certs",))


def test_default_install_has_the_expected_objects() -> None:
    objects = rendered(("builtin-certs",))
    kinds = sorted((o["kind"], o["metadata"]["name"]) for o in objects if not o["kind"] == "ConfigMap")
    assert kinds == sorted([
        ("Namespace", "localdns-system"),
        ("ServiceAccount", "localdns-webhook"), ("ServiceAccount", "localdns-cache"),
        ("Deployment", "localdns-webhook"), ("PodDisruptionBudget", "localdns-webhook"),
        ("Service", "localdns-webhook"), ("Service", "localdns-cache-metrics"), ("Service", "localdns-kube-dns"),
        ("MutatingWebhookConfiguration", "localdns-webhook"),
        ("DaemonSet", "localdns-cache"),
        ("Role", "localdns-webhook-certs"), ("RoleBinding", "localdns-webhook-certs"),
        ("ClusterRole", "localdns-webhook-certs"), ("ClusterRoleBinding", "localdns-webhook-certs"),
        ("ClusterRole", "localdns-webhook-networkpolicies"), ("ClusterRoleBinding", "localdns-webhook-networkpolicies"),
        ("ValidatingAdmissionPolicy", "localdns-webhook-secret-create"),
        ("ValidatingAdmissionPolicyBinding", "localdns-webhook-secret-create"),
    ])
    configmaps = [o["metadata"]["name"] for o in find_all(objects, "ConfigMap")]
    assert len(configmaps) == 1 and configmaps[0].startswith("localdns-cache-config-")  # hash suffix: edits roll


def test_cert_manager_resources_have_their_required_fields() -> None:
    objects = rendered(("cert-manager",))
    for issuer in find_all(objects, "Issuer"):
        assert issuer["metadata"]["namespace"] == "localdns-system"
        assert len(set(issuer["spec"]) & {"selfSigned", "ca", "acme", "vault", "venafi"}) == 1
    ca_issuer = find(objects, "Issuer", "localdns-ca")
    ca = find(objects, "Certificate", "localdns-ca")
    assert ca["spec"]["isCA"] is True and ca["spec"]["secretName"] == ca_issuer["spec"]["ca"]["secretName"]
    assert ca["spec"]["issuerRef"] == {"kind": "Issuer", "name": "localdns-selfsigned"}
    serving = find(objects, "Certificate", "localdns-webhook")
    assert serving["spec"]["secretName"] == "localdns-webhook-tls"
    assert serving["spec"]["issuerRef"] == {"kind": "Issuer", "name": "localdns-ca"}
    assert "server auth" in serving["spec"]["usages"]
    for cert in (ca, serving):
        assert cert["spec"]["privateKey"] == {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"}


def test_servicemonitors_point_at_real_service_ports() -> None:
    objects = rendered(("builtin-certs", "servicemonitor"))
    for monitor in find_all(objects, "ServiceMonitor"):
        services = [s for s in find_all(objects, "Service")
                    if s["metadata"].get("namespace") == monitor["metadata"]["namespace"]
                    and monitor["spec"]["selector"]["matchLabels"].items() <= s["metadata"].get("labels", {}).items()]
        assert len(services) == 1, f"ServiceMonitor {monitor['metadata']['name']} selects {len(services)} Services"
        port_names = {p["name"] for p in services[0]["spec"]["ports"]}
        assert {e["port"] for e in monitor["spec"]["endpoints"]} <= port_names


@pytest.mark.parametrize("component", ALL_COMPONENTS)
def test_each_component_is_a_kustomize_component(component: str) -> None:
    import yaml
    document = yaml.safe_load((DEPLOY / "components" / component / "kustomization.yaml").read_text())
    assert document["kind"] == "Component"
    # Cluster values reach objects through replacements, never the deprecated `vars`.
    assert "vars" not in document
