"""One folder, one program: what each package may import, read from the source (ast), so the layout the README and
docs/ describe is the one the code has. The admission server imports nothing outside webhook/ but the shared
Kubernetes client, in the one module that keeps its view of the cluster's NetworkPolicies, and the shared log format
(localdns/logformat.py, the standard library only), in the one module that sets up its log (its command line names
the other programs' commands only in its HANDOVER table, as strings), and no module guards the import of another
of the project's modules: a module that is part of the project is always there."""
from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = sorted(path.parent.name for path in ROOT.glob("*/__init__.py") if path.parent.name != "tests")

# Which of the project's packages (or, dotted, which single modules) each may import. A file listed by path has its
# own entry.
LOG_FORMAT = "localdns.logformat"  # how every program writes its log (--log-format): one format, the stdlib only
ALLOWED: dict[str, set[str]] = {
    "webhook": {"webhook"},  # the admission server
    # ... whose view of the NetworkPolicies lists and watches them through the one Kubernetes client the project
    # has (localdns/kube.py: credentials, timeouts, one error family), rather than a second client of its own.
    "webhook/netpolview.py": {"webhook", "localdns"},
    "webhook/logs.py": {"webhook", LOG_FORMAT},  # ... and whose log lines are the format all programs write
    "cache": {"cache", LOG_FORMAT},  # the node-local DNS cache
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
    """(line, project module) for every import in the file, at any depth; relative ones are its own package.
    `from localdns import logformat` counts as `localdns.logformat`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                names = [path.relative_to(ROOT).parts[0]]
            elif node.module in PACKAGES:  # `from package import module`: each name may be a module
                names = [f"{node.module}.{alias.name}" for alias in node.names]
            else:
                names = [node.module or ""]
        else:
            continue
        found += [(node.lineno, name) for name in names if name.split(".")[0] in PACKAGES]
    return found


def allows(allowed: set[str], module: str) -> bool:
    """Whether `module` is in an allowed package, or is (or is inside) an allowed dotted module."""
    return module.split(".")[0] in allowed or any(module == entry or module.startswith(entry + ".")
                                                  for entry in allowed if "." in entry)


def test_every_package_has_an_entry():
    assert set(PACKAGES) <= set(ALLOWED), "say what a new package may import"


@pytest.mark.parametrize("path", sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_each_module_imports_only_what_its_program_may(path):
    relative = path.relative_to(ROOT)
    allowed = ALLOWED.get(str(relative), ALLOWED[relative.parts[0]])
    wrong = [(line, name) for line, name in project_imports(path) if not allows(allowed, name)]
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


# C extensions (pyproject.toml, [tool.localdns] extensions) are built only with the compiled hot path: the one
# kind of project module whose import may fail, and whose absence has a plain-Python path beside it.
BUILT_ONLY_WHEN_COMPILED = {source.removesuffix(".c").rsplit("/", 1)[-1] for source in
                            tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["localdns"]["extensions"]}


def import_guards(path: Path) -> list[int]:
    """Lines of `try` blocks that import a project module (other than a C extension built only when compiled) and
    catch ImportError or ModuleNotFoundError."""
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
            relative = isinstance(child, ast.ImportFrom) and child.level > 0 and not (
                child.module is None and {alias.name for alias in child.names} <= BUILT_ONLY_WHEN_COMPILED)
            absolute = {alias.name.split(".")[0] for alias in child.names} if isinstance(child, ast.Import) else \
                {(child.module or "").split(".")[0]} if isinstance(child, ast.ImportFrom) else set()
            if relative or absolute & set(PACKAGES):
                guards.append(node.lineno)
                break
    return guards


def test_no_module_guards_the_import_of_another_project_module():
    guarded = {str(path.relative_to(ROOT)): lines for path in sources() if (lines := import_guards(path))}
    assert not guarded, f"a project module is always installed with the project: {guarded}"


def test_the_shared_log_format_needs_nothing_but_the_standard_library():
    """Every program imports it (the cache on every node, the admission server): it must bring nothing with it."""
    import sys

    path = ROOT / "localdns" / "logformat.py"
    tree = ast.parse(path.read_text(), str(path))
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {(node.module or "").split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.level == 0}
    assert imported <= sys.stdlib_module_names | {"__future__"}, imported
