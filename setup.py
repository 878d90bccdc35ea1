"""Builds the distribution; its metadata is in pyproject.toml. This file only adds the compiled hot path: with
LOCALDNS_COMPILE=1 (the Dockerfile's builder) the modules listed in [tool.localdns] compiled are compiled with mypyc
into extension modules that ship beside their sources and are imported instead of them, and the C sources listed in
[tool.localdns] extensions are built as extension modules of their own. Without it (every other install, editable
ones included) nothing is compiled and mypy is not needed to build."""
from __future__ import annotations

import os
import tomllib

from setuptools import Extension, setup

ext_modules = []
if os.environ.get("LOCALDNS_COMPILE") == "1":
    from mypyc.build import mypycify

    with open("pyproject.toml", "rb") as file:
        listed = tomllib.load(file)["tool"]["localdns"]
    extensions = [Extension(source.removesuffix(".c").replace("/", "."), [source]) for source in listed["extensions"]]
    ext_modules = [*mypycify(listed["compiled"], opt_level="3"), *extensions]

setup(ext_modules=ext_modules)
