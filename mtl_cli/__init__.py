"""mtl_cli: a config-driven command-line trainer for multi-task learning in PyTorch."""

__version__ = "0.1.0"
