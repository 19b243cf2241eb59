"""Packaging detail that pyproject.toml cannot express: the top-level conf/ directory ships inside
the wheel as the package data directory ``mtl_cli/conf`` (found by mtl_cli.config.locate)."""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["mtl_cli", "mtl_cli.*"]) + ["mtl_cli.conf"],
    package_dir={"mtl_cli.conf": "conf"},
    package_data={"mtl_cli.conf": ["*.yaml", "**/*.yaml"]},
    include_package_data=False,
)
