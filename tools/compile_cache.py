"""`python tools/compile_cache.py [OUT]`: a copy of the cache package with its hot path compiled by mypyc, at OUT
(default build/compiled), for running and testing what the image runs without building the image:

    python tools/compile_cache.py
    cd build/compiled && python -m cache ...                         # or: python -m bench.profile --tree build/compiled
    LOCALDNS_TREE=build/compiled python -m pytest tests/cache        # the cache's tests against the compiled build

OUT is made afresh each time (a compiled module left from an older source would be imported instead of the
source). The modules compiled are pyproject.toml's [tool.localdns] compiled, and its extensions (C sources) are
built beside them, as setup.py does for the image. Needs mypy (the test extra) and a C compiler.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# As setup.py builds them for the image: the mypyc modules (arguments ending in .py) and the C extensions (.c).
BUILD = """
import sys
from setuptools import Extension, setup
from mypyc.build import mypycify
modules = [a for a in sys.argv[1:] if a.endswith(".py")]
extensions = [Extension(a.removesuffix(".c").replace("/", "."), [a]) for a in sys.argv[1:] if a.endswith(".c")]
setup(script_args=["build_ext", "--inplace"], ext_modules=[*mypycify(modules, opt_level="3"), *extensions])
"""


def listed(key: str) -> list[str]:
    with open(ROOT / "pyproject.toml", "rb") as file:
        return tomllib.load(file)["tool"]["localdns"][key]


def compiled_modules() -> list[str]:
    return listed("compiled")


def build(out: Path) -> Path:
    """Copy cache/ to OUT/cache and compile the hot path there; OUT."""
    out = out.resolve()
    if out == ROOT or ROOT.is_relative_to(out):
        raise SystemExit(f"refusing to build into {out}: it holds the sources")
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(ROOT / "cache", out / "cache", ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    # In a directory of its own, without pyproject.toml: setuptools reads only what is passed here.
    done = subprocess.run([sys.executable, "-c", BUILD, *compiled_modules(), *listed("extensions")], cwd=out,
                          capture_output=True, text=True, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    if done.returncode != 0:
        raise SystemExit(f"the build failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
    shutil.rmtree(out / "build", ignore_errors=True)
    missing = [m for m in [*compiled_modules(), *listed("extensions")]
               if not list((out / Path(m).parent).glob(f"{Path(m).stem}.*.so"))]
    if missing:
        raise SystemExit(f"no extension was built for {', '.join(missing)}")
    return out


def main(argv: list[str]) -> int:
    out = build(Path(argv[0]) if argv else ROOT / "build" / "compiled")
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
