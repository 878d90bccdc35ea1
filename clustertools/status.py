"""`status`: is the installation healthy? One screen, one line per check, non-zero when not.

What is checked, and why each matters:
- the MutatingWebhookConfiguration exists, calls our Service, and has a caBundle in every entry: without it no pod
  is ever injected; its entries select namespaces labelled localdns.io/inject=enabled (path /mutate) and =dry-run
  (path /dry-run): an entry that sends one label value to the other's path changes pods it should only annotate,
  or annotates pods it should change;
- the caBundle verifies the certificate in the Secret (signature, the `<svc>.<ns>.svc` name the API server dials,
  validity dates): the API server verifies the served certificate against exactly that bundle and name, and when it
  fails, failurePolicy Ignore silently creates pods without injection;
- the served certificate, when the webhook is reachable from here (`--webhook-address` after a port-forward, or the
  Service name inside the cluster): a TLS handshake trusting only the caBundle, for the Service name, as the API
  server makes it; this catches a webhook that has not reloaded a renewed Secret;
- webhook replicas ready; cache pods ready on every node the DaemonSet wants, and no injected pod on a node whose
  cache is not ready; per node, why a cache is not ready and whether the node's fail-open fallback is armed, read
  from the caches' metrics (nodes.py): what decides whether those pods' DNS still works;
- the opted-in and dry-run namespaces with injected/total pods (pods still needing a restart are a warning: see
  `audit`), and NetworkPolicies that block DNS to the local IP (a failure where injected pods' DNS fails now).
"""
from __future__ import annotations

import argparse
import base64
import datetime as dt
import os
import socket
import ssl
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509

from certs.authority import CertificateError, dns_names_of, fingerprint, is_signed_by, load_certificates
from clustertools import cli, netpolicies, nodes
from clustertools.audit import collect
from clustertools.checks import FAIL, OK, UNKNOWN, WARN, Check
from clustertools.output import emit, plural, table
from clustertools.scope import Gaps
from localdns import names
from localdns.kube import JSON, Client, Forbidden, NotFound, describe

RENEW_WARNING = dt.timedelta(days=14)


def selected_modes(hook: JSON) -> set[str]:
    """The values of localdns.io/inject whose namespaces the entry's namespaceSelector takes."""
    selector = hook.get("namespaceSelector") or {}
    label = (selector.get("matchLabels") or {}).get(names.INJECT_LABEL)
    modes = {label} if isinstance(label, str) else set()
    for expression in selector.get("matchExpressions") or []:
        if expression.get("key") == names.INJECT_LABEL and expression.get("operator") == "In":
            values = set(expression.get("values") or [])
            modes = modes & values if modes else values
    return modes


def check_configuration(mwc: JSON) -> tuple[Check, bytes]:
    """The webhook configuration's shape, and its caBundle (PEM, may be empty)."""
    hooks = mwc.get("webhooks") or []
    if not hooks:
        return Check("webhook configuration", FAIL, f"{names.WEBHOOK} has no webhooks"), b""
    problems, notes = [], []
    bundle = b""
    bundles, served = set(), set()
    for hook in hooks:
        client = hook.get("clientConfig") or {}
        service = client.get("service") or {}
        if (service.get("namespace"), service.get("name")) != (names.NAMESPACE, names.WEBHOOK):
            where = f"{service.get('namespace')}/{service.get('name')}" if service else client.get("url", "nowhere")
            notes.append(f"{hook.get('name')} calls {where}, not Service {names.NAMESPACE}/{names.WEBHOOK}")
        try:
            this = base64.b64decode(client.get("caBundle") or "", validate=True)
        except ValueError:
            this = b""
        if not this.strip():
            problems.append(f"{hook.get('name')} has no caBundle (has `python -m certs bootstrap` run?), "
                            "so the API server cannot call it")
        bundle = bundle or this
        if this.strip():
            bundles.add(this)
        modes = selected_modes(hook) & set(names.WEBHOOK_PATHS)
        if not modes:
            notes.append(f"{hook.get('name')} does not select namespaces by {names.OPT_IN_SELECTOR} or "
                         f"{names.DRY_RUN_SELECTOR}")
        for mode in sorted(modes):
            path = service.get("path") or "/"
            if service and path != names.WEBHOOK_PATHS[mode]:
                harm = "changed instead of only annotated" if mode == names.INJECT_DRY_RUN else "not injected"
                problems.append(f"{hook.get('name')} sends namespaces labelled {names.INJECT_LABEL}={mode} to {path}, "
                                f"not {names.WEBHOOK_PATHS[mode]}: their pods are {harm}")
            served.add(mode)
        if hook.get("failurePolicy", "Fail") != "Ignore":
            notes.append(f"{hook.get('name')} has failurePolicy {hook.get('failurePolicy', 'Fail')}: pods cannot be "
                         "created while the webhook is down")
    if len(bundles) > 1:
        notes.append("the entries carry different caBundles (`python -m certs bootstrap` writes the same to each)")
    if names.INJECT_DRY_RUN not in served:
        notes.append(f"no entry for {names.DRY_RUN_SELECTOR}: namespaces labelled so are not reviewed at all "
                     "(re-apply deploy/)")
    if problems:
        return Check("webhook configuration", FAIL, "; ".join(problems + notes)), bundle
    summary = f"{names.WEBHOOK}: {plural(len(hooks), 'webhook')}, caBundle set"
    return Check("webhook configuration", WARN if notes else OK, "; ".join([summary, *notes])), bundle


def check_certificate(bundle_pem: bytes, cert_pem: bytes, now: dt.datetime) -> tuple[Check, x509.Certificate | None]:
    """Does the caBundle verify the Secret's serving certificate for the name the API server dials, now?"""
    name = "certificate"
    try:
        cas = load_certificates(bundle_pem, "the caBundle")
        leaf = load_certificates(cert_pem, f"Secret {names.TLS_SECRET} tls.crt")[0]
    except CertificateError as exc:
        return Check(name, FAIL, str(exc)), None
    host = names.WEBHOOK_SERVICE_HOST
    if not any(is_signed_by(leaf, ca) for ca in cas):
        return Check(name, FAIL, f"Secret {names.TLS_SECRET} holds a certificate that the caBundle's CA did not sign: "
                     "the API server rejects the webhook (run `python -m certs bootstrap`)"), leaf
    if host not in dns_names_of(leaf):
        return Check(name, FAIL, f"the certificate is not valid for {host} (it names "
                     f"{', '.join(dns_names_of(leaf)) or 'no DNS name'})"), leaf
    start, end = leaf.not_valid_before_utc, leaf.not_valid_after_utc
    if now < start:
        return Check(name, FAIL, f"the certificate is not valid before {start:%Y-%m-%d %H:%M} UTC"), leaf
    if now >= end:
        return Check(name, FAIL, f"the certificate expired on {end:%Y-%m-%d %H:%M} UTC"), leaf
    left = end - now
    detail = (f"signed by the caBundle's CA, valid for {host} until {end:%Y-%m-%d} ({left.days} days), "
              f"sha256 {fingerprint(leaf)}")
    if left < RENEW_WARNING:
        return Check(name, WARN, detail + " - renew soon"), leaf
    return Check(name, OK, detail), leaf


def check_served(address: str, bundle_pem: bytes, expected: x509.Certificate | None, explicit: bool,
                 timeout: float = 3.0) -> Check:
    """A TLS handshake trusting only the caBundle, for the Service name: what the API server does."""
    name = "served certificate"
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    try:
        context = ssl.create_default_context(cadata=bundle_pem.decode("ascii", "replace"))
    except (ssl.SSLError, ValueError) as exc:
        return Check(name, FAIL, f"the caBundle cannot be used as a trust store: {exc}")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout) as raw:
            with context.wrap_socket(raw, server_hostname=names.WEBHOOK_SERVICE_HOST) as tls:
                served = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True) or b"")
    except ssl.SSLCertVerificationError as exc:
        return Check(name, FAIL, f"{address} serves a certificate the caBundle does not verify for "
                     f"{names.WEBHOOK_SERVICE_HOST}: {exc.verify_message}")
    except (OSError, ValueError) as exc:
        if explicit:
            return Check(name, FAIL, f"cannot connect to {address}: {exc}")
        return Check(name, UNKNOWN, f"not checked: {address} is not reachable from here ({exc})")
    if expected is not None and served != expected:
        return Check(name, WARN, f"{address} verifies, but serves sha256 {fingerprint(served)} while the Secret holds "
                     f"{fingerprint(expected)}: the webhook has not reloaded the Secret yet")
    return Check(name, OK, f"{address} serves a certificate the caBundle verifies for {names.WEBHOOK_SERVICE_HOST}")


def check_webhook_replicas(deployment: JSON) -> Check:
    want = int(deployment.get("spec", {}).get("replicas", 1))
    ready = int(deployment.get("status", {}).get("readyReplicas") or 0)
    detail = f"{ready}/{want} replicas ready"
    if ready == 0:
        return Check("webhook", FAIL, detail + ": new pods are created without injection (failurePolicy Ignore)")
    return Check("webhook", OK if ready >= want else WARN, detail)


@dataclass
class StatusReport:
    checks: list[Check] = field(default_factory=list)
    namespaces: list[dict[str, Any]] = field(default_factory=list)
    nodes: list[dict[str, Any]] = field(default_factory=list)  # nodes.judge_node's rows, every node
    gaps: Gaps = field(default_factory=Gaps)
    notes: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        if any(c.state == FAIL for c in self.checks):
            return cli.EXIT_FINDINGS
        return cli.EXIT_PARTIAL if self.gaps else cli.EXIT_OK

    def as_dict(self) -> dict[str, Any]:
        return {"healthy": self.exit_code == cli.EXIT_OK, "partial": bool(self.gaps), "gaps": list(self.gaps.items),
                "checks": [c.as_dict() for c in self.checks], "namespaces": self.namespaces, "nodes": self.nodes,
                "notes": self.notes}


def gather(client: Client, args: argparse.Namespace, now: dt.datetime) -> StatusReport:
    report = StatusReport()

    def read(kind: str, name: str, namespace: str | None, check: str) -> JSON | None:
        try:
            return client.get(kind, name, namespace)
        except NotFound:
            report.checks.append(Check(check, FAIL, f"{describe(kind, name, namespace)} is not installed"))
        except Forbidden as exc:
            report.checks.append(Check(check, UNKNOWN, str(exc)))
            report.gaps.add(str(exc))
        return None

    bundle, leaf = b"", None
    mwc = read("MutatingWebhookConfiguration", names.WEBHOOK, None, "webhook configuration")
    if mwc is not None:
        check, bundle = check_configuration(mwc)
        report.checks.append(check)
    secret = read("Secret", names.TLS_SECRET, names.NAMESPACE, "certificate")
    if secret is not None and bundle:
        try:
            cert_pem = base64.b64decode((secret.get("data") or {}).get("tls.crt", ""), validate=True)
        except ValueError:
            cert_pem = b""  # reported as an empty certificate
        check, leaf = check_certificate(bundle, cert_pem, now)
        report.checks.append(check)
    if bundle:
        in_cluster = os.environ.get("KUBERNETES_SERVICE_HOST")
        address = args.webhook_address or (f"{names.WEBHOOK_SERVICE_HOST}:443" if in_cluster else "")
        if address:
            report.checks.append(check_served(address, bundle, leaf, explicit=bool(args.webhook_address)))
        else:
            report.checks.append(Check("served certificate", UNKNOWN, "not checked from outside the cluster: run "
                                       f"`kubectl -n {names.NAMESPACE} port-forward svc/{names.WEBHOOK} "
                                       "8443:443` and add --webhook-address 127.0.0.1:8443"))
    deployment = read("Deployment", names.WEBHOOK, names.NAMESPACE, "webhook")
    if deployment is not None:
        report.checks.append(check_webhook_replicas(deployment))

    audit = collect(client, cli.requested_namespaces(args), cli.load_settings(args))
    report.gaps.items.extend(g for g in audit.gaps.items if g not in report.gaps.items)
    report.notes = audit.notes
    daemonset = read("DaemonSet", names.CACHE_DAEMONSET, names.NAMESPACE, "cache")
    if daemonset is not None:
        checks, report.nodes = nodes.check(client, daemonset, audit.injected_nodes, report.gaps, report.notes, now)
        report.checks += checks
    report.namespaces = audit.as_dict()["namespaces"]
    report.checks.append(check_namespaces(report.namespaces, audit.blocked))
    return report


def check_namespaces(namespaces: list[dict[str, Any]], blocked: netpolicies.Findings) -> Check:
    waiting = sum(ns["needsRestart"] for ns in namespaces)
    injected = sum(ns["injected"] for ns in namespaces)
    pods = sum(ns["pods"] for ns in namespaces)
    dry = sum(ns["mode"] == names.INJECT_DRY_RUN for ns in namespaces)
    detail = (f"{plural(len(namespaces) - dry, 'namespace')} opted in" + (f", {dry} in dry run" if dry else "")
              + f", {injected} of {plural(pods, 'pod')} injected")
    problems, warnings = [], []
    broken = {ns: b for ns, b in blocked.namespaces.items() if b.broken}
    if broken:
        pods = plural(sum(len(b.broken) for b in broken.values()), "injected pod")
        problems.append(f"NetworkPolicies block DNS to {blocked.local_ip} for {pods} in {', '.join(sorted(broken))}: "
                        "their DNS fails (`python -m webhook audit` gives the rule to add)")
    others = sorted(set(blocked.namespaces) - set(broken))
    if others:
        warnings.append(f"NetworkPolicies block DNS to {blocked.local_ip} in {', '.join(others)}: new pods there are "
                        "left on kube-dns or lose large answers (`python -m webhook audit` gives the rule to add)")
    if waiting:
        warnings.append(f"{plural(waiting, 'pod')} created before opting in {'needs' if waiting == 1 else 'need'} a "
                        "restart (`python -m webhook audit`)")
    state = FAIL if problems else WARN if warnings else OK
    return Check("namespaces", state, "; ".join([detail, *problems, *warnings]))


MARKS = {OK: "OK", WARN: "WARN", FAIL: "FAIL", UNKNOWN: "--"}


def render(data: dict[str, Any]) -> str:
    lines = [table(("", "CHECK", "DETAIL"), [(MARKS[c["state"]], c["check"], c["detail"]) for c in data["checks"]],
                   show_headers=False)]
    troubled = [n for n in data["nodes"] if n["state"] != OK]  # the summary is the fallback check's line
    if troubled:
        rows = [(MARKS[n["state"]], n["node"], n["injectedPods"],
                 n["cache"] + (f": {n['reason']}" if n["reason"] else ""), n["detail"]) for n in troubled]
        lines += ["", table(("", "NODE", "INJECTED PODS", "CACHE", "FALLBACK"), rows)]
    if data["namespaces"]:
        rows = [(ns["name"], ns["mode"], f"{ns['injected']}/{ns['pods']}",
                 ns["wouldInject"] if ns["mode"] == names.INJECT_DRY_RUN else ns["needsRestart"], ns["untouched"])
                if ns["readable"] else (ns["name"], ns["mode"], "?", "?", "? (could not list its pods)")
                for ns in data["namespaces"]]
        lines += ["", table(("NAMESPACE", "MODE", "INJECTED/PODS", "NEED RESTART (DRY RUN: WOULD INJECT)",
                             "UNTOUCHED"), rows)]
    lines += [f"note: {note}" for note in data["notes"]]
    if data["partial"]:
        lines += ["", "PARTIAL: some objects could not be read:"] + [f"  - {gap}" for gap in data["gaps"]]
    failed = sum(c["state"] == FAIL for c in data["checks"])
    warned = sum(c["state"] == WARN for c in data["checks"])
    verdict = "healthy" if data["healthy"] else ("NOT healthy" if failed else "unknown (partial)")
    lines += ["", f"localdns is {verdict}: {plural(failed, 'problem')}, {plural(warned, 'warning')}."]
    return "\n".join(lines)


HELP = "check the installation: webhook configuration, certificates, webhook and cache readiness, namespaces"
DESCRIPTION = ("One screen on the health of localdns. Exit 0: healthy (warnings allowed); 1: something is wrong; "
               "2: error (cluster unreachable); 3: some objects could not be read.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    cli.add_common_arguments(parser)
    parser.add_argument("--webhook-address", metavar="HOST:PORT",
                        help="also check the certificate the webhook serves there (e.g. 127.0.0.1:8443 after "
                        "`kubectl port-forward`); default: the Service name when run inside the cluster")


def run(args: argparse.Namespace) -> int:
    report = gather(cli.connect_from(args), args, dt.datetime.now(dt.UTC))
    emit(report.as_dict(), args.output, render)
    return report.exit_code
