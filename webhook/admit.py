"""What the webhook does to one pod, from its decision to the patch: pure, so `/mutate`, `/dry-run` and `preview`
share every step.

1. The injection rule (`policy.decide`).
2. An injection is held back where the namespace's NetworkPolicies would block the pod's DNS to the local IP
   (UDP 53): the pod keeps kube-dns, and the warnings name the policy and give the egress rule to add. When only
   TCP 53 is blocked the pod is injected, with the warning that large answers will fail. Skipped while the
   policies are not known (`policies` None: the view has not synced, or is off) and for host-network pods, to
   which NetworkPolicies do not apply.
3. The patch: the injection, or in a dry-run namespace the one annotation `localdns.io/dry-run` that says what
   would have been injected. A dry run's warnings say they are about a dry run.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from webhook import netpol
from webhook.config import Settings
from webhook.patch import dry_run_patch, patch_for
from webhook.policy import Decision, Outcome, decide

DRY_RUN_OUTCOME = "dry-run"  # the metric's outcome for every pod reviewed for a dry-run namespace


class Admitted(NamedTuple):  # immutable like a frozen dataclass, built in a third of the time (once per admission)
    decision: Decision  # after the NetworkPolicy check
    patch: list[dict[str, Any]]
    warnings: tuple[str, ...]
    outcome: str  # the label of localdns_webhook_admissions_total
    reach: netpol.Reach | None = None  # None: not checked


def admit(pod: Mapping[str, Any], namespace: str, settings: Settings,
          policies: Sequence[netpol.Policy] | None = None, dry_run: bool = False) -> Admitted:
    """The answer for a pod created in `namespace`; `policies` are the namespace's NetworkPolicies, None if unknown."""
    decision = decide(pod, namespace, settings)
    warnings: tuple[str, ...] = (decision.warning,) if decision.warning else ()
    reach = None
    if decision.outcome is Outcome.INJECT and policies and not _host_network(pod):
        reach = netpol.reach(netpol.pod_labels(pod), policies)
        warnings += netpol.warnings_for(reach, settings.local_ip)
        if not reach.udp:
            decision = Decision(Outcome.SKIP, netpol.blocked_reason(reach, settings.local_ip))
    if dry_run:
        dry = tuple(w.replace("localdns: ", "localdns (dry run): ", 1) for w in warnings)
        return Admitted(decision, dry_run_patch(pod, decision), dry, DRY_RUN_OUTCOME, reach)
    return Admitted(decision, patch_for(pod, decision), warnings, decision.outcome.value, reach)


def _host_network(pod: Mapping[str, Any]) -> bool:
    spec = pod.get("spec")
    return isinstance(spec, dict) and spec.get("hostNetwork") is True
