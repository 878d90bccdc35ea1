"""Fixtures for the cluster tools: a FakeKubeAPI per test and a way to run a command line as the CLI does."""
from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
import yaml

from clustertools.__main__ import main
from tests.cluster_tools.caches import Caches
from tests.kubeapi import FakeKubeAPI


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> dict:
        return json.loads(self.out)

    def yaml(self) -> dict:
        return yaml.safe_load(self.out)


@pytest.fixture
def api() -> Iterator[FakeKubeAPI]:
    with FakeKubeAPI() as server:
        yield server


@pytest.fixture
def caches() -> Iterator[Callable[[int], Caches]]:
    """Make `Caches(nodes)`: a metrics endpoint per test node (tests/cluster_tools/caches.py), closed afterwards."""
    made: list[Caches] = []

    def make(nodes: int = 2) -> Caches:
        made.append(Caches(nodes))
        return made[-1]

    yield make
    for fleet in made:
        fleet.__exit__()


@pytest.fixture
def installed(api: FakeKubeAPI) -> None:
    """A healthy localdns installation (webhook and cache ready), which `rollout --yes` checks before acting."""
    from tests.cluster_tools.workloads import localdns

    localdns(api)


@pytest.fixture
def settings_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The webhook's default settings, whatever the developer's shell exports."""
    for name in ("LOCALDNS_CONFIG", "LOCALDNS_LOCAL_IP", "LOCALDNS_NDOTS", "LOCALDNS_EXCLUDED_NAMESPACES",
                 "LOCALDNS_CLUSTER_DOMAIN", "LOCALDNS_EXTRA_OPTIONS", "LOCALDNS_FALLBACK_NAMESERVER"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def cli(api: FakeKubeAPI, capsys: pytest.CaptureFixture, settings_env: None) -> Callable[..., Result]:
    def run(command: str, *args: str, kubeconfig: str | None = None) -> Result:
        # In this process (the client's imports take seconds per process); test_cli_entrypoint runs real ones.
        code = main([command, "--kubeconfig", kubeconfig or str(api.kubeconfig_path), *args])
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run
