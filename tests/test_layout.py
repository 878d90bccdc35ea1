"""One folder, one program: what each package may import, read from the source (ast), so the layout the README and
docs/ describe is the one the code has. The admission server imports nothing outside webhook/ but the shared
Kubernetes client, in the one module that keeps its view of the cluster's NetworkPolicies (its command line names
the other programs' commands only in its HANDOVER table, as strings), and no module guards the import of another
of the project's modules: a module that is part of the project is always there."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = sorted(path.parent.name for path in ROOT.glob("*/__init__.py") if path.parent.name != "tests")

# Which of the project's packages each may import. A file listed by path has its own entry.
ALLOWED: dict[str, set[str]] = {
    "webhook": {"webhook"},  # the admission server
    # ... whose view of the NetworkPolicies lists and watches them through the one Kubernetes client the project
    # has (localdns/kube.py: credentials, timeouts, one error family), rather than a second client of its own.
    "webhook/netpolview.py": {"webhook", "localdns"},
    "cache": {"cache"},  # the node-local DNS cache
    "certs": {"certs", "localdns"},  # the webhook's TLS, through the shared Kubernetes client
    "localdns": {"localdns"},  # the shared client and names
    "localdns/demo.py": {"localdns", "certs", "webhook", "cache"},  # the demo runs the three programs together
    "clustertools": {"clustertools", "localdns", "webhook", "certs"},  # judged by webhook.policy, certs' checks
    "bench": {"bench", "webhook", "cache"},  # benchmarks run the programs
    "fuzz": {"fuzz", "webhook", "cache"},  # fuzz targets drive the programs' code (judged by tests/' oracles)
}


def sources() -> list[Path]:
    return sorted(path for package in PACKAGES for path in (ROOT / package).rglob("*.py"))


def project_imports(path: Path) -> list[tuple[int, str]]:
    """(line, top-level project package) for every import in the file, at any depth; relative ones are its own."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""] if node.level == 0 else [path.relative_to(ROOT).parts[0]]
        else:
            continue
        found += [(node.lineno, name.split(".")[0]) for name in names if name.split(".")[0] in PACKAGES]
    return found


def test_every_package_has_an_entry():
    assert set(PACKAGES) <= set(ALLOWED), "say what a new package may import"


@pytest.mark.parametrize("path", sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_each_module_imports_only_what_its_program_may(path):
    relative = path.relative_to(ROOT)
    allowed = ALLOWED.get(str(relative), ALLOWED[relative.parts[0]])
    wrong = [(line, name) for line, name in project_imports(path) if name not in allowed]
    assert not wrong, f"{relative} imports {wrong}; it may import only {sorted(allowed)}"


def test_the_webhook_names_other_programs_only_in_its_handover_table():
    from webhook.__main__ import HANDOVER

    def modules_named(tree: ast.AST) -> list[str]:
        """Strings that name a function of another program, `package.module:function`, as importlib is given."""
        return [node.value.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Constant)
                and isinstance(node.value, str) and re.fullmatch(r"\w+(\.\w+)*:\w+", node.value)
                and node.value.split(".")[0] in set(PACKAGES) - {"webhook"}]

    main = ast.parse((ROOT / "webhook" / "__main__.py").read_text())
    [table] = [node for node in main.body if isinstance(node, ast.AnnAssign)
               and isinstance(node.target, ast.Name) and node.target.id == "HANDOVER"]
    assert sorted(modules_named(main)) == sorted(modules_named(table)), "named in the table, nowhere else"
    assert set(modules_named(table)) == {target.split(".")[0] for target, _help in HANDOVER.values()} \
        == {"clustertools", "localdns"}


def import_guards(path: Path) -> list[int]:
    """Lines of `try` blocks that import a project module and catch ImportError or ModuleNotFoundError."""
    guards = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Try):
            continue
        caught = {name.id for handler in node.handlers if handler.type is not None
                  for name in ast.walk(handler.type) if isinstance(name, ast.Name)}
        if not caught & {"ImportError", "ModuleNotFoundError"}:
            continue
        guarded = ast.Module(body=node.body, type_ignores=[])
        for child in ast.walk(guarded):
            relative = isinstance(child, ast.ImportFrom) and child.level > 0
            absolute = {alias.name.split(".")[0] for alias in child.names} if isinstance(child, ast.Import) else \
                {(child.module or "").split(".")[0]} if isinstance(child, ast.ImportFrom) else set()
            if relative or absolute & set(PACKAGES):
                guards.append(node.lineno)
                break
    return guards


def test_no_module_guards_the_import_of_another_project_module():
    guarded = {str(path.relative_to(ROOT)): lines for path in sources() if (lines := import_guards(path))}
    assert not guarded, f"a project module is always installed with the project: {guarded}"
