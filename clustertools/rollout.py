"""`rollout`: restart the workloads `audit` finds, the way `kubectl rollout restart` does.

Dry run unless `--yes`. A restart is a strategic merge patch of `kubectl.kubernetes.io/restartedAt` (RFC 3339,
now) into the pod template's annotations; the controller then replaces the pods, and the webhook injects the new
ones. At most `--max-concurrent` restarts run at once; each is watched until the controller reports it complete
(the same conditions as `kubectl rollout status`) or `--timeout` passes. A restart that does not complete stops
the run: no further workload is touched, because whatever broke it (a broken cache, for one) would break the next.
Jobs and CronJobs are never restarted; bare pods are deleted only with `--delete-bare-pods`.
"""
from __future__ import annotations

import argparse
import datetime as dt
import shutil
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

from clustertools import cli
from clustertools.audit import DELETE, NEEDS_RESTART, RESTART, AuditResult, OwnerGroup, classify, collect
from clustertools.checks import FAIL
from clustertools.nodes import check_cache
from clustertools.output import emit, plural, table
from clustertools.owners import Owner, OwnerResolver
from clustertools.readiness import Progress, cannot_restart, progress, restart_patch
from clustertools.scope import Gaps
from clustertools.status import check_webhook_replicas
from localdns import names
from localdns.kube import Client, Conflict, Forbidden, KubeError, NotFound, describe
from webhook.config import Settings

# Target states.
PLANNED, RESTARTING, READY, FAILED, SKIPPED, NOT_STARTED, DELETED = (
    "planned", "restarting", "ready", "failed", "skipped", "not-started", "deleted")


@dataclass
class Target:
    group: OwnerGroup
    state: str = PLANNED
    message: str = ""
    generation: int = 0
    started: float = 0.0
    elapsed: float = 0.0

    @property
    def owner(self) -> Owner:
        return self.group.owner

    @property
    def label(self) -> str:
        return f"{self.owner.kind.lower()} {self.owner.namespace}/{self.owner.name}"

    def as_dict(self) -> dict[str, Any]:
        return self.owner.as_dict() | {
            "pods": sorted(self.group.pods), "result": self.state, "message": self.message,
            "seconds": round(self.elapsed, 1),
        }


class Reporter:
    """Progress on stderr: one redrawn bar on a terminal, plain lines (one per change) otherwise."""

    def __init__(self, total: int, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.total = total
        self.finished = 0
        self._last: dict[str, str] = {}

    def update(self, target: Target) -> None:
        final = target.state not in (PLANNED, RESTARTING)
        if self.tty:
            self._line(target) if final else self._bar(target)
        elif self._last.get(target.label) != f"{target.state}: {target.message}":
            self._line(target)
        self._last[target.label] = f"{target.state}: {target.message}"

    def _line(self, target: Target) -> None:
        prefix = "\r\033[K" if self.tty else ""
        self.stream.write(f"{prefix}{target.label}: {target.state}: {target.message}\n")
        self.stream.flush()

    def _bar(self, target: Target) -> None:
        width = 20
        filled = width * self.finished // max(self.total, 1)
        text = (f"[{'#' * filled}{'.' * (width - filled)}] {self.finished}/{self.total} "
                f"{target.label}: {target.message} ({target.elapsed:.0f}s)")
        columns = shutil.get_terminal_size((100, 20)).columns
        self.stream.write("\r\033[K" + text[: columns - 1])
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\r\033[K")
            self.stream.flush()


@dataclass
class Runner:
    client: Client
    settings: Settings
    max_concurrent: int = 1
    timeout: float = 300.0
    poll_interval: float = 2.0
    reporter: Reporter | None = None
    now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    stopped: str = field(default="", init=False)

    def run(self, targets: list[Target]) -> None:
        queue = deque(targets)
        active: list[Target] = []
        while queue or active:
            while queue and len(active) < self.max_concurrent and not self.stopped:
                target = queue.popleft()
                self._start(target)
                if target.state == RESTARTING:
                    active.append(target)
            if self.stopped:
                for target in queue:
                    target.state, target.message = NOT_STARTED, f"not started: {self.stopped}"
                queue.clear()
            for target in list(active):
                self._check(target)
                if target.state != RESTARTING:
                    active.remove(target)
            if active:
                self.sleep(self.poll_interval)

    def _report(self, target: Target) -> None:
        if target.state not in (PLANNED, RESTARTING) and self.reporter:
            self.reporter.finished += 1
        if self.reporter:
            self.reporter.update(target)

    def _start(self, target: Target) -> None:
        owner = target.owner
        target.started = self.clock()
        try:
            obj = self.client.get(owner.kind, owner.name, owner.namespace)
            why_not = cannot_restart(owner.kind, obj)
            if why_not:
                target.state, target.message = SKIPPED, why_not
            else:
                patched = self.client.patch(owner.kind, owner.name, owner.namespace, restart_patch(self.now()))
                # The API server bumps metadata.generation for a template change; the rollout is the one the
                # controller reports for at least that generation.
                target.generation = int(patched.get("metadata", {}).get("generation") or 0)
                target.state, target.message = RESTARTING, "restart requested"
        except NotFound:
            target.state, target.message = SKIPPED, "deleted before it could be restarted"
        except (Forbidden, Conflict) as exc:
            target.state, target.message = FAILED, str(exc)  # this workload only: the others may be allowed
        except KubeError as exc:
            target.state, target.message = FAILED, str(exc)
            self.stopped = "the API server stopped answering"
        self._report(target)

    def _check(self, target: Target) -> None:
        owner = target.owner
        target.elapsed = self.clock() - target.started
        try:
            obj = self.client.get(owner.kind, owner.name, owner.namespace)
        except NotFound:
            target.state, target.message = SKIPPED, "deleted while restarting"
            self._report(target)
            return
        except KubeError as exc:
            target.message = f"cannot read it ({exc}); retrying"
            obj = None
        if obj is not None:
            state = progress(owner.kind, obj, target.generation)
            if state.done:
                self._verify(target, state)
            elif state.failure:
                target.state, target.message = FAILED, state.failure
                self.stopped = f"{target.label} failed"
            else:
                target.message = state.message
        if target.state == RESTARTING and target.elapsed >= self.timeout:
            target.state = FAILED
            target.message = (f"not ready after {self.timeout:g}s ({target.message}); "
                              f"see `kubectl rollout status {owner.kind.lower()}/{owner.name} -n {owner.namespace}`")
            self.stopped = f"{target.label} did not become ready"
        self._report(target)


    def _verify(self, target: Target, state: Progress) -> None:
        """The controller is done; did the new pods get the local cache? If the webhook let them through
        unchanged (it is down, failurePolicy Ignore), restarting more workloads would be pointless."""
        owner = target.owner
        try:
            pods = self.client.list("Pod", owner.namespace)
        except KubeError as exc:
            target.state = READY
            target.message = f"{state.message} after {target.elapsed:.0f}s (new pods not checked: {exc})"
            return
        resolver = OwnerResolver(self.client, Gaps())
        left = sorted(p["metadata"]["name"] for p in pods
                      if classify(p, owner.namespace, self.settings)[0] == NEEDS_RESTART
                      and resolver.owner_of(p) == owner)
        if left:
            target.state = FAILED
            target.message = (f"restarted, but {plural(len(left), 'new pod')} still bypass the local cache "
                              f"({', '.join(left[:3])}{', ...' if len(left) > 3 else ''}): the webhook did not inject "
                              "them; see `python -m webhook status`")
            self.stopped = f"{target.label} came back without the local cache"
        else:
            target.state, target.message = READY, f"{state.message} after {target.elapsed:.0f}s"


def delete_bare_pods(client: Client, groups: list[OwnerGroup], reporter: Reporter | None) -> list[Target]:
    done = []
    for group in groups:
        target = Target(group)
        try:
            client.delete("Pod", group.owner.name, group.owner.namespace)
            target.state, target.message = DELETED, "deleted (nothing recreates a bare pod)"
        except NotFound:
            target.state, target.message = SKIPPED, "already gone"
        except KubeError as exc:
            target.state, target.message = FAILED, str(exc)
        if reporter:
            reporter.finished += 1
            reporter.update(target)
        done.append(target)
    return done


def preflight(client: Client) -> list[str]:
    """Reasons not to restart anything now: new pods would come back without injection, or without DNS."""
    problems = []
    for kind, name, check in (("Deployment", names.WEBHOOK, check_webhook_replicas),
                              ("DaemonSet", names.CACHE_DAEMONSET, lambda ds: check_cache(ds, None, {}))):
        try:
            result = check(client.get(kind, name, names.NAMESPACE))
            if result.state == FAIL:
                problems.append(f"{result.name}: {result.detail}")
        except NotFound:
            problems.append(f"{describe(kind, name, names.NAMESPACE)} is not installed")
        except Forbidden as exc:
            problems.append(f"cannot check {describe(kind, name, names.NAMESPACE)}: {exc}")
    return problems


def plan(audit: AuditResult) -> tuple[list[Target], list[OwnerGroup], list[OwnerGroup]]:
    """(workloads to restart, bare pods, owners left alone) from an audit."""
    restart, bare, left = [], [], []
    for group in audit.sorted_groups():
        action = group.action[0]
        if action == RESTART:
            restart.append(Target(group))
        elif action == DELETE:
            bare.append(group)
        else:
            left.append(group)
    return restart, bare, left


def report(audit: AuditResult, targets: list[Target], bare: list[Target | OwnerGroup], left: list[OwnerGroup],
           args: argparse.Namespace, problems: list[str]) -> dict[str, Any]:
    return {
        "dryRun": not args.yes,
        "preflightProblems": problems,
        "partial": bool(audit.gaps),
        "gaps": list(audit.gaps.items),
        "notes": list(audit.notes),
        "restarts": [t.as_dict() for t in targets],
        "barePods": [
            (b.as_dict() if isinstance(b, Target) else b.owner.as_dict() | {
                "result": "planned" if args.delete_bare_pods else "kept",
                "message": "would be deleted" if args.delete_bare_pods else "kept: add --delete-bare-pods to delete",
            })
            for b in bare
        ],
        "notRestarted": [g.owner.as_dict() | {"pods": sorted(g.pods), "why": g.action[1]} for g in left],
        "settings": {"maxConcurrent": args.max_concurrent, "timeoutSeconds": args.timeout},
    }


def render(data: dict[str, Any]) -> str:
    lines = []
    if data["dryRun"]:
        lines.append("Dry run: nothing was changed. Add --yes to do this.")
    lines += [f"note: {note}" for note in data["notes"]]
    if data["preflightProblems"]:
        lines += ["", "Not safe to restart now (--yes refuses unless --force):"]
        lines += [f"  - {problem}" for problem in data["preflightProblems"]]
    restarts = data["restarts"]
    if restarts:
        settings = data["settings"]
        head = "Would restart" if data["dryRun"] else "Restarted"
        lines += ["", f"{head} ({plural(settings['maxConcurrent'], 'workload')} at a time, waiting up to "
                      f"{settings['timeoutSeconds']:g}s for each):"]
        rows = [(r["namespace"], f"{r['kind'].lower()}/{r['name']}", len(r["pods"]),
                 "" if data["dryRun"] else r["result"], "" if data["dryRun"] else r["message"]) for r in restarts]
        headers = ("NAMESPACE", "WORKLOAD", "PODS", "RESULT", "DETAIL")
        lines.append(table(headers[:3], [r[:3] for r in rows]) if data["dryRun"] else table(headers, rows))
    bare = data["barePods"]
    if bare:
        lines += ["", "Bare pods (no controller recreates them; deleting one ends it for good):"]
        lines.append(table(("NAMESPACE", "POD", "RESULT"), [(b["namespace"], b["name"], b["message"]) for b in bare]))
    left = data["notRestarted"]
    if left:
        lines += ["", "Not restarted:"]
        lines.append(table(("NAMESPACE", "OWNER", "PODS", "WHY"),
                           [(g["namespace"], f"{g['kind'].lower()}/{g['name']}", len(g["pods"]), g["why"])
                            for g in left]))
    if not (restarts or bare or left):
        lines.append("Nothing to restart: every pod that the webhook would change already uses the local DNS cache.")
    if data["partial"]:
        lines += ["", "PARTIAL: some objects could not be read, so this plan may miss workloads:"]
        lines += [f"  - {gap}" for gap in data["gaps"]]
    return "\n".join(lines)


def exit_code(audit: AuditResult, targets: list[Target], bare: list[Target | OwnerGroup]) -> int:
    outcomes = [t.state for t in targets] + [b.state for b in bare if isinstance(b, Target)]
    if any(state in (FAILED, NOT_STARTED) for state in outcomes):
        return cli.EXIT_FINDINGS
    return cli.EXIT_PARTIAL if audit.gaps else cli.EXIT_OK


HELP = "restart the workloads `audit` lists, like `kubectl rollout restart` (dry run unless --yes)"
DESCRIPTION = ("Restart the Deployments, StatefulSets and DaemonSets whose pods do not use the local DNS cache yet, "
               "one batch at a time, waiting for each to be ready. Dry run unless --yes. Exit 0: done (or planned); "
               "1: a restart failed or timed out (later ones were not started); 2: error; 3: partial plan.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    cli.add_common_arguments(parser)
    parser.add_argument("--yes", action="store_true", help="really restart (default: dry run, show the plan)")
    parser.add_argument("--dry-run", action="store_true",
                        help="only show the plan (the default; wins over --yes wherever it appears)")
    parser.add_argument("--max-concurrent", type=int, default=1, metavar="N",
                        help="workloads restarting at the same time (default: 1)")
    parser.add_argument("--timeout", type=float, default=300.0, metavar="SECONDS",
                        help="how long each workload may take to be ready again (default: 300)")
    parser.add_argument("--delete-bare-pods", action="store_true",
                        help="with --yes, also delete pods that no controller owns (they are not recreated)")
    parser.add_argument("--force", action="store_true",
                        help="restart even when the webhook has no ready replica or the cache is not ready on "
                        "every node (new pods would then lack injection, or DNS)")
    parser.add_argument("--poll-interval", type=float, default=2.0, help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    if args.max_concurrent < 1 or args.timeout <= 0:
        print("error: --max-concurrent must be at least 1 and --timeout positive", file=sys.stderr)
        return cli.EXIT_ERROR
    args.yes = args.yes and not args.dry_run  # any doubt means no change
    settings = cli.load_settings(args)
    client = cli.connect_from(args)
    audit = collect(client, cli.requested_namespaces(args), settings)
    targets, bare_groups, left = plan(audit)
    bare: list[Target | OwnerGroup] = list(bare_groups)
    problems = preflight(client) if targets or (bare_groups and args.delete_bare_pods) else []
    if args.yes and problems and not args.force:
        print("error: refusing to restart anything, because new pods would not get a working local DNS cache:",
              file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        print("Fix it (see `python -m webhook status`), or add --force to restart anyway.", file=sys.stderr)
        return cli.EXIT_FINDINGS
    if args.yes:
        reporter = Reporter(len(targets) + (len(bare_groups) if args.delete_bare_pods else 0))
        runner = Runner(client, settings, args.max_concurrent, args.timeout, args.poll_interval, reporter)
        try:
            runner.run(targets)
            if args.delete_bare_pods and not runner.stopped:
                bare = list(delete_bare_pods(client, bare_groups, reporter))
        finally:
            reporter.close()
    emit(report(audit, targets, bare, left, args, problems), args.output, render)
    return exit_code(audit, targets, bare)
