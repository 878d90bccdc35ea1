"""What `status` and `rollout`'s pre-flight say about a part of the installation: a `Check` is one line (a name, a
state, a sentence), and `worst` picks the state a group of findings adds up to."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

OK, WARN, FAIL, UNKNOWN = "ok", "warn", "fail", "unknown"
# A known problem outweighs not knowing, and not knowing outweighs all being well.
SEVERITY = {OK: 0, UNKNOWN: 1, WARN: 2, FAIL: 3}


def worst(states: Iterable[str]) -> str:
    return max(states, key=SEVERITY.__getitem__, default=OK)


@dataclass(frozen=True)
class Check:
    name: str
    state: str
    detail: str

    def as_dict(self) -> dict[str, str]:
        return {"check": self.name, "state": self.state, "detail": self.detail}
