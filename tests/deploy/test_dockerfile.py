"""The Dockerfile, checked statically: there is no container engine on this machine (no Docker, no BuildKit), so
the image is not built here. What is checked: it parses as Dockerfile syntax, builds in two stages, the final one
from the slim Python image with no compiler, installs exactly the versions of requirements.lock, runs as a numeric
non-root user (the one the webhook's manifest names), and carries what the cache's node setup calls (iptables).
(The build commands themselves were run by hand outside an engine: see docs/install.md, "Build the image".)"""
from __future__ import annotations

import re
import shlex
import tomllib
from dataclasses import dataclass, field

import pytest
import yaml

from tests.deploy.render import ROOT, container, find, pod_spec, rendered

INSTRUCTIONS = {"FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME", "USER",
                "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL"}
COMPILERS = ("build-essential", "gcc", "g++", "clang", "make ", "python3-dev", "libffi-dev", "libssl-dev")


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def parse(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARGs and stages, by Dockerfile's rules: `#` lines are comments (the first may be a parser
    directive), a trailing backslash continues the line, the keyword is case-insensitive."""
    logical, current = [], ""
    for line in text.splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.lstrip().startswith("#"):  # a comment inside a continued instruction
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    assert not current, "the Dockerfile ends inside a continued line"
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.strip().partition(" ")
        keyword = keyword.upper()
        assert keyword in INSTRUCTIONS, f"unknown instruction {keyword!r}"
        if keyword == "FROM":
            words = args.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            assert len(words) in (1, 3), f"bad FROM {args!r}"
            stages.append(Stage(words[0], name))
        elif not stages:
            assert keyword == "ARG", f"{keyword} before the first FROM"
            key, _, value = args.partition("=")
            global_args[key] = value
        else:
            stages[-1].instructions.append((keyword, args.strip()))
    return global_args, stages


@pytest.fixture(scope="module")
def dockerfile() -> tuple[dict[str, str], list[Stage]]:
    return parse((ROOT / "Dockerfile").read_text())


def final_stage(dockerfile) -> Stage:
    return dockerfile[1][-1]


def test_two_stages_final_from_slim_python(dockerfile) -> None:
    global_args, stages = dockerfile
    assert len(stages) == 2 and stages[0].name == "builder" and stages[1].name is None
    image = re.sub(r"\$\{(\w+)\}", lambda m: global_args[m.group(1)], final_stage(dockerfile).base)
    repository, _, tag = image.partition(":")
    assert repository == "python" and tag.startswith("3.11-slim"), image
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert requires == ">=3.11"


def test_no_compiler_in_the_final_image(dockerfile) -> None:
    final = final_stage(dockerfile)
    runs = " ".join(final.all("RUN"))
    for compiler in COMPILERS:
        assert compiler not in runs, f"final stage installs {compiler.strip()}"
    # Nothing is copied from the builder but wheels (mounted for one RUN, so not even they stay in a layer).
    assert not [c for c in final.all("COPY") if "--from" in c]
    assert "from=builder,source=/wheels" in runs
    assert "--no-install-recommends" in runs and "rm -rf /var/lib/apt/lists" in runs


def test_dependencies_come_pinned_from_requirements_lock(dockerfile) -> None:
    builder, final = dockerfile[1]
    [wheel] = [r for r in builder.all("RUN") if "pip wheel" in r]
    assert "--constraint requirements.lock" in wheel
    [install] = [r for r in final.all("RUN") if "pip install" in r]
    assert "--no-index" in install and "--constraint /tmp/requirements.lock" in install
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep and version, f"requirements.lock line {line!r} is not pinned with =="
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for requirement in dependencies:
        name = re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9_.-]+", requirement).group(0)).lower()
        assert name in pins, f"{name} (a runtime dependency) has no pin in requirements.lock"
    for extra in ("uvloop", "httptools"):  # uvicorn[standard]: the fast loop and parser the cache and webhook use
        assert extra in pins


def test_runs_as_a_numeric_non_root_user(dockerfile) -> None:
    final = final_stage(dockerfile)
    users = final.all("USER")
    assert users, "no USER: the image would run as root"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) != 0 and (not gid or (gid.isdigit() and int(gid) != 0))
    # Nothing runs as root after the switch.
    keywords = [kw for kw, _ in final.instructions]
    assert "RUN" not in keywords[keywords.index("USER"):]
    # The webhook's Deployment asks for the same user, so runAsNonRoot can be verified by the kubelet.
    deployment = find(rendered(("builtin-certs",)), "Deployment", "localdns-webhook")
    assert pod_spec(deployment)["securityContext"]["runAsUser"] == int(uid)


def test_entrypoint_runs_the_packages_the_manifests_name(dockerfile) -> None:
    final = final_stage(dockerfile)
    [entrypoint] = final.all("ENTRYPOINT")
    assert yaml.safe_load(entrypoint) == ["python", "-m"]
    objects = rendered(("builtin-certs",))
    commands = [c["command"] for w in (find(objects, "Deployment", "localdns-webhook"),
                                       find(objects, "DaemonSet", "localdns-cache"))
                for c in pod_spec(w).get("initContainers", []) + pod_spec(w)["containers"]]
    for command in commands:
        assert command[:2] == ["python", "-m"] and (ROOT / command[2] / "__main__.py").is_file(), command
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert set(scripts) == {"localdns-webhook", "localdns-cache", "localdns-certs", "kubectl-localdns"}


def test_the_image_is_built_from_every_package_the_project_ships(dockerfile) -> None:
    """A package pyproject lists but the builder does not copy would be missing from the image: certs needs
    localdns, the webhook's demo needs certs and cache."""
    listed = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    shipped = {package.split(".")[0] for package in listed}
    copied = {shlex.split(args)[0].rstrip("/") for stage in dockerfile[1] for args in stage.all("COPY")}
    assert shipped <= copied
    top_level = {path.parent.name for path in ROOT.glob("*/__init__.py")} - {"tests", "bench", "fuzz"}
    assert top_level == shipped, "every top-level package ships, and nothing else"
    # setuptools ships the packages listed, not their subpackages: each must be listed itself.
    every = {".".join(path.parent.relative_to(ROOT).parts) for package in shipped
             for path in (ROOT / package).rglob("__init__.py")}
    assert set(listed) == every


def test_iptables_is_in_the_image_for_the_cache(dockerfile) -> None:
    runs = " ".join(final_stage(dockerfile).all("RUN"))
    assert re.search(r"apt-get install [^&]*\biptables\b", runs)
    cache = container(find(rendered(("builtin-certs",)), "DaemonSet", "localdns-cache"), "cache")
    assert "--setup-network" in cache["args"]


def test_dockerignore_lets_in_exactly_what_is_copied(dockerfile) -> None:
    rules = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert rules[0] == "*"  # everything out (keys, .venv, .tools, tests), then the build inputs back in
    allowed = {rule[1:].rstrip("/") for rule in rules if rule.startswith("!")}
    copied = set()
    for stage in dockerfile[1]:
        for args in stage.all("COPY"):
            words = [w for w in shlex.split(args) if not w.startswith("--")]
            copied.update(w.rstrip("/") for w in words[:-1])
    assert copied == allowed, (copied, allowed)
    for path in copied:
        assert (ROOT / path).exists(), path


def test_the_image_gets_the_compiled_hot_path_and_keeps_its_sources(dockerfile) -> None:
    """The builder compiles what pyproject.toml lists (setup.py reads the same list); the sources stay in the wheel
    beside their compiled forms. `make test-compiled` runs the cache's tests against the same compilation."""
    builder = dockerfile[1][0]
    [wheel] = [r for r in builder.all("RUN") if "pip wheel" in r]
    assert "LOCALDNS_COMPILE=1 pip wheel --no-build-isolation" in wheel
    assert re.search(r"pip install --constraint requirements\.lock mypy setuptools", wheel)
    assert "setup.py" in shlex.split(builder.all("COPY")[0])
    listed = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["localdns"]
    assert listed["compiled"] and all((ROOT / module).is_file() for module in listed["compiled"])
    assert all((ROOT / source).is_file() and source.endswith(".c") for source in listed["extensions"])
    setup = (ROOT / "setup.py").read_text()
    assert 'tomllib.load(file)["tool"]["localdns"]' in setup
    assert 'mypycify(listed["compiled"]' in setup and 'listed["extensions"]' in setup
    pins = (ROOT / "requirements.lock").read_text().splitlines()
    assert [p for p in pins if p.startswith("mypy==")] and [p for p in pins if p.startswith("setuptools==")]
