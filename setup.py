"""Packages of the wheel: everything under videoedit/ and annotators/, plus the top-level configs/ folder
shipped as ``videoedit.configs`` (``[tool.setuptools.package-dir]`` in pyproject.toml maps it; a
pyproject-only ``packages.find`` cannot add a package that lives outside its package's folder)."""

from setuptools import find_packages, setup

setup(packages=[*find_packages(include=["videoedit*", "annotators*"]), "videoedit.configs"])
