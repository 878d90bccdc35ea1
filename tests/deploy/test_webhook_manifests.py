"""Safety properties of the webhook's manifests, asserted on the rendered output so that a later edit cannot
quietly break one: the webhook can never block a pod or its own namespace, runs with the least privilege, and
stays available through node drains and upgrades."""
from __future__ import annotations

import pytest

from tests.deploy.render import all_containers, container, find, find_all, pod_spec, rendered

NAMESPACE = "localdns-system"


@pytest.fixture(scope="module", params=[("builtin-certs",), ("cert-manager",)], ids=["builtin-certs", "cert-manager"])
def objects(request) -> list[dict]:
    return rendered(request.param)


@pytest.fixture(scope="module")
def default() -> list[dict]:
    return rendered(("builtin-certs",))


def webhook_entries(objects: list[dict]) -> dict[str, dict]:
    """The configuration's entries by the value of localdns.io/inject they select: enabled and dry-run."""
    from localdns.names import INJECT_LABEL
    configuration = find(objects, "MutatingWebhookConfiguration", "localdns-webhook")
    entries = {entry["namespaceSelector"]["matchLabels"][INJECT_LABEL]: entry for entry in configuration["webhooks"]}
    assert len(entries) == len(configuration["webhooks"]) == 2
    return entries


def webhook_entry(objects: list[dict]) -> dict:
    return webhook_entries(objects)["enabled"]


def test_webhook_never_blocks_a_pod(objects) -> None:
    for entry in webhook_entries(objects).values():
        assert entry["failurePolicy"] == "Ignore", entry["name"]
        assert 1 <= entry["timeoutSeconds"] <= 5
        assert entry["sideEffects"] == "None"
        assert entry["admissionReviewVersions"] == ["v1"]
        assert entry["reinvocationPolicy"] == "IfNeeded"


def test_webhook_only_sees_pod_creation(objects) -> None:
    for entry in webhook_entries(objects).values():
        assert entry["rules"] == [{
            "apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"],
            "scope": "Namespaced"}]


def test_namespace_selector_opts_in_and_excludes_system_namespaces(objects) -> None:
    from localdns.names import INJECT_DRY_RUN, INJECT_ENABLED, INJECT_LABEL
    entries = webhook_entries(objects)
    assert set(entries) == {INJECT_ENABLED, INJECT_DRY_RUN}
    for mode, entry in entries.items():
        selector = entry["namespaceSelector"]
        assert selector["matchLabels"] == {INJECT_LABEL: mode}
        assert selector["matchExpressions"] == [{
            "key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system", NAMESPACE]}]
        assert "objectSelector" not in entry  # pods opt out by annotation, which the webhook reads


def test_each_entry_calls_the_same_service_at_its_path(objects) -> None:
    from localdns.names import WEBHOOK_PATHS
    entries = webhook_entries(objects)
    assert {mode: entry["clientConfig"]["service"]["path"] for mode, entry in entries.items()} == WEBHOOK_PATHS
    assert WEBHOOK_PATHS == {"enabled": "/mutate", "dry-run": "/dry-run"}  # DESIGN.md's names
    for mode, entry in entries.items():
        assert entry["clientConfig"]["service"] == {
            "namespace": NAMESPACE, "name": "localdns-webhook", "path": WEBHOOK_PATHS[mode], "port": 443}
        # caBundle is written in the cluster; one in the manifest would be reset on every `kubectl apply`.
        assert "caBundle" not in entry["clientConfig"]
    assert len({entry["name"] for entry in entries.values()}) == 2
    service = find(objects, "Service", "localdns-webhook", NAMESPACE)
    deployment = find(objects, "Deployment", "localdns-webhook", NAMESPACE)
    [port] = service["spec"]["ports"]
    assert port["port"] == 443
    [container_port] = [p for p in container(deployment, "webhook")["ports"] if p["name"] == port["targetPort"]]
    assert container_port["containerPort"] == 8443
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()


def test_two_replicas_spread_over_nodes_with_a_disruption_budget(objects) -> None:
    deployment = find(objects, "Deployment", "localdns-webhook", NAMESPACE)
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}
    spec = pod_spec(deployment)
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    by_host = [c for c in spec["topologySpreadConstraints"] if c["topologyKey"] == "kubernetes.io/hostname"]
    assert by_host and by_host[0]["labelSelector"]["matchLabels"].items() <= labels.items()
    anti = spec["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert anti[0]["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    budget = find(objects, "PodDisruptionBudget", "localdns-webhook", NAMESPACE)
    assert budget["spec"]["minAvailable"] == 1 and budget["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_probes_use_the_webhook_endpoints(objects) -> None:
    webhook = container(find(objects, "Deployment", "localdns-webhook"), "webhook")
    assert webhook["readinessProbe"]["httpGet"] == {"scheme": "HTTPS", "path": "/readyz", "port": "https"}
    assert webhook["livenessProbe"]["httpGet"] == {"scheme": "HTTPS", "path": "/healthz", "port": "https"}


def test_every_webhook_container_is_restricted(objects) -> None:
    """Pod Security Standard "restricted", container by container, plus a read-only root and resources."""
    deployment = find(objects, "Deployment", "localdns-webhook", NAMESPACE)
    spec = pod_spec(deployment)
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] != 0
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC")
    for c in all_containers(deployment):
        context = c["securityContext"]
        assert context["allowPrivilegeEscalation"] is False, c["name"]
        assert context["readOnlyRootFilesystem"] is True, c["name"]
        assert context["runAsNonRoot"] is True, c["name"]
        assert context["capabilities"] == {"drop": ["ALL"]}, c["name"]
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}, c["name"]
        assert not context.get("privileged"), c["name"]
        assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"], c["name"]
        assert c["resources"]["limits"]["memory"], c["name"]
    assert not [v for v in spec["volumes"] if "hostPath" in v]


def test_tls_secret_is_mounted_read_only(objects) -> None:
    deployment = find(objects, "Deployment", "localdns-webhook", NAMESPACE)
    [volume] = [v for v in pod_spec(deployment)["volumes"] if "secret" in v]
    assert volume["secret"]["secretName"] == "localdns-webhook-tls"
    assert volume["secret"]["defaultMode"] & 0o007 == 0  # the key is not world-readable
    mount = [m for m in container(deployment, "webhook")["volumeMounts"] if m["name"] == volume["name"]]
    assert mount and mount[0]["readOnly"] is True
    args = container(deployment, "webhook")["args"]
    assert f"--tls-cert={mount[0]['mountPath']}/tls.crt" in args
    assert f"--tls-key={mount[0]['mountPath']}/tls.key" in args


def test_builtin_certs_bootstrap_first_and_watch_beside(default) -> None:
    deployment = find(default, "Deployment", "localdns-webhook", NAMESPACE)
    bootstrap = container(deployment, "certs-bootstrap", init=True)
    watch = container(deployment, "certs-watch")
    assert bootstrap["command"] == watch["command"] == ["python", "-m", "certs"]
    assert bootstrap["args"][0] == "bootstrap" and watch["args"][0] == "watch"
    assert bootstrap["args"][1:] == watch["args"][1:]  # the same objects, the same cluster domain
    # The volume is set up before the init container runs, so on a first install it must not wait for the Secret
    # that the init container is about to create.
    [volume] = [v for v in pod_spec(deployment)["volumes"] if "secret" in v]
    assert volume["secret"]["optional"] is True
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["kubectl.kubernetes.io/default-container"] == "webhook"


def test_cert_manager_replaces_the_builtin_certs() -> None:
    objects = rendered(("cert-manager",))
    deployment = find(objects, "Deployment", "localdns-webhook", NAMESPACE)
    assert [c["name"] for c in all_containers(deployment)] == ["webhook"]
    # Only the NetworkPolicy view's grant is left: certs' Roles come with builtin-certs alone.
    assert not find_all(objects, "Role")
    assert [r["metadata"]["name"] for r in find_all(objects, "ClusterRole")] == ["localdns-webhook-networkpolicies"]
    assert not find_all(objects, "ValidatingAdmissionPolicy")
    configuration = find(objects, "MutatingWebhookConfiguration", "localdns-webhook")
    serving = find(objects, "Certificate", "localdns-webhook", NAMESPACE)
    # The annotation is on the configuration, and cert-manager's CA injector writes the CA into the caBundle of
    # every one of its entries (both: inject and dry-run); no entry carries a caBundle of its own.
    assert configuration["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == \
        f"{NAMESPACE}/{serving['metadata']['name']}"
    assert len(configuration["webhooks"]) == 2
    assert not [entry for entry in configuration["webhooks"] if "caBundle" in entry["clientConfig"]]
    assert serving["spec"]["dnsNames"] == [
        "localdns-webhook", "localdns-webhook.localdns-system", "localdns-webhook.localdns-system.svc",
        "localdns-webhook.localdns-system.svc.cluster.local"]


# ---- RBAC: the certs helper may touch its own objects, nothing else ----

def certs_secrets(objects: list[dict]) -> tuple[str, str]:
    """The Secrets `certs bootstrap` is told to manage: --secret and --ca-secret."""
    from tests.deploy.render import flag_values
    args = container(find(objects, "Deployment", "localdns-webhook"), "certs-bootstrap", init=True)["args"]
    [secret], [ca_secret] = flag_values(args, "--secret"), flag_values(args, "--ca-secret")
    return secret, ca_secret


def rules_of(objects: list[dict], kind: str) -> list[dict]:
    return [rule for role in find_all(objects, kind) for rule in role["rules"]]


NETWORKPOLICY_VIEW = {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": ["list", "watch"]}


def test_rbac_is_limited_to_its_own_secret_and_webhook_configuration(default) -> None:
    for rule in rules_of(default, "Role") + rules_of(default, "ClusterRole"):
        assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"]
        if rule.get("resourceNames"):
            continue
        # The grants RBAC cannot narrow by name: create (the name is not known at authorization time), and the
        # NetworkPolicy view's list and watch of every namespace (read-only: no get, no write).
        assert rule in ({"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]}, NETWORKPOLICY_VIEW)
    [role] = find_all(default, "Role")
    assert role["metadata"]["namespace"] == NAMESPACE
    secret_rules = [r for r in role["rules"] if r.get("resourceNames")]
    assert secret_rules == [{"apiGroups": [""], "resources": ["secrets"], "resourceNames": list(certs_secrets(default)),
                             "verbs": ["get", "update", "patch"]}]
    cluster_rules = {role["metadata"]["name"]: role["rules"] for role in find_all(default, "ClusterRole")}
    assert cluster_rules == {
        "localdns-webhook-certs": [{"apiGroups": ["admissionregistration.k8s.io"],
                                    "resources": ["mutatingwebhookconfigurations"],
                                    "resourceNames": ["localdns-webhook"], "verbs": ["get", "update", "patch"]}],
        "localdns-webhook-networkpolicies": [NETWORKPOLICY_VIEW]}


def test_roles_are_bound_to_the_webhook_service_account_only(default) -> None:
    deployment = find(default, "Deployment", "localdns-webhook", NAMESPACE)
    account = pod_spec(deployment)["serviceAccountName"]
    for kind, role_kind, count in (("RoleBinding", "Role", 1), ("ClusterRoleBinding", "ClusterRole", 2)):
        bindings = find_all(default, kind)
        assert len(bindings) == count
        for binding in bindings:
            assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}]
            assert binding["roleRef"]["kind"] == role_kind
            find(default, role_kind, binding["roleRef"]["name"])
    # Nothing is granted to the cache: it never talks to the API.
    daemonset = find(default, "DaemonSet", "localdns-cache", NAMESPACE)
    assert pod_spec(daemonset)["automountServiceAccountToken"] is False


def test_secret_create_is_narrowed_by_an_admission_policy(default) -> None:
    policy = find(default, "ValidatingAdmissionPolicy", "localdns-webhook-secret-create")
    binding = find(default, "ValidatingAdmissionPolicyBinding", "localdns-webhook-secret-create")
    assert binding["spec"]["policyName"] == policy["metadata"]["name"]
    assert binding["spec"]["validationActions"] == ["Deny"]
    assert policy["spec"]["failurePolicy"] == "Fail"
    assert policy["spec"]["matchConstraints"]["resourceRules"] == [
        {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["secrets"]}]
    [condition] = policy["spec"]["matchConditions"]
    assert condition["expression"] == \
        f"request.userInfo.username == 'system:serviceaccount:{NAMESPACE}:localdns-webhook'"
    [validation] = policy["spec"]["validations"]
    names = ", ".join(f"'{name}'" for name in certs_secrets(default))
    assert validation["expression"] == \
        f"request.namespace == '{NAMESPACE}' && object.metadata.name in [{names}]"


def test_namespace_admits_the_cache_and_is_excluded_from_injection(default) -> None:
    namespace = find(default, "Namespace", NAMESPACE)
    # hostNetwork + NET_ADMIN need "privileged"; a cluster default of baseline would reject the DaemonSet.
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
    assert "localdns.io/inject" not in namespace["metadata"]["labels"]
