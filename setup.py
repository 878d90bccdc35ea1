"""Builds the distribution; its metadata is in pyproject.toml. This file only adds the compiled hot path: with
LOCALDNS_COMPILE=1 (the Dockerfile's builder) the modules listed in [tool.localdns] compiled are compiled with mypyc
into extension modules that ship beside their sources and are imported instead of them. Without it (every other
install, editable ones included) nothing is compiled and mypy is not needed to build."""
from __future__ import annotations

import os
import tomllib

from setuptools import setup

ext_modules = []
if os.environ.get("LOCALDNS_COMPILE") == "1":
    from mypyc.build import mypycify

    with open("pyproject.toml", "rb") as file:
        ext_modules = mypycify(tomllib.load(file)["tool"]["localdns"]["compiled"], opt_level="3")

setup(ext_modules=ext_modules)
