"""What the cluster tools look at: the opted-in and dry-run namespaces and their pods, and the record of what could
not be read (`Gaps`), which makes a result partial instead of silently incomplete."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from localdns import names
from localdns.kube import JSON, Client, Forbidden, NotFound


@dataclass
class Gaps:
    """What could not be read. Non-empty means the result is partial."""

    items: list[str] = field(default_factory=list)

    def add(self, message: str) -> None:
        if message not in self.items:
            self.items.append(message)

    def __bool__(self) -> bool:
        return bool(self.items)


MODES = (names.INJECT_ENABLED, names.INJECT_DRY_RUN)


def labelled_namespaces(client: Client, requested: list[str], gaps: Gaps, notes: list[str]) -> dict[str, str]:
    """The namespaces to look at and their label value (enabled, or dry-run): every namespace labelled either way,
    or those requested that are."""
    if not requested:
        try:
            listed = client.list("Namespace", label_selector=f"{names.INJECT_LABEL} in ({','.join(MODES)})")
        except Forbidden as exc:
            raise Forbidden(f"{exc}; name the namespaces to look at with -n/--namespace instead", exc.what) from None
        return {ns["metadata"]["name"]: ns["metadata"]["labels"][names.INJECT_LABEL]
                for ns in sorted(listed, key=lambda ns: ns["metadata"]["name"])}
    chosen = {}
    for name in requested:
        try:
            labels = client.get("Namespace", name)["metadata"].get("labels") or {}
        except NotFound:
            notes.append(f"namespace {name} does not exist")
            continue
        except Forbidden as exc:
            # Cannot see the label: look at it anyway, the user asked for it by name.
            gaps.add(f"{exc} (cannot check its opt-in label; assuming it is opted in)")
            chosen[name] = names.INJECT_ENABLED
            continue
        if labels.get(names.INJECT_LABEL) in MODES:
            chosen[name] = labels[names.INJECT_LABEL]
        else:
            notes.append(f"namespace {name} is not opted in (label {names.OPT_IN_SELECTOR} or "
                         f"{names.DRY_RUN_SELECTOR} missing): the webhook leaves its pods alone")
    return chosen


def iter_pods(client: Client, namespaces: list[str], gaps: Gaps) -> Iterator[tuple[str, list[JSON]]]:
    """Each namespace's pods; a namespace that cannot be read is a gap, not the end of the run."""
    for namespace in namespaces:
        try:
            yield namespace, client.list("Pod", namespace)
        except (Forbidden, NotFound) as exc:
            gaps.add(str(exc))
