"""mtl_cli: a config-driven command-line trainer for multi-task learning in PyTorch.

The Python API (:mod:`mtl_cli.api`)::

    from mtl_cli import compose, train, evaluate, predict

    result = train(compose(["trainer.max_epochs=1"]))

Importing the package stays cheap: torch and Hydra are imported when an API function is first called.
"""

from types import ModuleType as _ModuleType

from . import train as _train_package  # the training subpackage (its __init__ imports nothing)

__version__ = "0.1.0"
__all__ = ["TrainResult", "__version__", "compose", "evaluate", "predict", "train"]

_LAZY = ("compose", "evaluate", "predict", "TrainResult")


class _CallableTrainPackage(_ModuleType):
    """``mtl_cli.train`` names both the training subpackage (``mtl_cli.train.trainer``, ...) and the
    API's :func:`mtl_cli.api.train`. One name holds one object, and the subpackage must stay what
    ``import mtl_cli.train.trainer`` finds, so the subpackage is made callable:
    ``mtl_cli.train(cfg)`` is ``mtl_cli.api.train(cfg)``."""

    def __call__(self, *args, **kwargs):
        from .api import train as train_function

        return train_function(*args, **kwargs)


_train_package.__class__ = _CallableTrainPackage


def __getattr__(name: str):
    if name in _LAZY:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'mtl_cli' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY, "train"})
