"""Compose configs outside ``@hydra.main`` (tests, benchmarks, pre-validation in the CLI)."""

from __future__ import annotations

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from omegaconf import DictConfig

from .locate import builtin_config_dir, register_search_path_plugin


def compose(
    overrides: list[str] | None = None, config_name: str = "train", return_hydra_config: bool = False
) -> DictConfig:
    """The config ``mtl-train <overrides>`` would run with (user config dirs included)."""
    register_search_path_plugin()
    with initialize_config_dir(config_dir=str(builtin_config_dir()), version_base="1.3", job_name="train"):
        return hydra_compose(config_name, overrides=list(overrides or []), return_hydra_config=return_hydra_config)
