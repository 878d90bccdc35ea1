"""The names in deploy/ are the code's names: the flags each container passes exist in that program's own parser
and parse, the environment variables are the settings the webhook reads, labels, annotations, object names and
ports are the code's constants, and the RBAC the manifests grant is enough for what `certs bootstrap` really
does, checked against an API server that enforces exactly those rules."""
from __future__ import annotations

import base64
import contextlib
import io

import pytest

from tests.deploy.render import (
    CLUSTER_DOMAIN,
    LOCAL_IP,
    container,
    expanded_args,
    find,
    flag_values,
    plain_env,
    pod_spec,
    rendered,
)

POD_DOWNWARD = {"metadata.namespace": "localdns-system"}


@pytest.fixture(scope="module")
def default() -> list[dict]:
    return rendered(("builtin-certs",))


def test_object_names_are_the_code_constants(default) -> None:
    from localdns import names
    find(default, "Namespace", names.NAMESPACE)
    for kind in ("Deployment", "Service", "ServiceAccount", "MutatingWebhookConfiguration"):
        find(default, kind, names.WEBHOOK)
    find(default, "DaemonSet", names.CACHE_DAEMONSET, names.NAMESPACE)
    deployment = find(default, "Deployment", names.WEBHOOK)
    secrets = [v["secret"]["secretName"] for v in pod_spec(deployment)["volumes"] if "secret" in v]
    assert secrets == [names.TLS_SECRET]
    # The webhook's own default (it imports nothing outside webhook/) leaves the install namespace alone.
    from webhook.config import Settings
    assert names.NAMESPACE in Settings().excluded_namespaces


def test_opt_in_label_is_the_code_constant(default) -> None:
    from localdns import names
    from webhook import policy
    entries = find(default, "MutatingWebhookConfiguration", names.WEBHOOK)["webhooks"]
    assert [e["namespaceSelector"]["matchLabels"] for e in entries] == [
        {names.INJECT_LABEL: names.INJECT_ENABLED}, {names.INJECT_LABEL: names.INJECT_DRY_RUN}]
    assert f"{names.INJECT_LABEL}={names.INJECT_ENABLED}" == names.OPT_IN_SELECTOR == "localdns.io/inject=enabled"
    assert f"{names.INJECT_LABEL}={names.INJECT_DRY_RUN}" == names.DRY_RUN_SELECTOR == "localdns.io/inject=dry-run"
    assert policy.DRY_RUN_ANNOTATION == "localdns.io/dry-run"
    # The opt-out annotation shares the label's key, as the contract says; docs/install.md uses both.
    assert policy.INJECT_ANNOTATION == names.INJECT_LABEL and "disabled" in policy.OPT_OUT_VALUES


def test_each_entry_path_is_a_route_of_the_webhook(default) -> None:
    """The API server posts reviews to the paths of the configuration's entries; the app must answer there."""
    from localdns import names
    from webhook.app import create_app
    paths = {e["clientConfig"]["service"]["path"]
             for e in find(default, "MutatingWebhookConfiguration", names.WEBHOOK)["webhooks"]}
    routes = {route.path for route in create_app().routes if "POST" in (getattr(route, "methods", None) or ())}
    assert paths == set(names.WEBHOOK_PATHS.values()) == {"/mutate", "/dry-run"}
    assert paths <= routes


def test_webhook_serve_flags_parse_and_match_the_ports(default) -> None:
    from webhook.__main__ import build_parser
    webhook = container(find(default, "Deployment", "localdns-webhook"), "webhook")
    assert webhook["command"] == ["python", "-m", "webhook"]
    args = build_parser().parse_args(expanded_args(webhook))
    assert args.command == "serve"
    assert args.port == 8443 == next(p["containerPort"] for p in webhook["ports"] if p["name"] == "https")
    mount = next(m["mountPath"] for m in webhook["volumeMounts"] if m["name"] == "tls")
    assert (args.tls_cert, args.tls_key) == (f"{mount}/tls.crt", f"{mount}/tls.key")
    # Drain finishes inside the grace period, so no admission is cut off by SIGKILL.
    assert args.drain_seconds < pod_spec(find(default, "Deployment", "localdns-webhook"))[
        "terminationGracePeriodSeconds"]


@pytest.mark.parametrize("components", [("builtin-certs",), ("builtin-certs", "fallback-nameserver")],
                         ids=["default", "fallback-nameserver"])
def test_webhook_environment_is_what_the_settings_read(components) -> None:
    from dataclasses import fields

    from webhook.config import ENV_PREFIX, Settings
    objects = rendered(components)
    env = plain_env(container(find(objects, "Deployment", "localdns-webhook"), "webhook"))
    known = {ENV_PREFIX + f.name.upper() for f in fields(Settings)} | {"LOCALDNS_CONFIG", "LOCALDNS_LOG_LEVEL"}
    assert set(env) <= known, f"variables the webhook does not read: {set(env) - known}"
    settings = Settings.from_env(env)  # the webhook's own checks, as at start
    assert settings.local_ip == LOCAL_IP and settings.cluster_domain == CLUSTER_DOMAIN
    # The cache answers where the webhook sends pods.
    cache = container(find(objects, "DaemonSet", "localdns-cache"), "cache")
    listen = flag_values(expanded_args(cache, {"status.hostIP": "192.0.2.7"}), "--listen")
    assert f"{settings.local_ip}:53" in listen
    assert flag_values(expanded_args(cache, {"status.hostIP": "192.0.2.7"}), "--cluster-domain") == \
        [settings.cluster_domain]
    if "fallback-nameserver" in components:
        assert settings.fallback_nameserver == "10.96.0.10"
    else:
        assert settings.fallback_nameserver is None


def test_cache_flags_exist_in_the_cache_parser(default) -> None:
    from cache.config import build_parser
    cache = container(find(default, "DaemonSet", "localdns-cache"), "cache")
    assert cache["command"] == ["python", "-m", "cache"]
    known = {option for action in build_parser()._actions for option in action.option_strings}
    used = {arg.split("=", 1)[0] for arg in cache["args"]}
    assert used <= known, f"flags the cache does not have: {used - known}"


@pytest.mark.parametrize("init,name", [(True, "certs-bootstrap"), (False, "certs-watch")])
def test_certs_flags_parse(default, init: bool, name: str) -> None:
    from certs.__main__ import build_parser
    c = container(find(default, "Deployment", "localdns-webhook"), name, init=init)
    assert c["command"] == ["python", "-m", "certs"]
    args = build_parser().parse_args(expanded_args(c, POD_DOWNWARD))
    assert args.command == name.split("-")[1]
    assert (args.namespace, args.service, args.secret, args.webhook_configuration, args.cluster_domain) == (
        "localdns-system", "localdns-webhook", "localdns-webhook-tls", "localdns-webhook", CLUSTER_DOMAIN)
    service = find(default, "Service", args.service, args.namespace)
    assert service["spec"]["ports"][0]["port"] == 443


# ---- RBAC as the API server evaluates it, against what `certs bootstrap` really requests ----

def test_certs_bootstrap_needs_no_more_than_the_granted_rbac(default) -> None:
    from certs.__main__ import main
    from tests.deploy.rbac import RBACEnforcingAPI

    bootstrap = container(find(default, "Deployment", "localdns-webhook"), "certs-bootstrap", init=True)
    args = expanded_args(bootstrap, POD_DOWNWARD)
    configuration = find(default, "MutatingWebhookConfiguration", "localdns-webhook")
    with RBACEnforcingAPI(default, "localdns-system", "localdns-webhook") as api:
        denied = api.denied
        api.seed(configuration)
        # First install (creates, with a one-day certificate), a later pod start (reads), and a start with the
        # manifests' 90-day lifetime, which renews that certificate (replaces the Secret: update). Propagation 0:
        # the test does not wait the 5 minutes the CA is given to reach every API server.
        short = ["--leaf-days=1", "--leaf-renew-days=0.5"]
        attempts = (("first install", short), ("second pod start", short), ("renewal", ["--propagation-seconds=0"]))
        for attempt, extra in attempts:
            out, err = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = main([*args, *extra, "--kubeconfig", str(api.kubeconfig_path)])
            assert code == 0 and not denied, f"{attempt}: exit {code}, denied {denied}\n{err.getvalue()}"
        assert {r.verb for r in api.requests} >= {"get", "create", "update", "patch"}
        # It did its job under these rules: both Secrets exist and caBundle carries the CA.
        secret = api.get_object("secrets", "localdns-webhook-tls", "localdns-system")
        assert secret is not None and secret["type"] == "kubernetes.io/tls"
        assert api.get_object("secrets", flag_values(args, "--ca-secret")[0], "localdns-system") is not None
        # ... into every entry of the configuration (inject and dry-run).
        entries = api.get_object("mutatingwebhookconfigurations", "localdns-webhook")["webhooks"]
        assert len(entries) == 2
        for entry in entries:
            assert base64.b64decode(entry["clientConfig"]["caBundle"]) == base64.b64decode(secret["data"]["ca.crt"])
        # Every object it wrote is one the admission policy lets it create.
        created = {r.name or (r.body or {}).get("metadata", {}).get("name") for r in api.requests
                   if r.verb == "create"}
        assert created <= {"localdns-webhook-tls", flag_values(args, "--ca-secret")[0]}


def test_webhook_and_its_configuration_exclude_the_same_namespaces(default) -> None:
    """Two layers, one rule: the API server does not call for these namespaces, and the webhook, if called anyway
    (a hand-edited configuration), still leaves them alone."""
    from webhook.config import Settings
    env = plain_env(container(find(default, "Deployment", "localdns-webhook"), "webhook"))
    excluded = Settings.from_env(env).excluded_namespaces
    for entry in find(default, "MutatingWebhookConfiguration", "localdns-webhook")["webhooks"]:
        [expression] = entry["namespaceSelector"]["matchExpressions"]
        assert set(expression["values"]) == set(excluded), entry["name"]
    assert find(default, "Namespace", "localdns-system")["metadata"]["name"] in excluded
